"""The fixed output grid in the offline MNI template's space.

The model cuts volumes into patches, so every sample must have the same shape and that shape must
be divisible by the patch size. The grid is therefore the template's space at ``resolution_mm``,
cropped/padded to ``grid_shape`` voxels centred on the template brain's bounding box (64^3 at 3 mm
= 192 mm per side covers the whole ICBM152 brain: 145 x 181 x 155 mm). The ``tiny`` preset (16^3
at 6 mm = 96 mm) covers the centre of the brain only; it exists for fast tests.

The template images themselves (loaded and resampled) are :mod:`m2m_bids.preproc.template`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
