"""The brain mask a participant's explanation maps are restricted to, on the model grid.

A map outside the brain explains nothing about the brain (it can only reflect field of view or
skull stripping), and a token of the last encoder stage may straddle the brain edge; so every map
is set to zero outside the mask, scaled relative to uniform inside it, and parcellated over the
in-mask voxels only. Which mask:

* T1w-derived maps (sMRI, PET): the cache entry's T1w brain mask (``brain_mask``) when the entry
  holds one, else the template's brain mask resampled onto the grid;
* fMRI maps: the run's brain mask (``mask``: brain x BOLD coverage, what the model saw), else
  the template's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from m2m_bids.interpret.maps import voxel_size
from m2m_bids.preproc.grid import OutputGrid
from m2m_bids.preproc.template import grid_template

log = logging.getLogger(__name__)

#: Cache tensor holding the T1w brain mask on the model grid (written by preprocessing when available).
T1W_MASK = "brain_mask"
#: Cache tensor holding the run's brain mask (always written).
RUN_MASK = "mask"


def _load(entry: Any, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        mask = np.asarray(entry.load(name)) > 0
    except (KeyError, FileNotFoundError, ValueError):
        return None
    return mask if mask.shape == tuple(shape) and mask.any() else None


def template_mask(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """The MNI template brain mask (the one preprocessing registers to) on the grid ``(shape, affine)``."""
    grid = OutputGrid(tuple(int(n) for n in shape), np.asarray(affine, dtype=float), voxel_size(affine))
    return grid_template("mask", grid) > 0


def brain_mask(entry: Any, modality: str, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Boolean ``shape`` mask for maps of ``modality`` (``smri``, ``pet`` or ``fmri``) of this cache entry."""
    names = (RUN_MASK,) if modality == "fmri" else (T1W_MASK,)
    for name in names:
        mask = _load(entry, name, shape)
        if mask is not None:
            return mask
    mask = template_mask(shape, affine)
    if not mask.any():
        log.warning("the template brain mask does not overlap the model grid %s; maps are not masked", shape)
        return np.ones(shape, dtype=bool)
    return mask
