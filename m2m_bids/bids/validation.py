"""Checks of one participant's input files, done before any preprocessing starts.

Each check names the file, the problem and the fix, and returns :class:`ParticipantProblem`
records instead of raising: one participant's broken scan must not stop the others (the runner
reports every problem and exits non-zero at the end).

The voxel scan streams the (decompressed) data once in chunks, so a truncated ``.nii.gz`` or
NaN/inf voxels are caught here, with the file name, rather than deep inside a nipype node.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from m2m_bids.config import Preproc
from m2m_bids.exitcodes import AppError, ExitCode

log = logging.getLogger(__name__)

#: Bytes decompressed per step of the voxel scan (bounded memory whatever the image size).
SCAN_CHUNK_BYTES = 32 * 2**20

#: Image size limit (GB as float32) when no configuration gives one: ``preproc.max_image_gb``'s default.
DEFAULT_MAX_IMAGE_GB: float = Preproc.model_fields["max_image_gb"].default


@dataclass(frozen=True)
class ParticipantProblem:
    """Why one participant cannot be processed: the file, the problem, the fix and an exit code."""

    label: str
    message: str
    path: str | None = None
    hint: str | None = None
    code: ExitCode = ExitCode.DATA_ERROR

    def to_error(self) -> AppError:
        """The same problem as an :class:`AppError` (what the runner logs and exits with)."""
        return AppError(f"sub-{self.label}: {self.message}", self.code, path=self.path, hint=self.hint)


@dataclass(frozen=True)
class ImageInfo:
    """What the checks learned about a readable image (shape and voxel sizes, from the header)."""

    shape: tuple[int, ...]
    zooms: tuple[float, ...]


def load_image(path: Path, label: str, *, scan_voxels: bool = True, max_gb: float = DEFAULT_MAX_IMAGE_GB
               ) -> tuple[ImageInfo | None, list[ParticipantProblem]]:
    """Open ``path`` as NIfTI and (optionally) stream its voxels; return its info or the problems.

    Catches zero-byte files (interrupted copies, unfetched git-annex/DataLad content), files
    nibabel cannot read, images larger than ``max_gb`` as float32 (judged from the header, before
    any voxel is read: a 2.6 MB gzip can hold a 1024^3 image), truncated data, and NaN/inf voxels
    in floating-point images.
    """
    problem = _file_problem(path, label)
    if problem is not None:
        return None, [problem]
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib.error, ValueError ...
        return None, [ParticipantProblem(
            label, f"cannot read the image: {err}", str(path),
            "re-export the file from the scanner data (dcm2niix) or re-download it", ExitCode.DATA_ERROR)]
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return None, [ParticipantProblem(label, f"not a NIfTI image ({type(img).__name__})", str(path),
                                         "convert it to NIfTI (.nii.gz)", ExitCode.DATA_ERROR)]
    info = ImageInfo(tuple(int(n) for n in img.shape), tuple(float(z) for z in img.header.get_zooms()))
    if any(n == 0 for n in info.shape):
        return None, [ParticipantProblem(label, f"the image has an empty dimension (shape {info.shape})",
                                         str(path), "re-export the image", ExitCode.DATA_ERROR)]
    size_gb = 4.0 * float(np.prod(info.shape, dtype=np.float64)) / 1e9
    if size_gb > max_gb:
        return None, [ParticipantProblem(
            label, f"the image is too large to process: shape {info.shape} needs {size_gb:.1f} GB of memory "
                   f"as float32, more than the limit of {max_gb:g} GB", str(path),
            f"check the header (a wrong shape?); if the image is genuine, raise max_image_gb under [preproc] "
            f"in a --config-file (to at least {size_gb:.1f}) and give the job that much memory",
            ExitCode.DATA_ERROR)]
    if scan_voxels:
        message = scan_voxel_data(path, img.header)
        if message is not None:
            hint = ("re-export or re-download the file" if "truncated" in message or "decompress" in message
                    else "fix or mask the non-finite voxels (e.g. replace them by 0), or exclude the file "
                         "with --bids-filter-file / --exclude-participant-label")
            return None, [ParticipantProblem(label, message, str(path), hint, ExitCode.DATA_ERROR)]
    return info, []


def _file_problem(path: Path, label: str) -> ParticipantProblem | None:
    """Missing, dangling-symlink, unreadable or zero-byte files, before nibabel sees them."""
    if not path.exists():
        how = "a dangling symbolic link (DataLad/git-annex content not fetched?)" if path.is_symlink() \
            else "missing"
        return ParticipantProblem(label, f"the file is {how}", str(path),
                                  "fetch the content (`datalad get`) or restore the file", ExitCode.NO_INPUT)
    if not os.access(path, os.R_OK):
        return ParticipantProblem(label, "the file is not readable (permission denied)", str(path),
                                  "give the user running the app read permission", ExitCode.NO_INPUT)
    if path.stat().st_size == 0:
        return ParticipantProblem(label, "the file is empty (0 bytes)", str(path),
                                  "the copy or download was interrupted, or git-annex content was not fetched; "
                                  "restore the file", ExitCode.DATA_ERROR)
    return None


def scan_voxel_data(path: Path, header: Any) -> str | None:
    """Stream the voxel data once; return a description of what is wrong, or ``None``.

    Integer images cannot hold NaN, so for them only the length is checked (a truncated
    ``.nii.gz`` otherwise fails much later, inside a workflow node). Floating-point images are
    checked for NaN/inf chunk by chunk. An infinite ``scl_slope``/``scl_inter`` is reported too.
    """
    for field in ("scl_slope", "scl_inter"):
        value = float(header[field]) if field in header else 0.0
        if math.isinf(value):
            return f"the NIfTI header's {field} is infinite, so every voxel would be non-finite"
    dtype = np.dtype(header.get_data_dtype())
    shape = header.get_data_shape()
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    check_finite = dtype.kind in "fc"
    chunk = max(dtype.itemsize, SCAN_CHUNK_BYTES - SCAN_CHUNK_BYTES % dtype.itemsize)
    read = nonfinite = 0
    try:
        with ImageOpener(str(path), "rb") as handle:
            handle.seek(int(header.get_data_offset()))
            while read < expected:
                block = handle.read(min(chunk, expected - read))
                if not block:
                    break
                usable = len(block) - len(block) % dtype.itemsize
                if check_finite and usable:
                    values = np.frombuffer(block[:usable], dtype=dtype)
                    nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                read += len(block)
    except (OSError, EOFError, zlib.error) as err:
        return f"cannot decompress or read the voxel data: {err}"
    if read < expected:
        return f"the file is truncated: {read} of {expected} bytes of voxel data are present"
    if nonfinite:
        total = expected // dtype.itemsize
        return f"{nonfinite} of {total} voxels ({100 * nonfinite / total:.2g}%) are NaN or infinite"
    return None


def check_t1w(path: Path, label: str, *, scan_voxels: bool = True, max_gb: float = DEFAULT_MAX_IMAGE_GB
              ) -> list[ParticipantProblem]:
    """A T1w must be a readable 3D image (a 4D file with a single volume is accepted)."""
    info, problems = load_image(path, label, scan_voxels=scan_voxels, max_gb=max_gb)
    if info is None:
        return problems
    spatial = info.shape[:3]
    extra = info.shape[3:]
    if len(info.shape) < 3 or any(n != 1 for n in extra):
        return [ParticipantProblem(
            label, f"the T1w image must be 3D, but its shape is {info.shape}", str(path),
            "give one 3D T1w per file (split a multi-echo/multi-volume file, e.g. with nibabel or fslsplit)")]
    log.debug("sub-%s: T1w %s, shape %s", label, path.name, spatial)
    return []


def check_bold(path: Path, metadata: dict[str, Any], label: str, *, min_volumes: int, dummy_scans: int = 0,
               scan_voxels: bool = True, max_gb: float = DEFAULT_MAX_IMAGE_GB
               ) -> tuple[int | None, float | None, list[ParticipantProblem]]:
    """A BOLD run must be a readable 4D image with enough volumes and a ``RepetitionTime``.

    Returns ``(n_volumes, repetition_time, problems)``; every problem found is reported at once so
    a user fixes the file in one go.
    """
    info, problems = load_image(path, label, scan_voxels=scan_voxels, max_gb=max_gb)
    if info is None:
        return None, None, problems
    n_volumes: int | None = None
    if len(info.shape) < 4 or (len(info.shape) > 4 and any(n != 1 for n in info.shape[4:])):
        problems.append(ParticipantProblem(
            label, f"the BOLD run must be a 4D time series, but its shape is {info.shape}", str(path),
            "a 3D file is one volume, not a run: merge the volumes into one 4D file (dcm2niix does this), "
            "or exclude the run with --bids-filter-file"))
    else:
        n_volumes = info.shape[3]
        usable = n_volumes - dummy_scans
        if usable < min_volumes:
            problems.append(ParticipantProblem(
                label, f"the BOLD run has {n_volumes} volumes"
                       f"{f' ({usable} after {dummy_scans} dummy scans)' if dummy_scans else ''}; "
                       f"at least {min_volumes} are needed", str(path),
                "exclude the run (--bids-filter-file) or the participant, or, if short runs are intended, "
                "set min_volumes under [preproc] in a --config-file"))
    tr = _repetition_time(metadata)
    if tr is None:
        header_tr = info.zooms[3] if len(info.zooms) > 3 else 0.0
        note = f" (the NIfTI header says {header_tr:g} s; check it)" if header_tr > 0 else ""
        problems.append(ParticipantProblem(
            label, "RepetitionTime is missing (or not a positive number) in the JSON sidecar", str(path),
            f"add \"RepetitionTime\": <seconds> to {_sidecar_for(path).name} or a task-level "
            f"task-<label>_bold.json{note}"))
    return n_volumes, tr, problems


def _repetition_time(metadata: dict[str, Any]) -> float | None:
    value = metadata.get("RepetitionTime")
    try:
        tr = float(value)
    except (TypeError, ValueError):
        return None
    return tr if math.isfinite(tr) and tr > 0 else None


def _sidecar_for(path: Path) -> Path:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")
