"""Atlases for the models that read brain regions: loaded and put on the model grid here, not in the model.

Models import torch alone and read no files, so a model that reads atlas regions
(:func:`m2m_bids.models.reads_parcellation`) gets the configured atlas (``ModelConfig.atlas``) as a
:class:`~m2m_bids.models.parcellation.Parcellation` on its grid (``img_size`` + ``grid_affine``).
:func:`build_model` is ``create_model`` with that step done: training, ``apply`` and the
benchmarks build every network through it, so a model card rebuilds the same regions.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import torch
from torch import nn

from m2m_bids.atlases import load_atlas
from m2m_bids.models import ModelConfig, Parcellation, create_config, create_model, reads_parcellation


def parcellation(cfg: ModelConfig) -> Parcellation:
    """``cfg.atlas`` resampled (nearest neighbour) onto the model grid (``cfg.img_size`` + ``cfg.grid_affine``)."""
    if len(cfg.grid_affine) != 16:
        raise ValueError(f"{cfg.arch} needs grid_affine: the 4x4 voxel->MNI affine of the cache grid as 16 "
                         f"row-major floats (got {len(cfg.grid_affine)} values); the group run fills it "
                         "from the cache entries' affine, direct model builds must pass it")
    affine = np.asarray(cfg.grid_affine, dtype=float).reshape(4, 4)
    atlas = load_atlas(cfg.atlas, target=nib.Nifti1Image(np.zeros(cfg.img_size, np.uint8), affine))
    grid = np.asarray(atlas.image.dataobj).astype(np.int64)
    return Parcellation(labels=torch.from_numpy(grid), indices=tuple(int(i) for i in atlas.labels["index"]),
                        names=tuple(str(n) for n in atlas.labels["name"]))


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """``create_model(arch, **kwargs)``, with the atlas on the model grid for models that read regions."""
    if not reads_parcellation(arch):
        return create_model(arch, **kwargs)
    return create_model(arch, parcellation=parcellation(create_config(arch, **kwargs)), **kwargs)
