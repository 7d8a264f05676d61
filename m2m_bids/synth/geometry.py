"""Rigid transforms, oblique acquisition grids and sampling for the synthetic scanner.

Conventions (recorded in ``ground_truth.json`` so preprocessing can be scored):

* scanner space: world millimetres of the raw NIfTI headers (``affine`` maps voxel -> scanner).
* MNI space: millimetres of the nilearn ICBM152 2009a template.
* ``head_pose`` (4x4) maps scanner mm -> MNI mm for the head at rest; a participant's anatomy is
  the template seen through this rigid transform.
* BOLD motion of volume ``k`` is a rigid matrix ``M_k`` (scanner mm -> scanner mm of the reference
  head position): a voxel at scanner point ``s`` shows the anatomy at ``head_pose @ M_k @ s``.
  ``M_k`` is built from six parameters ``(tx, ty, tz [mm], rx, ry, rz [rad])`` as
  ``T(c + t) R_z R_y R_x T(-c)`` with ``c`` the rotation centre (recorded per run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

AXIS_FLIPS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """3x3 rotation ``R_z @ R_y @ R_x`` (radians, right-handed about scanner axes)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def rigid_matrix(params: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """4x4 rigid matrix from ``(tx, ty, tz, rx, ry, rz)`` rotating about ``centre`` (mm)."""
    centre = np.zeros(3) if centre is None else np.asarray(centre, dtype=float)
    mat = np.eye(4)
    mat[:3, :3] = rotation_matrix(*params[3:6])
    mat[:3, 3] = centre + np.asarray(params[:3], dtype=float) - mat[:3, :3] @ centre
    return mat


def motion_matrices(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Stack of 4x4 motion matrices ``M_k`` for an ``(n_vols, 6)`` parameter array."""
    return np.stack([rigid_matrix(p, centre) for p in np.asarray(params)])


def oblique_affine(shape: tuple[int, int, int], zooms: tuple[float, float, float], axcodes: str,
                   tilt: np.ndarray, centre_mm: np.ndarray) -> np.ndarray:
    """Voxel -> scanner affine of a grid with orientation ``axcodes``, rotated by ``tilt`` (rad).

    The grid's centre lands on ``centre_mm`` so the field of view covers the head.
    """
    base = np.zeros((3, 3))
    for vox_axis, code in enumerate(axcodes):
        world_axis, sign = AXIS_FLIPS[code]
        base[world_axis, vox_axis] = sign * zooms[vox_axis]
    linear = rotation_matrix(*tilt) @ base
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = np.asarray(centre_mm) - linear @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def voxel_coords(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous voxel coordinates ``(4, N)`` of a 3D grid in C order."""
    grid = np.indices(shape[:3], dtype=np.float32).reshape(3, -1)
    return np.vstack([grid, np.ones((1, grid.shape[1]), dtype=np.float32)])


def sample(volume: np.ndarray, src_vox: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at fractional voxel coordinates ``(3, N)`` (zero outside)."""
    return ndimage.map_coordinates(volume, src_vox, order=order, mode="constant", cval=cval,
                                   prefilter=False)


def apply(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to homogeneous points ``(4, N)`` and return ``(3, N)`` float32."""
    return (mat[:3].astype(np.float32) @ pts).astype(np.float32, copy=False)


def smooth_bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Low-order polynomial multiplicative field ~ 1 +/- ``strength``: a coil-like shading."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    coefs = rng.normal(0.0, strength / 2.0, size=9)
    field = (coefs[0] * x + coefs[1] * y + coefs[2] * z + coefs[3] * x * y + coefs[4] * y * z
             + coefs[5] * x * z + coefs[6] * x * x + coefs[7] * y * y + coefs[8] * z * z)
    return (1.0 + np.clip(field, -0.45, 0.45)).astype(np.float32)


def resample_to_resolution(data: np.ndarray, affine: np.ndarray, res: float,
                           order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned resampling of a 1 mm template onto a ``res`` mm grid with the same origin."""
    zoom = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factor = res / zoom
    shape = tuple(int(np.floor((s - 1) / f)) + 1 for s, f in zip(data.shape, factor))
    if np.allclose(factor, 1.0):
        return data.astype(np.float32), affine.copy()
    if order > 0 and np.allclose(factor, np.round(factor)) and np.all(factor == factor[0]):
        return _block_mean(data, affine, int(round(factor[0])))
    src = data.astype(np.float32)
    if order > 0:
        src = ndimage.gaussian_filter(src, sigma=np.maximum((factor - 1) / 2.0, 0))
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) * factor[:, None].astype(np.float32)
    out = sample(src, grid, order=order).reshape(shape)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * factor[None, :]
    return out.astype(np.float32), new_affine


def _block_mean(data: np.ndarray, affine: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer-factor downsampling by block averaging (fast, and an honest partial-volume model)."""
    shape = tuple(n // f for n in data.shape)
    crop = data[: shape[0] * f, : shape[1] * f, : shape[2] * f].astype(np.float32)
    out = crop.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * f
    new_affine[:3, 3] = affine[:3, :3] @ np.full(3, (f - 1) / 2.0) + affine[:3, 3]
    return out, new_affine


@dataclass(frozen=True)
class SmoothWarp:
    """A participant's own anatomy: a smooth, low-frequency displacement of template space.

    ``d_c(m) = sum_k coefficients[c, k] * prod_axis cos(pi * f_k,axis * (m - lo) / length)`` with
    frequencies 1 or 2 per axis (8 basis functions), so shapes differ between participants by a
    few millimetres, as they do after affine but before nonlinear normalisation.
    """

    coefficients: np.ndarray  # (3, 8) mm
    lo: tuple[float, float, float] = (-98.0, -134.0, -72.0)
    length: tuple[float, float, float] = (197.0, 233.0, 189.0)

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude_mm: float) -> SmoothWarp:
        """Coefficients with an RMS displacement of about ``amplitude_mm``."""
        return cls(coefficients=rng.normal(0.0, amplitude_mm / np.sqrt(8.0) * 3.0, (3, 8)))

    def displacement(self, mni: np.ndarray) -> np.ndarray:
        """Displacement (3, N) in mm at MNI points (3, N)."""
        phase = (mni - np.asarray(self.lo, np.float32)[:, None]) / np.asarray(self.length, np.float32)[:, None]
        waves = [[np.cos(np.pi * f * phase[axis]) for f in (1, 2)] for axis in range(3)]
        out = np.zeros_like(mni)
        for k, (fx, fy, fz) in enumerate(itertools.product((0, 1), repeat=3)):
            basis = waves[0][fx] * waves[1][fy] * waves[2][fz]
            out += self.coefficients[:, k, None].astype(np.float32) * basis
        return out
