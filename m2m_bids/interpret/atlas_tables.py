"""Parcellate voxel maps with an atlas: mean score per region, rank, and the top-k regions flagged.

This is the paper's Fig. 3 in table form. The atlas is first resampled (nearest neighbour) onto
the model grid, so regions are the sets of model-grid voxels whose centre falls in them; small
regions can end up with few or no voxels at 3 mm, which the table says (``n_voxels``) instead of
hiding.
"""

from __future__ import annotations

import logging
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Columns of every atlas table, in order (documented in docs/outputs.md).
TABLE_COLUMNS = ["index", "name", "n_voxels", "mean", "max", "rank", "top"]


def atlas_on_grid(dseg: nib.Nifti1Image, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Integer labels of ``dseg`` on the grid ``(shape, affine)`` (nearest neighbour)."""
    from nilearn.image import resample_img

    data = np.asarray(dseg.dataobj)
    if data.shape[:3] == tuple(shape) and np.allclose(dseg.affine, affine, atol=1e-3):
        return np.rint(data).astype(np.int32)
    resampled = resample_img(dseg, target_affine=np.asarray(affine), target_shape=tuple(shape),
                             interpolation="nearest", force_resample=True, copy_header=True)
    return np.rint(np.asarray(resampled.dataobj)).astype(np.int32)


def parcellate(volume: np.ndarray, labels_grid: np.ndarray, labels: pd.DataFrame, top_k: int = 5) -> pd.DataFrame:
    """Mean and max of ``volume`` in each atlas region; ranked (1 = highest mean); top ``top_k`` flagged.

    ``labels`` is the atlas look-up table with columns ``index`` and ``name``. Regions without a
    voxel on this grid get ``n_voxels`` 0, no score and no rank (written as ``n/a``).
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.shape != labels_grid.shape:
        raise ValueError(f"map shape {volume.shape} differs from the atlas grid {labels_grid.shape}")
    flat_labels = labels_grid.ravel()
    flat = volume.ravel()
    max_index = int(max(flat_labels.max(initial=0), labels["index"].max() if len(labels) else 0))
    counts = np.bincount(flat_labels.clip(min=0), minlength=max_index + 1)
    sums = np.bincount(flat_labels.clip(min=0), weights=flat, minlength=max_index + 1)
    maxima = np.full(max_index + 1, np.nan)
    order = np.argsort(flat_labels, kind="stable")
    sorted_labels = flat_labels[order]
    bounds = np.searchsorted(sorted_labels, np.arange(max_index + 2))
    rows: list[dict[str, Any]] = []
    for index, name in zip(labels["index"].astype(int), labels["name"].astype(str)):
        if index <= 0:
            continue  # background
        n = int(counts[index]) if index < len(counts) else 0
        if n:
            maxima[index] = float(flat[order[bounds[index]:bounds[index + 1]]].max())
        rows.append({"index": index, "name": name, "n_voxels": n,
                     "mean": float(sums[index] / n) if n else np.nan,
                     "max": float(maxima[index]) if n else np.nan})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS[:5])
    table["rank"] = table["mean"].rank(ascending=False, method="first")
    table["rank"] = table["rank"].astype("Int64")
    table["top"] = (table["rank"] <= top_k).fillna(False).astype(bool)
    return table.sort_values(["rank", "index"], na_position="last").reset_index(drop=True)[TABLE_COLUMNS]


def top_regions(table: pd.DataFrame, k: int) -> list[dict[str, Any]]:
    """The ``k`` best-ranked regions as plain dicts (for JSON sidecars and reports)."""
    best = table.dropna(subset=["rank"]).nsmallest(k, "rank")
    return [{"rank": int(r["rank"]), "index": int(r["index"]), "name": str(r["name"]),
             "mean": round(float(r["mean"]), 6), "n_voxels": int(r["n_voxels"])} for _, r in best.iterrows()]


def roi_timeseries(bold: np.ndarray, labels_grid: np.ndarray, indices: list[int]) -> np.ndarray:
    """Mean BOLD signal per region: ``(T, len(indices))``; regions without voxels give NaN columns."""
    t = bold.shape[-1]
    flat = np.asarray(bold, dtype=np.float32).reshape(-1, t)
    lab = labels_grid.ravel()
    out = np.full((t, len(indices)), np.nan, dtype=np.float64)
    for j, index in enumerate(indices):
        sel = lab == index
        if sel.any():
            out[:, j] = flat[sel].mean(axis=0)
    return out
