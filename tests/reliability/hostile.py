"""A hostile BIDS dataset: one healthy participant and one defect per other participant.

Each defect is something a real dataset or an attacker hands the app: a constant (all-zero) BOLD,
a 1024^3 T1w header over a few bytes, a truncated gzip, a sidecar without RepetitionTime, a binary
sidecar, a 3D "BOLD", NaN voxels, SliceTiming beyond the TR, an empty file, a dangling symbolic
link and a run too short to analyse. :data:`EXPECTED` says how the app must answer each: the exit
code of that participant and words of its message (``None``: the participant must succeed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from m2m_bids.exitcodes import ExitCode
from m2m_bids.synth import SynthSpec, generate_dataset


def _bold(root: Path, label: str) -> Path:
    return next((root / f"sub-{label}" / "func").glob("*_bold.nii.gz"))


def _sidecar(root: Path, label: str) -> Path:
    return next((root / f"sub-{label}" / "func").glob("*_bold.json"))


def _t1w(root: Path, label: str) -> Path:
    return next((root / f"sub-{label}" / "anat").glob("*_T1w.nii.gz"))


def constant_bold(root: Path, label: str) -> None:
    img = nib.load(_bold(root, label))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), _bold(root, label))


def huge_t1w(root: Path, label: str) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    header.set_qform(np.eye(4), code=1)
    with gzip.open(_t1w(root, label), "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 4096)


def truncated_bold(root: Path, label: str) -> None:
    path = _bold(root, label)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def no_repetition_time(root: Path, label: str) -> None:
    path = _sidecar(root, label)
    meta = json.loads(path.read_text())
    meta.pop("RepetitionTime")
    path.write_text(json.dumps(meta))


def binary_sidecar(root: Path, label: str) -> None:
    _sidecar(root, label).write_bytes(b"\xff\xfe\x00\x01binary\x89PNG")


def bold_3d(root: Path, label: str) -> None:
    img = nib.load(_bold(root, label))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), _bold(root, label))


def nan_t1w(root: Path, label: str) -> None:
    img = nib.load(_t1w(root, label))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[10:20, 10:20, 10:20] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), _t1w(root, label))


def slice_timing_beyond_tr(root: Path, label: str) -> None:
    path = _sidecar(root, label)
    meta = json.loads(path.read_text())
    n_slices = nib.load(_bold(root, label)).shape[2]
    meta["SliceTiming"] = [1.5 * meta["RepetitionTime"] * k / n_slices for k in range(n_slices)]
    path.write_text(json.dumps(meta))


def empty_t1w(root: Path, label: str) -> None:
    _t1w(root, label).write_bytes(b"")


def dangling_bold(root: Path, label: str) -> None:
    path = _bold(root, label)
    path.unlink()
    path.symlink_to(root / ".git" / "annex" / "objects" / "missing.nii.gz")


def too_short(root: Path, label: str) -> None:
    img = nib.load(_bold(root, label))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :5], img.affine), _bold(root, label))


#: label -> (defect, expected exit code of that participant or None for success, words of the message)
EXPECTED: dict[str, tuple[Callable[[Path, str], None] | None, ExitCode | None, str]] = {
    "01": (None, None, ""),
    "02": (constant_bold, ExitCode.DATA_ERROR, "the BOLD run is constant"),
    "03": (huge_t1w, ExitCode.DATA_ERROR, "too large to process"),
    "04": (truncated_bold, ExitCode.DATA_ERROR, "cannot decompress"),
    "05": (no_repetition_time, ExitCode.DATA_ERROR, "RepetitionTime is missing"),
    "06": (binary_sidecar, ExitCode.DATA_ERROR, "decode JSON"),
    "07": (bold_3d, ExitCode.DATA_ERROR, "4D time series"),
    "08": (nan_t1w, ExitCode.DATA_ERROR, "NaN"),
    "09": (slice_timing_beyond_tr, None, "SliceTiming values reach"),
    "10": (empty_t1w, ExitCode.DATA_ERROR, "empty"),
    "11": (dangling_bold, ExitCode.NO_INPUT, "dangling"),
    "12": (too_short, ExitCode.DATA_ERROR, "at least"),
}


def make_hostile_dataset(root: Path) -> Path:
    """Write the dataset of :data:`EXPECTED` under ``root`` and return it."""
    generate_dataset(root, SynthSpec.preset("tiny", n_participants=len(EXPECTED), classes=("CN", "AD"), seed=11))
    for label, (defect, _, _) in EXPECTED.items():
        if defect is not None:
            defect(root, label)
    return root


def tree_digest(root: Path) -> str:
    """Hash of every path and file content below ``root``: any write into the input changes it."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
