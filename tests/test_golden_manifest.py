"""The whole output folder: every file a group run and then a participant run write, by name.

Runs the real command line on the tiniest synthetic dataset (``tiny`` preset, 5 participants):
a group run trains on four of them, a participant run applies the model to the fifth. Every file
under OUTPUT_DIR is listed (relative paths, the run id replaced by ``<run-id>``) and compared with
``tests/golden/manifest.txt``; every NIfTI must have its JSON sidecar, and the folder must pass
bids-validator-deno. The work dir (intermediates, tensor cache) is kept outside OUTPUT_DIR here:
its content is internal, not an output.

When an intended change adds, renames or removes an output, regenerate the manifest and review
its diff::

    M2M_REGENERATE_GOLDEN=1 python -m pytest -p no:xdist -m integration tests/test_golden_manifest.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from m2m_bids.bids.validator import run_validator
from m2m_bids.cli.app import main
from m2m_bids.synth import SynthSpec, generate_dataset

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden" / "manifest.txt"
#: ``YYYYMMDD-HHMMSS_<8 hex>`` (``m2m_bids.config.new_run_id``).
RUN_ID = re.compile(r"\d{8}-\d{6}_[0-9a-f]{8}")


def m2m(*args: str | Path) -> None:
    """One in-process run of the command line; fails the test on a non-zero exit code."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert int(done.value.code or 0) == 0, f"m2m {' '.join(map(str, args))} exited {done.value.code}"


def manifest(output_dir: Path) -> list[str]:
    """Sorted relative paths of every file below ``output_dir``, run ids normalised."""
    return sorted({RUN_ID.sub("<run-id>", p.relative_to(output_dir).as_posix())
                   for p in output_dir.rglob("*") if p.is_file()})


def test_group_then_participant_writes_the_golden_manifest(tmp_path: Path) -> None:
    bids = generate_dataset(tmp_path / "bids", SynthSpec.preset("tiny", n_participants=5, classes=("CN", "AD"),
                                                                seed=3))
    out, work = tmp_path / "out", tmp_path / "work"
    common = ("--preset", "tiny", "--work-dir", work, "--skip-bids-validation", "--nprocs", "1")
    m2m(bids, out, "group", *common, "--classes", "CN,AD", "--folds", "2", "--epochs", "1",
        "--participant-label", "01", "02", "03", "04")
    m2m(bids, out, "participant", *common, "--participant-label", "05")
    found = manifest(out)
    if os.environ.get("M2M_REGENERATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("\n".join(found) + "\n", encoding="utf-8")
    expected = GOLDEN.read_text(encoding="utf-8").split()
    assert found == expected, ("outputs differ from tests/golden/manifest.txt (regenerate with "
                               "M2M_REGENERATE_GOLDEN=1 if the change is intended)\n"
                               f"new: {sorted(set(found) - set(expected))}\ngone: {sorted(set(expected) - set(found))}")
    niftis = [name for name in found if name.endswith(".nii.gz")]
    assert niftis and all(name.removesuffix(".nii.gz") + ".json" in found for name in niftis)
    report = run_validator(out)
    assert report.ok, report.errors
