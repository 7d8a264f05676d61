"""One-shot resampling onto the output grid with torch ``grid_sample``, plus smoothing and scaling.

Why torch: trilinear ``grid_sample`` over a 200-volume run is ~4x faster than nilearn on the CPU
(docs/dependency-probe.md section 5) and runs on a GPU unchanged. Each volume can carry its own
transform, so head-motion correction, BOLD->T1w and T1w->MNI are composed and the series is
interpolated once (every interpolation blurs). Boundary handling matches scipy/nilearn: ``border``
padding inside the field of view and exact zeros outside it (``zeros`` padding leaks edge values
up to a voxel outside).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from m2m_bids.preproc.grid import OutputGrid

#: Volumes interpolated per grid_sample call (bounds memory: ~3 MB of grid per 64^3 volume).
CHUNK = 16
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _normalise(vox: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel coords (..., 3) -> grid_sample coords (..., 3, reversed to z,y,x) and an inside-FOV mask."""
    size = torch.tensor(shape, dtype=vox.dtype)
    inside = ((vox > -0.5) & (vox < size - 0.5)).all(dim=-1)
    denom = torch.clamp(size - 1, min=1)
    norm = torch.where(size > 1, 2.0 * vox / denom - 1.0, torch.zeros_like(vox))
    return norm.flip(-1), inside


def source_voxels(grid: OutputGrid, src_affine: np.ndarray, transforms: np.ndarray,
                  coords: np.ndarray | None = None) -> torch.Tensor:
    """Source voxel coordinates (B, X, Y, Z, 3) of every grid voxel for each of B transforms.

    ``transforms`` (B, 4, 4) maps the grid's world mm (or ``coords``, world points already mapped
    by a nonlinear warp) to the source's world mm; ``src_affine`` maps source voxels to that world.
    """
    world = grid.world_coords() if coords is None else coords
    world_t = torch.from_numpy(np.ascontiguousarray(world, dtype=np.float32))
    mats = np.linalg.inv(src_affine)[None] @ np.asarray(transforms, dtype=np.float64)
    mats_t = torch.from_numpy(mats.astype(np.float32))
    return torch.einsum("bij,xyzj->bxyzi", mats_t[:, :3, :3], world_t) + mats_t[:, None, None, None, :3, 3]


def resample_series(data: np.ndarray, src_affine: np.ndarray, grid: OutputGrid, transforms: np.ndarray,
                    coords: np.ndarray | None = None, order: int = 1) -> np.ndarray:
    """Resample a 3D (X,Y,Z) or 4D (X,Y,Z,T) image onto ``grid``; returns float32 on the grid.

    ``transforms`` is one (4,4) for every volume or (T,4,4) for one per volume (motion).
    ``order`` 1 is trilinear, 0 nearest (masks).
    """
    vol = np.asarray(data, dtype=np.float32)
    is_3d = vol.ndim == 3
    if is_3d:
        vol = vol[..., None]
    n_frames = vol.shape[-1]
    mats = np.asarray(transforms, dtype=np.float64).reshape(-1, 4, 4)
    out = np.zeros(grid.shape + (n_frames,), dtype=np.float32)
    mode = "bilinear" if order == 1 else "nearest"
    src = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, -1, 0)))  # (T, X, Y, Z)
    if len(mats) == 1:  # one transform: all frames as channels of one sample
        vox = source_voxels(grid, src_affine, mats, coords)
        norm, inside = _normalise(vox, vol.shape[:3])
        for start in range(0, n_frames, 4 * CHUNK):
            chunk = src[start:start + 4 * CHUNK][None]
            res = F.grid_sample(chunk, norm, mode=mode, padding_mode="border", align_corners=True)[0]
            res = res * inside[0]
            out[..., start:start + chunk.shape[1]] = np.moveaxis(res.numpy(), 0, -1)
    else:
        if len(mats) != n_frames:
            raise ValueError(f"{len(mats)} transforms for {n_frames} volumes")
        for start in range(0, n_frames, CHUNK):
            stop = min(start + CHUNK, n_frames)
            vox = source_voxels(grid, src_affine, mats[start:stop], coords)
            norm, inside = _normalise(vox, vol.shape[:3])
            chunk = src[start:stop, None]  # (B, 1, X, Y, Z)
            res = F.grid_sample(chunk, norm, mode=mode, padding_mode="border", align_corners=True)[:, 0]
            out[..., start:stop] = np.moveaxis((res * inside).numpy(), 0, -1)
    return out[..., 0] if is_3d else out


def resample_volume(data: np.ndarray, src_affine: np.ndarray, grid: OutputGrid, transform: np.ndarray,
                    order: int = 1) -> np.ndarray:
    """3D convenience wrapper of :func:`resample_series` with one transform."""
    return resample_series(data, src_affine, grid, np.asarray(transform)[None], order=order)


def smooth(data: np.ndarray, fwhm_mm: float, voxel_mm: float) -> np.ndarray:
    """Isotropic Gaussian smoothing of each volume (the paper: 6 mm FWHM); 0 disables it."""
    if fwhm_mm <= 0:
        return np.asarray(data, dtype=np.float32)
    sigma = fwhm_mm * FWHM_TO_SIGMA / voxel_mm
    sigmas = (sigma, sigma, sigma) + (0.0,) * (np.ndim(data) - 3)
    return ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), sigmas, mode="constant", truncate=3.0)


def standardise_timeseries(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-voxel z-score over time inside ``mask`` (outside: 0); flat voxels stay 0.

    Removes the arbitrary scanner scale so sessions and sites are comparable, as the model expects.
    """
    out = np.zeros_like(data, dtype=np.float32)
    inside = mask > 0
    series = data[inside].astype(np.float64)
    mean = series.mean(axis=-1, keepdims=True)
    std = series.std(axis=-1, keepdims=True)
    good = std[:, 0] > 1e-6 * max(float(np.abs(mean).max(initial=0.0)), 1e-12)
    z = np.zeros_like(series)
    z[good] = (series[good] - mean[good]) / std[good]
    out[inside] = z.astype(np.float32)
    return out


def normalise_intensity(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Robust z-score of a T1w inside ``mask`` (median / IQR-based scale, clipped at +-5): outside 0."""
    inside = mask > 0
    values = data[inside]
    out = np.zeros_like(data, dtype=np.float32)
    if values.size == 0:
        return out
    median = float(np.median(values))
    q25, q75 = np.percentile(values, [25, 75])
    scale = float(q75 - q25) / 1.349 or float(values.std()) or 1.0
    out[inside] = np.clip((values - median) / scale, -5.0, 5.0)
    return out
