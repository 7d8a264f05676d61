"""Every input problem on a hand-broken copy: named file, clear message, the other participant goes on."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from m2m_bids.bids.layout import collect_participants
from m2m_bids.config import Execution, Preproc
from m2m_bids.exitcodes import ExitCode

BOLD = "sub-02/func/sub-02_task-rest_bold.nii.gz"
T1W = "sub-02/anat/sub-02_T1w.nii.gz"


def _replace_image(root: Path, rel: str, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / rel))


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


def _zero_bytes(root: Path) -> None:
    (root / BOLD).write_bytes(b"")


def _garbage(root: Path) -> None:
    (root / T1W).write_bytes(gzip.compress(b"this is not a NIfTI file" * 40))


def _truncated(root: Path) -> None:
    raw = gzip.decompress((root / BOLD).read_bytes())
    (root / BOLD).write_bytes(gzip.compress(raw[: len(raw) // 2]))


def _three_d(root: Path) -> None:
    _replace_image(root, BOLD, np.ones((17, 17, 17), dtype=np.int16))


def _short(root: Path) -> None:
    _replace_image(root, BOLD, np.ones((17, 17, 17, 5), dtype=np.int16))


def _no_tr(root: Path) -> None:
    sidecar = root / BOLD.replace(".nii.gz", ".json")
    sidecar.write_text(json.dumps({"TaskName": "rest"}), encoding="utf-8")


def _nan_bold(root: Path) -> None:
    data = np.ones((17, 17, 17, 24), dtype=np.float32)
    data[3, 4, 5, 6] = np.nan
    _replace_image(root, BOLD, data)


def _inf_t1w(root: Path) -> None:
    data = np.ones((18, 18, 18), dtype=np.float64)
    data[0, 0, 0] = -np.inf
    _replace_image(root, T1W, data)


def _dangling_link(root: Path) -> None:
    (root / BOLD).unlink()
    (root / BOLD).symlink_to(root / ".git" / "annex" / "objects" / "missing")


CASES = {
    "no T1w": (_remove(T1W), "no T1w image", "sub-02", ExitCode.NO_INPUT),
    "no BOLD": (_remove(BOLD), "no BOLD run", "sub-02", ExitCode.NO_INPUT),
    "zero-byte NIfTI": (_zero_bytes, "empty (0 bytes)", BOLD, ExitCode.DATA_ERROR),
    "unreadable NIfTI": (_garbage, "cannot read the image", T1W, ExitCode.DATA_ERROR),
    "truncated NIfTI": (_truncated, "truncated", BOLD, ExitCode.DATA_ERROR),
    "dangling symlink": (_dangling_link, "dangling symbolic link", BOLD, ExitCode.NO_INPUT),
    "3D BOLD": (_three_d, "must be a 4D time series", BOLD, ExitCode.DATA_ERROR),
    "too few volumes": (_short, "has 5 volumes; at least 20 are needed", BOLD, ExitCode.DATA_ERROR),
    "missing RepetitionTime": (_no_tr, "RepetitionTime is missing", BOLD, ExitCode.DATA_ERROR),
    "NaN voxels": (_nan_bold, "1 of 117912 voxels", BOLD, ExitCode.DATA_ERROR),
    "inf voxels": (_inf_t1w, "are NaN or infinite", T1W, ExitCode.DATA_ERROR),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from m2m_bids.testing import make_bids_dataset

    return make_bids_dataset(tmp_path_factory.mktemp("pristine") / "bids", {"01": None, "02": None})


@pytest.mark.parametrize("case", list(CASES))
def test_broken_input_is_reported_and_others_continue(pristine: Path, tmp_path: Path, case: str) -> None:
    breaker, expected, where, code = CASES[case]
    root = tmp_path / "bids"
    shutil.copytree(pristine, root)
    breaker(root)
    ex = Execution(bids_dir=root, output_dir=tmp_path / "out", analysis_level="participant")
    found, problems = collect_participants(ex, Preproc())
    assert [p.label for p in found] == ["01"], "the healthy participant must still be collected"
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.label == "02" and problem.code == code
    assert expected in problem.message, problem.message
    assert problem.path is not None and problem.path.endswith(where)
    assert problem.hint
    rendered = problem.to_error().render()
    assert "sub-02" in rendered and "fix:" in rendered


def test_several_problems_of_one_run_are_reported_together(pristine: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    shutil.copytree(pristine, root)
    _short(root)
    _no_tr(root)
    _, problems = collect_participants(Execution(bids_dir=root, output_dir=tmp_path / "o",
                                                 analysis_level="participant"), Preproc())
    assert sorted(p.message.split()[0] for p in problems) == ["RepetitionTime", "the"]


def test_dummy_scans_count_against_min_volumes(pristine: Path, tmp_path: Path) -> None:
    ex = Execution(bids_dir=pristine, output_dir=tmp_path / "o", analysis_level="participant")
    found, problems = collect_participants(ex, Preproc(dummy_scans=5), scan_voxels=False)
    assert found == [] and len(problems) == 2
    assert "24 volumes (19 after 5 dummy scans)" in problems[0].message


def test_broken_sidecar_json_stops_only_its_participant(pristine: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    shutil.copytree(pristine, root)
    (root / BOLD.replace(".nii.gz", ".json")).write_text("{not json", encoding="utf-8")
    ex = Execution(bids_dir=root, output_dir=tmp_path / "o", analysis_level="participant")
    found, problems = collect_participants(ex, Preproc(), scan_voxels=False)
    assert [p.label for p in found] == ["01"]
    assert [(p.label, p.code) for p in problems] == [("02", ExitCode.DATA_ERROR)]
    assert problems[0].path.endswith("sub-02_task-rest_bold.json") and "JSON" in problems[0].message


def test_broken_participants_tsv_does_not_stop_preprocessing(pristine: Path, tmp_path: Path) -> None:
    root = tmp_path / "bids"
    shutil.copytree(pristine, root)
    (root / "participants.tsv").write_text("subject\tage\nsub-01\t3\n", encoding="utf-8")
    ex = Execution(bids_dir=root, output_dir=tmp_path / "o", analysis_level="participant")
    found, problems = collect_participants(ex, Preproc(), scan_voxels=False)
    assert [p.label for p in found] == ["01", "02"] and problems == []
    assert found[0].phenotype == {}
