"""Small raw BIDS datasets built from a dict, for tests of m2m-bids and of code built on it.

``make_bids_dataset`` writes real (tiny) NIfTI data, so the input layer, the validator and the
pipeline are exercised on files that nibabel, pybids and bids-validator-deno all accept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: Smallest shapes that bids-validator accepts without NIFTI_TOO_SMALL (about 16^3 voxels of noise).
T1W_SHAPE = (18, 18, 18)
BOLD_SHAPE = (17, 17, 17)
DEFAULT_VOLUMES = 24
DEFAULT_TR = 2.0

#: One session of one participant: a T1w and one resting-state run (the default everywhere).
DEFAULT_CONTENT: dict[str, list[dict[str, Any]]] = {"anat": [{"suffix": "T1w"}],
                                                    "func": [{"task": "rest", "suffix": "bold"}]}

ENTITY_ORDER = (("session", "ses"), ("task", "task"), ("acquisition", "acq"), ("run", "run"))


def bids_name(label: str, entry: dict[str, Any], session: str | None) -> str:
    """``sub-01_ses-a_task-rest_run-1_bold`` from an entry's entities (without extension)."""
    entities = {"session": session, **{k: entry.get(k) for k, _ in ENTITY_ORDER[1:]}}
    parts = [f"sub-{label}"] + [f"{key}-{entities[name]}" for name, key in ENTITY_ORDER if entities.get(name)]
    return "_".join(parts + [entry["suffix"]])


def write_nifti(path: Path, shape: tuple[int, ...], *, seed: int = 0, dtype: str = "int16",
                zooms: tuple[float, ...] | None = None) -> Path:
    """A NIfTI of smooth-ish noise (compressible, but > the validator's minimum size)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(50, 150, size=shape).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0]))
    if zooms is not None:
        img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _write_entry(sub_dir: Path, label: str, session: str | None, datatype: str, entry: dict[str, Any],
                 seed: int) -> None:
    stem = bids_name(label, entry, session)
    folder = sub_dir / datatype
    if entry["suffix"] == "bold":
        n_vols = entry.get("volumes", DEFAULT_VOLUMES)
        shape = tuple(entry.get("shape", (*BOLD_SHAPE, n_vols)))
        tr = entry.get("tr", DEFAULT_TR)
        write_nifti(folder / f"{stem}.nii.gz", shape, seed=seed, zooms=(3.0, 3.0, 3.0, tr)[: len(shape)])
        metadata = {"RepetitionTime": tr, "TaskName": entry.get("task", "rest"), **entry.get("metadata", {})}
    else:
        write_nifti(folder / f"{stem}.nii.gz", tuple(entry.get("shape", T1W_SHAPE)), seed=seed)
        metadata = dict(entry.get("metadata", {}))
    metadata = {k: v for k, v in metadata.items() if v is not None}  # None removes a default key
    if metadata:
        (folder / f"{stem}.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def make_bids_dataset(root: Path, subjects: dict[str, Any], *, participants: dict[str, dict[str, Any]] | None = None,
                      participants_json: dict[str, Any] | None = None, description: dict[str, Any] | None = None
                      ) -> Path:
    """Write a raw BIDS dataset under ``root``.

    ``subjects`` maps a label to ``None`` (one T1w + one task-rest BOLD), to content
    ``{"anat": [entry...], "func": [entry...]}`` or to ``{"sessions": {"pre": content, ...}}``.
    An entry holds entities (``suffix``, ``task``, ``run``, ``acquisition``) and optionally
    ``shape``, ``volumes``, ``tr`` and ``metadata`` (sidecar keys; ``None`` drops a default key).
    """
    root.mkdir(parents=True, exist_ok=True)
    desc = {"Name": "synthetic test dataset", "BIDSVersion": "1.10.0", "DatasetType": "raw",
            "Authors": ["m2m-bids tests"], **(description or {})}
    (root / "dataset_description.json").write_text(json.dumps(desc, indent=2), encoding="utf-8")
    (root / "README").write_text("A tiny synthetic dataset written by the m2m-bids test-suite.\n", encoding="utf-8")
    seed = 0
    for label, spec in subjects.items():
        sessions = spec["sessions"] if spec and "sessions" in spec else {None: spec}
        for session, content in sessions.items():
            sub_dir = root / f"sub-{label}" / (f"ses-{session}" if session else "")
            for datatype, entries in (content or DEFAULT_CONTENT).items():
                for entry in entries:
                    seed += 1
                    _write_entry(sub_dir, label, session, datatype, entry, seed)
    rows = participants if participants is not None else {label: {} for label in subjects}
    columns = sorted({key for row in rows.values() for key in row})
    lines = ["\t".join(["participant_id", *columns])]
    lines += ["\t".join([f"sub-{lab}", *(str(row.get(c, "n/a")) for c in columns)]) for lab, row in rows.items()]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if participants_json is not None:
        (root / "participants.json").write_text(json.dumps(participants_json, indent=2), encoding="utf-8")
    return root


def shared_data_dir() -> Path:
    """The project's shared test data (``../shared/data`` beside the checkout), or ``$M2M_SHARED_DATA``.

    Real scans are not shipped with the package; tests that need them skip when this is absent.
    """
    env = os.environ.get("M2M_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


#: ``../shared/data/bids-real``: nine real participants with awkward headers (tests skip without it).
BIDS_REAL = shared_data_dir() / "bids-real"
