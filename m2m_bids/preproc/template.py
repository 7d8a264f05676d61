"""The offline MNI template: the ICBM152 2009a (symmetric, nonlinear) T1 and brain mask that
nilearn ships in its package data, so nothing is downloaded (containers run offline).

Loaded once per process and resampled with the pipeline's own resampler, so the template images
of every resolution and of the output grid (:mod:`m2m_bids.preproc.grid`) are exactly aligned.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from m2m_bids.preproc.grid import OutputGrid
from m2m_bids.preproc.resample import resample_series, resample_volume

#: The template file inside nilearn's package data (read directly: importing ``nilearn.datasets``
#: costs ~4 s per nipype worker process).
TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: nilearn's ``load_mni152_brain_mask`` threshold on the 0..1 template.
MASK_THRESHOLD = 0.2


def template_path() -> Path:
    """Path of the 1 mm template in the installed nilearn package (offline)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed: the MNI template ships with it")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / TEMPLATE_FILE


@lru_cache(maxsize=8)
def _template_1mm(kind: str) -> nib.Nifti1Image:
    img = nib.load(str(template_path()))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data /= data.max()
    if kind == "mask":
        data = (data > MASK_THRESHOLD).astype(np.float32)
    return nib.Nifti1Image(data, img.affine)


def template_image(kind: str, resolution_mm: float) -> nib.Nifti1Image:
    """The nilearn template (``"t1"`` brain-extracted T1, ``"mask"`` brain mask) at ``resolution_mm``.

    Resampled here (not by nilearn) so the affine is exactly diag(r) on the 1 mm origin.
    """
    img = _template_1mm(kind)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if resolution_mm == 1:
        return nib.Nifti1Image(data, img.affine)
    affine = img.affine.copy()
    affine[:3, :3] *= resolution_mm
    shape = tuple(int(np.floor((n - 1) / resolution_mm)) + 1 for n in data.shape)
    smoothed = ndimage.gaussian_filter(data, sigma=0.4 * resolution_mm)
    small = resample_series(smoothed, img.affine, OutputGrid(shape, affine, resolution_mm), np.eye(4)[None])
    if kind == "mask":
        small = (small > 0.5).astype(np.float32)
    return nib.Nifti1Image(small.astype(np.float32), affine)


def grid_template(kind: str, grid: OutputGrid) -> np.ndarray:
    """The template resampled onto ``grid`` (trilinear; the mask thresholded at 0.5)."""
    img = template_image(kind, min(grid.resolution_mm, 2.0))
    data = resample_volume(np.asarray(img.dataobj, dtype=np.float32), img.affine, grid, np.eye(4))
    return (data > 0.5).astype(np.float32) if kind == "mask" else data
