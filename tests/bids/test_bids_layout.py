"""Participant/session/task selection and BIDS filter files on real pybids layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2m_bids.bids.layout import available_labels, build_layout, collect_participants
from m2m_bids.config import Execution, Preproc
from m2m_bids.exitcodes import AppError, ExitCode

from m2m_bids.testing import BIDS_REAL as REAL  # noqa: E402


def _execution(bids: Path, tmp_path: Path, **options) -> Execution:
    return Execution(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant", **options)


@pytest.fixture
def multi(bids_skeleton) -> Path:
    """Three participants: sessions pre/post, two tasks, a T1w with and without acq, two runs."""
    two_tasks = {"anat": [{"suffix": "T1w"}, {"suffix": "T1w", "acquisition": "lowres"}],
                 "func": [{"task": "rest", "suffix": "bold", "run": 1}, {"task": "rest", "suffix": "bold", "run": 2},
                          {"task": "nback", "suffix": "bold"}]}
    return bids_skeleton({"01": {"sessions": {"pre": None, "post": None}},
                          "02": {"sessions": {"post": None}},
                          "03": two_tasks},
                         participants={"01": {"diagnosis": "CN", "age": 70}, "02": {"diagnosis": "AD", "age": 75},
                                       "03": {"diagnosis": "AD", "age": "n/a"}})


def _runs(participant) -> list[str]:
    return sorted(run.path.name for session in participant.sessions for run in session.bold_runs)


def test_labels_with_and_without_prefix_and_phenotype(multi: Path, tmp_path: Path) -> None:
    found, problems = collect_participants(_execution(multi, tmp_path, participant_label=["sub-01", "02"]), Preproc())
    assert problems == []
    assert [p.label for p in found] == ["01", "02"]
    first = found[0]
    assert [s.session for s in first.sessions] == ["post", "pre"]
    assert all(s.t1w.name == f"sub-01_ses-{s.session}_T1w.nii.gz" for s in first.sessions)
    run = first.sessions[1].bold_runs[0]
    assert (run.n_volumes, run.repetition_time, run.entities) == (24, 2.0, {"subject": "01", "session": "pre",
                                                                          "task": "rest"})
    assert first.phenotype == {"age": 70.0, "diagnosis": "CN"}
    assert found[1].phenotype["diagnosis"] == "AD"


def test_exclusion_and_restricted_index(multi: Path, tmp_path: Path) -> None:
    found, _ = collect_participants(_execution(multi, tmp_path, exclude_participant_label=["sub-02"]), Preproc(),
                                    scan_voxels=False)
    assert [p.label for p in found] == ["01", "03"]
    layout = build_layout(multi, ["02"])
    assert layout.get_subjects() == ["02"]  # other subjects are never indexed
    assert available_labels(multi) == ["01", "02", "03"]


def test_session_selection_skips_participants_without_it(multi: Path, tmp_path: Path) -> None:
    found, problems = collect_participants(_execution(multi, tmp_path, session_label=["ses-pre"]), Preproc(),
                                           scan_voxels=False)
    # 01 has ses-pre; 02 has only ses-post (skipped); 03 has no sessions at all (kept, execution spec)
    assert [p.label for p in found] == ["01", "03"] and problems == []
    assert [s.session for s in found[0].sessions] == ["pre"]


def test_session_without_t1w_borrows_another_sessions(bids_skeleton, tmp_path: Path) -> None:
    bids = bids_skeleton({"01": {"sessions": {"base": None, "year1": {"func": [{"task": "rest", "suffix": "bold"}]}}}})
    found, problems = collect_participants(_execution(bids, tmp_path, session_label=["year1"]), Preproc(),
                                           scan_voxels=False)
    assert problems == []
    (session,) = found[0].sessions
    assert session.session == "year1" and session.t1w.name == "sub-01_ses-base_T1w.nii.gz"


def test_task_selection(multi: Path, tmp_path: Path) -> None:
    found, _ = collect_participants(_execution(multi, tmp_path, participant_label=["03"], task=["task-nback"]),
                                    Preproc(), scan_voxels=False)
    assert _runs(found[0]) == ["sub-03_task-nback_bold.nii.gz"]


@pytest.mark.parametrize(("filters", "t1w", "runs"), [
    ({"bold": {"task": "rest"}}, "sub-03_T1w.nii.gz", ["sub-03_task-rest_run-1_bold.nii.gz",
                                                      "sub-03_task-rest_run-2_bold.nii.gz"]),
    ({"bold": {"run": "*"}, "t1w": {"acquisition": "lowres"}}, "sub-03_acq-lowres_T1w.nii.gz",
     ["sub-03_task-rest_run-1_bold.nii.gz", "sub-03_task-rest_run-2_bold.nii.gz"]),
    ({"bold": {"run": None}, "t1w": {"acq": None}}, "sub-03_T1w.nii.gz", ["sub-03_task-nback_bold.nii.gz"]),
    ({"bold": {"task": "rest", "run": [2]}}, "sub-03_T1w.nii.gz", ["sub-03_task-rest_run-2_bold.nii.gz"]),
])
def test_bids_filter_file_semantics(multi: Path, tmp_path: Path, filters, t1w, runs) -> None:
    """``null`` = entity absent, ``"*"`` = any value, short keys (acq) accepted, lists of values."""
    ex = _execution(multi, tmp_path, participant_label=["03"], bids_filters=filters)
    found, problems = collect_participants(ex, Preproc(), scan_voxels=False)
    assert problems == []
    assert found[0].sessions[0].t1w.name == t1w
    assert _runs(found[0]) == runs


def test_unknown_label_is_no_match_with_available_labels(multi: Path, tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        collect_participants(_execution(multi, tmp_path, participant_label=["01", "sub-99"]), Preproc())
    assert info.value.code == ExitCode.NO_MATCH
    assert "99" in info.value.message and "available: 01, 02, 03" in info.value.message


@pytest.mark.parametrize("options", [
    {"task": ["memory"]},
    {"bids_filters": {"bold": {"task": "memory"}, "t1w": {"acquisition": "none"}}},
    {"session_label": ["baseline"], "participant_label": ["01", "02"]},
    {"exclude_participant_label": ["01", "02", "03"]},
])
def test_selection_matching_nothing_exits_18(multi: Path, tmp_path: Path, options) -> None:
    with pytest.raises(AppError) as info:
        collect_participants(_execution(multi, tmp_path, **options), Preproc(), scan_voxels=False)
    assert info.value.code == ExitCode.NO_MATCH, info.value.render()


def test_filter_matching_only_some_files_is_a_participant_problem(multi: Path, tmp_path: Path) -> None:
    ex = _execution(multi, tmp_path, task=["nback"])
    found, problems = collect_participants(ex, Preproc(), scan_voxels=False)
    assert [p.label for p in found] == ["03"]
    assert {(p.label, p.code) for p in problems} == {("01", ExitCode.NO_INPUT), ("02", ExitCode.NO_INPUT)}
    assert all("no BOLD run" in p.message for p in problems)


def test_invalid_filter_entity_is_usage_error(multi: Path, tmp_path: Path) -> None:
    ex = _execution(multi, tmp_path, bids_filters={"bold": {"flavour": "vanilla"}})
    with pytest.raises(AppError) as info:
        collect_participants(ex, Preproc(), scan_voxels=False)
    assert info.value.code == ExitCode.USAGE


def test_missing_bids_dir_is_no_input(tmp_path: Path) -> None:
    with pytest.raises(AppError) as info:
        collect_participants(_execution(tmp_path / "nowhere", tmp_path), Preproc())
    assert info.value.code == ExitCode.NO_INPUT


@pytest.mark.skipif(not REAL.is_dir(), reason="real test dataset not present")
def test_real_dataset_selection(tmp_path: Path) -> None:
    """Nine real participants; sub-05..08 have 6-10 volumes, so they are problems at the default minimum."""
    found, problems = collect_participants(_execution(REAL, tmp_path), Preproc(), scan_voxels=False)
    assert [p.label for p in found] == ["01", "02", "03", "04", "10"]
    assert sorted(p.label for p in problems) == ["05", "06", "07", "08"]
    assert all("volumes" in p.message and p.path.endswith("_task-rest_bold.nii.gz") for p in problems)
    by_label = {p.label: p for p in found}
    assert by_label["02"].sessions[0].bold_runs[0].repetition_time == pytest.approx(1.25923)
    assert by_label["03"].sessions[0].bold_runs[0].slice_timing is not None
    assert by_label["10"].phenotype == {"diagnosis": "CN", "age": 69.0, "sex": "F"}


@pytest.mark.skipif(not REAL.is_dir(), reason="real test dataset not present")
def test_real_dataset_voxel_scan_and_short_runs(tmp_path: Path) -> None:
    """The full check (voxels streamed) on the small real participants; min_volumes lowered for sub-06."""
    ex = _execution(REAL, tmp_path, participant_label=["04", "sub-06"])
    found, problems = collect_participants(ex, Preproc(min_volumes=6))
    assert problems == [] and [p.label for p in found] == ["04", "06"]
    assert found[1].sessions[0].bold_runs[0].n_volumes == 6


def test_pet_is_optional_per_session_and_checked(tmp_path: Path) -> None:
    """A session's PET is found (pybids datatype pet), a session without one has ``pet=None``, a
    FrameDuration that does not match the frames is a participant problem, and a filter drops PET."""
    import json

    from m2m_bids.synth import SynthSpec, generate_dataset

    bids = generate_dataset(tmp_path / "bids", SynthSpec.preset("tiny", n_participants=2, sessions=2, pet=True,
                                                                n_volumes=8))
    for path in (bids / "sub-01" / "ses-02" / "pet").iterdir():
        path.unlink()
    sidecar = bids / "sub-02" / "ses-01" / "pet" / "sub-02_ses-01_trc-FDG_pet.json"
    broken = json.loads(sidecar.read_text())
    broken["FrameDuration"] = [300.0]
    sidecar.write_text(json.dumps(broken))
    found, problems = collect_participants(_execution(bids, tmp_path), Preproc(min_volumes=4))
    assert [p.label for p in found] == ["01"]
    sessions = {s.session: s for s in found[0].sessions}
    assert sessions["01"].pet is not None and sessions["01"].pet.path.name == "sub-01_ses-01_trc-FDG_pet.nii.gz"
    assert sessions["01"].pet.entities == {"subject": "01", "session": "01", "tracer": "FDG"}
    assert sessions["02"].pet is None
    assert len(problems) == 1 and problems[0].label == "02" and "FrameDuration has 1 value" in problems[0].message
    assert problems[0].path == str(bids / "sub-02" / "ses-01" / "pet" / "sub-02_ses-01_trc-FDG_pet.nii.gz")
    no_pet, problems = collect_participants(
        _execution(bids, tmp_path, bids_filters={"pet": {"datatype": "none"}}), Preproc(min_volumes=4))
    assert problems == [] and all(s.pet is None for p in no_pet for s in p.sessions)
