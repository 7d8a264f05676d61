"""Token-grid attention -> voxel maps on the model's MNI grid, and the NIfTI images that hold them.

The models report spatial co-attention as mass on their last-stage token grid (e.g. 4x4x4 for a
64^3 image with patch 4 and three stages): each token covers a block of voxels. To overlay that on
a brain the map is upsampled to the voxel grid the cache tensors live on (the grid affine is in the
cache entry's metadata), so it lines up voxel for voxel with the preprocessed T1w/BOLD.

Scale: every map written here is *relative to uniform*: 1.0 is the score every voxel would get if
the model spread its attention evenly, 2.0 twice that. Attention masses (which sum to 1 and
shrink as grids grow) and saliencies (arbitrary units) become comparable across participants,
grids and methods this way.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

log = logging.getLogger(__name__)


def upsample_tokens(tokens: np.ndarray, grid_shape: tuple[int, int, int], mode: str = "trilinear") -> np.ndarray:
    """Upsample a ``(h, w, d)`` token map to ``grid_shape`` voxels, relative to uniform.

    ``mode="nearest"`` keeps the token blocks (what the model actually resolves);
    ``"trilinear"`` (default) gives a smoother overlay. Both are rescaled so the mean over the grid
    is 1 (a token map that sums to 1 becomes ``h*w*d * mass`` per token block).
    """
    tokens = np.asarray(tokens, dtype=np.float32)
    if tokens.ndim != 3:
        raise ValueError(f"token map must be 3-D (h, w, d), got shape {tokens.shape}")
    if any(g % t for g, t in zip(grid_shape, tokens.shape)):
        log.warning("grid %s is not a multiple of the token grid %s; the map is stretched",
                    tuple(grid_shape), tokens.shape)
    x = torch.from_numpy(tokens)[None, None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    up = F.interpolate(x, size=tuple(int(s) for s in grid_shape), mode=mode, **kwargs)[0, 0].numpy()
    return relative_to_uniform(up)


def relative_to_uniform(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Divide by the mean (inside ``mask`` if given) so that 1 means "average"; zeros stay zero."""
    values = np.asarray(values, dtype=np.float32)
    region = values[mask.astype(bool)] if mask is not None else values
    mean = float(np.mean(region)) if region.size else 0.0
    if not np.isfinite(mean) or mean <= 0:
        return np.zeros_like(values)
    return values / mean


#: Smoothing of gradient maps: the preprocessing's 6 mm FWHM (no finer detail exists in the input),
#: and at least two voxels so that coarse grids are smoothed too.
SALIENCY_FWHM_MM = 6.0


def saliency_fwhm(voxel_mm: float) -> float:
    """FWHM (mm) used to smooth a gradient map on a grid of ``voxel_mm`` voxels."""
    return max(SALIENCY_FWHM_MM, 2.0 * voxel_mm)


def smooth(volume: np.ndarray, fwhm_mm: float, voxel_mm: float) -> np.ndarray:
    """Gaussian smoothing with a FWHM in millimetres (gradient maps are speckled voxel to voxel)."""
    if fwhm_mm <= 0:
        return np.asarray(volume, dtype=np.float32)
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / voxel_mm
    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma=sigma, mode="constant")


def voxel_size(affine: np.ndarray) -> float:
    """Mean voxel edge length (mm) of a grid affine."""
    return float(np.mean(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))))


def to_nifti(volume: np.ndarray, affine: np.ndarray, description: str = "") -> nib.Nifti1Image:
    """A float32 NIfTI on the model grid, with sform/qform set to the MNI grid affine (code 4)."""
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_sform(np.asarray(affine, dtype=float), code=4)
    img.header.set_qform(np.asarray(affine, dtype=float), code=4)
    if description:
        img.header["descrip"] = description[:79].encode("ascii", "replace")
    return img
