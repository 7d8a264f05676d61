"""Reading raw images robustly: native-endian float32, RAS orientation, clear errors.

Real scanner exports are awkward (see the real test scans in ../shared/data/bids-real): big-endian or uint8 data,
Philips scaling, sagittal EPI, 3D files where 4D is expected. Everything downstream assumes
float32, native byte order and a RAS+ voxel axis order, so every image passes through here once.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from m2m_bids.exitcodes import AppError, ExitCode


def load_ras(path: str | Path, ndim: int | None = None) -> nib.Nifti1Image:
    """Load ``path`` as a float32, native-endian, RAS-reoriented image.

    ``ndim`` (3 or 4) is checked: a trailing singleton 4th axis of a T1w is dropped; a 3D BOLD is
    an error naming the file.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel raises many types for unreadable files
        raise AppError(f"cannot read the image: {err}", ExitCode.DATA_ERROR, path=str(path),
                       hint="check that the file is a complete, readable NIfTI (re-export or re-download it)") from err
    if ndim == 3 and data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if ndim is not None and data.ndim != ndim:
        raise AppError(f"expected a {ndim}D image, found shape {data.shape}", ExitCode.DATA_ERROR, path=str(path),
                       hint="a T1w must be 3D and a BOLD run 4D (x, y, z, time)")
    if not np.all(np.isfinite(data)):
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise AppError("the image has an invalid (singular or non-finite) affine", ExitCode.DATA_ERROR,
                       path=str(path), hint="fix the sform/qform of the file (e.g. with nibabel or fslreorient2std)")
    out = nib.Nifti1Image(data.astype(np.float32, copy=False), affine)
    out = nib.as_closest_canonical(out)
    data = np.ascontiguousarray(np.asarray(out.dataobj, dtype=np.float32))
    return nib.Nifti1Image(data, out.affine)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm from an affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def canonical_axis(path: str | Path, axis: int) -> tuple[int, int]:
    """Where voxel axis ``axis`` of the file on disk ends up after RAS reorientation, and its sign.

    Slice timing refers to the stored slice axis (``SliceEncodingDirection``); after reorienting
    that axis may move (sagittal EPI) or flip.
    """
    img = nib.load(str(path))
    ornt = nib.orientations.io_orientation(img.affine)
    return int(ornt[axis, 0]), int(ornt[axis, 1])


def save(data: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type = np.float32) -> Path:
    """Write a NIfTI (used for node outputs inside the nipype work dir)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return Path(path)
