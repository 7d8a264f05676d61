"""The fixed output grid and the offline MNI template it lives on.

The model cuts volumes into patches, so every sample must have the same shape and that shape must
be divisible by the patch size. The grid is therefore the template's space at ``resolution_mm``,
cropped/padded to ``grid_shape`` voxels centred on the template brain's bounding box (64^3 at 3 mm
= 192 mm per side covers the whole ICBM152 brain: 145 x 181 x 155 mm). The ``tiny`` preset (16^3
at 6 mm = 96 mm) covers the centre of the brain only; it exists for fast tests.

The template is the ICBM152 2009a (symmetric, nonlinear) T1 and brain mask that nilearn ships in
its package data, so nothing is downloaded (containers run offline).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

#: The template nilearn ships; names the ``space-`` entity of derivatives.
TEMPLATE_NAME = "MNI152NLin2009aSym"
#: Centre of the template brain mask's bounding box in MNI mm (measured on nilearn's 1 mm mask).
BRAIN_CENTER_MM = (0.0, -17.0, 5.0)


@dataclass(frozen=True)
class OutputGrid:
    """Shape and RAS affine of the output volumes (voxel -> MNI mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    resolution_mm: float

    def to_dict(self) -> dict[str, object]:
        return {"shape": list(self.shape), "affine": self.affine.tolist(), "resolution_mm": self.resolution_mm}

    def world_coords(self) -> np.ndarray:
        """(X, Y, Z, 3) MNI mm coordinates of every voxel centre."""
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), axis=-1)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def make_grid(resolution_mm: float, shape: tuple[int, int, int] | list[int]) -> OutputGrid:
    """The output grid: isotropic ``resolution_mm`` voxels, ``shape`` centred on the brain."""
    shape = tuple(int(n) for n in shape)
    affine = np.diag([resolution_mm, resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = np.asarray(BRAIN_CENTER_MM) - (np.asarray(shape) - 1) / 2.0 * resolution_mm
    return OutputGrid(shape=shape, affine=affine, resolution_mm=float(resolution_mm))  # type: ignore[arg-type]


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
    from scipy import ndimage

    img = _template_1mm(kind)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if resolution_mm == 1:
        return nib.Nifti1Image(data, img.affine)
    from m2m_bids.preproc.resample import resample_series

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
    from m2m_bids.preproc.resample import resample_volume

    img = template_image(kind, min(grid.resolution_mm, 2.0))
    data = resample_volume(np.asarray(img.dataobj, dtype=np.float32), img.affine, grid, np.eye(4))
    return (data > 0.5).astype(np.float32) if kind == "mask" else data
