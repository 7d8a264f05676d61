"""Connectome + regional T1w features of one cached run, on an atlas resampled to the model grid.

Why these features: the classical fMRI/sMRI baseline of the AD literature (e.g. Khazaee et al.
2015; Hojjati et al. 2019, cited by Kujur & Monfared 2026) is a region-by-region functional
connectivity matrix plus regional grey-matter measures, fed to a linear classifier. Here:

- ROI time series: mean BOLD over the in-mask voxels of every atlas region present on the grid;
- connectivity: Pearson correlation between ROI time series, Fisher-z transformed, upper triangle;
- anatomy: the mean (normalised) T1w intensity inside each region — the cache holds the T1w, not a
  GM segmentation, so this is the regional intensity that atrophy lowers in the synthetic data and
  that partial-volume grey-matter loss lowers in real T1w images.

A participant with several runs/sessions gets the mean of its runs' features (correlations are
averaged in Fisher-z space). The atlas is the bundled AAL2 (``m2m_bids.atlases.load_atlas``) resampled
with nearest neighbour to the cache's grid, identified by the ``affine`` in the entry's metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import sparse

from m2m_bids.atlases import load_atlas
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.model_inputs.windows import EntryLike, participant_of

log = logging.getLogger(__name__)

#: Regions with fewer in-mask voxels than this on the grid are left out (their mean is mostly noise).
MIN_VOXELS = 2
#: Correlations are clipped before arctanh so that a perfect correlation stays finite.
_R_CLIP = 0.999999


@dataclass(frozen=True)
class Parcellation:
    """Atlas labels on the model grid (regions with too few voxels removed) and their names."""

    atlas: str
    labels: np.ndarray  # (X, Y, Z) int32, 0 = background
    affine: np.ndarray  # (4, 4) voxel -> MNI mm of the grid
    indices: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def n_regions(self) -> int:
        return len(self.indices)

    def feature_names(self) -> list[str]:
        """Column names in the order of :func:`run_features`: edges ``fc_A__B`` then ``t1w_A``."""
        n = self.n_regions
        iu = np.triu_indices(n, k=1)
        edges = [f"fc_{self.names[i]}__{self.names[j]}" for i, j in zip(*iu)]
        return edges + [f"t1w_{name}" for name in self.names]


def grid_affine(entry: EntryLike) -> np.ndarray:
    """The voxel -> MNI affine of an entry's grid (its recorded geometry, written by preprocessing)."""
    affine = entry.meta.affine
    if affine is None:
        raise AppError(f"cache entry {entry.key} records no grid affine, so an atlas cannot be placed on it",
                       ExitCode.DATA_ERROR, hint="re-run the participant level with this version of m2m-bids "
                       "(its cache entries record the grid geometry)")
    return affine


def _atlas_on_grid(atlas: str, shape: tuple[int, ...], affine: np.ndarray) -> tuple[str, np.ndarray, Any]:
    """(atlas name, integer labels on the grid, look-up table index -> name) of a bundled atlas."""
    loaded = load_atlas(atlas, target=nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), affine))
    return loaded.name, np.asarray(loaded.image.dataobj).astype(np.int32), loaded.labels.set_index("index")["name"]


def make_parcellation(entry: EntryLike, atlas: str = "aal", min_voxels: int = MIN_VOXELS) -> Parcellation:
    """Resample ``atlas`` onto the grid of ``entry`` and keep the regions with enough in-mask voxels."""
    shape = tuple(int(s) for s in entry.load("smri").shape[:3])
    name, labels, table = _atlas_on_grid(atlas, shape, grid_affine(entry))
    mask = np.asarray(entry.load("mask")) > 0
    counts = np.bincount(labels[mask].ravel(), minlength=int(labels.max()) + 1)
    keep = [int(i) for i in table.index if i < len(counts) and counts[i] >= min_voxels]
    if len(keep) < 2:
        raise AppError(f"only {len(keep)} region(s) of atlas {atlas!r} fall inside the brain mask of the grid",
                       ExitCode.DATA_ERROR, hint="use a larger grid (preproc grid_shape/resolution_mm)")
    log.info("atlas %s: %d of %d regions on the %s grid", atlas, len(keep), len(table), shape)
    return Parcellation(atlas=name, labels=labels, affine=grid_affine(entry), indices=tuple(keep),
                        names=tuple(str(table[i]) for i in keep))


def parcellation_from_card(features: dict[str, Any], shape: tuple[int, ...], affine: np.ndarray) -> Parcellation:
    """The training parcellation again, from :func:`describe`'s record and the model's grid.

    The regions are the recorded ones (not those that happen to fall in a new participant's
    mask), so a new participant's features line up with the coefficients one for one.
    """
    name, labels, _ = _atlas_on_grid(str(features["atlas"]), shape, np.asarray(affine, float))
    return Parcellation(atlas=name, labels=labels, affine=np.asarray(affine, float),
                        indices=tuple(int(i) for i in features["region_indices"]),
                        names=tuple(str(n) for n in features["regions"]))


def _region_operator(parc: Parcellation, mask: np.ndarray) -> sparse.csr_matrix:
    """(R, V) sparse averaging matrix over the in-mask voxels of each kept region."""
    flat = np.where(mask.ravel(), parc.labels.ravel(), 0)
    lookup = np.full(int(parc.labels.max()) + 1, -1, dtype=np.int64)
    lookup[list(parc.indices)] = np.arange(parc.n_regions)
    rows = lookup[flat]
    cols = np.nonzero(rows >= 0)[0]
    rows = rows[cols]
    counts = np.bincount(rows, minlength=parc.n_regions).astype(float)
    weights = 1.0 / np.maximum(counts[rows], 1.0)
    return sparse.csr_matrix((weights, (rows, cols)), shape=(parc.n_regions, flat.size))


def roi_timeseries(fmri: np.ndarray, operator: sparse.csr_matrix, chunk: int = 64) -> np.ndarray:
    """(T, R) mean BOLD per region; frames are read in chunks so a memory-mapped run stays small."""
    n_frames = fmri.shape[-1]
    out = np.empty((n_frames, operator.shape[0]), dtype=np.float64)
    for start in range(0, n_frames, chunk):
        block = np.asarray(fmri[..., start:start + chunk], dtype=np.float32).reshape(-1, min(chunk, n_frames - start))
        out[start:start + block.shape[1]] = (operator @ block).T
    return out


def fisher_z_connectome(ts: np.ndarray) -> np.ndarray:
    """Upper triangle (k=1) of the Fisher-z Pearson correlation matrix of ``ts`` (T, R).

    A region with a flat time series (zero variance) has no defined correlation: its edges are 0.
    """
    centred = ts - ts.mean(axis=0)
    norm = np.sqrt((centred ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (centred.T @ centred) / np.outer(norm, norm)
    r = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
    iu = np.triu_indices(ts.shape[1], k=1)
    return np.arctanh(np.clip(r[iu], -_R_CLIP, _R_CLIP))


def run_features(entry: EntryLike, parc: Parcellation) -> np.ndarray:
    """Connectome edges (Fisher z) followed by regional mean T1w of one cached run."""
    smri = np.asarray(entry.load("smri"), dtype=np.float32)
    if smri.shape != parc.labels.shape or not np.allclose(grid_affine(entry), parc.affine, atol=1e-3):
        raise AppError(f"cache entry {entry.key} has grid {smri.shape}, the atlas was placed on "
                       f"{parc.labels.shape} (or the grids' affines differ)", ExitCode.DATA_ERROR,
                       hint="all training samples must be preprocessed on the same grid")
    mask = np.asarray(entry.load("mask")) > 0
    operator = _region_operator(parc, mask)
    edges = fisher_z_connectome(roi_timeseries(entry.load("fmri"), operator))
    t1w = operator @ smri.ravel()
    return np.concatenate([edges, t1w]).astype(np.float64)


def participant_features(entries: list[EntryLike], parc: Parcellation) -> dict[str, np.ndarray]:
    """One feature vector per participant: the mean over its runs (edges are already Fisher z)."""
    per: dict[str, list[np.ndarray]] = {}
    for entry in entries:
        per.setdefault(participant_of(entry), []).append(run_features(entry, parc))
    return {p: np.mean(rows, axis=0) for p, rows in per.items()}


def describe(parc: Parcellation) -> dict[str, Any]:
    """What a model card records about the features (so they can be rebuilt and checked)."""
    return {"atlas": parc.atlas, "regions": list(parc.names), "region_indices": list(parc.indices),
            "n_edges": parc.n_regions * (parc.n_regions - 1) // 2, "min_voxels": MIN_VOXELS,
            "connectivity": "pearson, fisher-z, upper triangle", "anatomy": "regional mean T1w"}
