"""The BIDS-App contract, exercised through the real command line.

Selection tests use ``--dry-run`` (validate + select + print the plan, the same code path as a run
up to preprocessing); one real participant-level run checks what a run leaves behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from m2m_bids import __version__
from m2m_bids.cli.app import main
from m2m_bids.exitcodes import ExitCode


def m2m(*args: str | Path) -> int:
    """Run the app in-process like the console script and return its exit code."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0)


def planned(capsys: pytest.CaptureFixture[str], bids: Path, out: Path, *args: str) -> list[str]:
    """Participants a ``--dry-run`` would process (one line per run)."""
    code = m2m(bids, out, "participant", "--dry-run", "--skip-bids-validation", *args)
    assert code == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return sorted({line.split(":")[0] for line in lines if line.startswith("sub-")})


def test_console_script_help_and_version() -> None:
    result = subprocess.run([sys.executable, "-m", "m2m_bids", "--help"], capture_output=True, text=True,
                            env={"COLUMNS": "120", "PATH": ""}, check=False)
    assert result.returncode == 0
    for group in ("BIDS selection", "Performance and resources", "Preprocessing", "Model and training",
                  "Applying a model", "Run control", "--participant-label", "--skip-bids-validation"):
        assert group in result.stdout
    result = subprocess.run([sys.executable, "-m", "m2m_bids", "--version"], capture_output=True, text=True,
                            check=False)
    assert (result.returncode, result.stdout.strip()) == (0, f"m2m-bids {__version__}")


@pytest.mark.parametrize("args, code", [
    (["participants"], ExitCode.UNKNOWN_LEVEL),
    (["participant", "--no-such-flag"], ExitCode.USAGE),
    (["participant", "--nprocs", "many"], ExitCode.USAGE),
    (["participant", "--folds", "1"], ExitCode.USAGE),
    (["group", "--device", "tpu"], ExitCode.USAGE),
])
def test_usage_errors(tiny_bids: Path, tmp_path: Path, args: list[str], code: ExitCode) -> None:
    assert m2m(tiny_bids, tmp_path / "out", *args) == code


def test_missing_input_and_refused_outputs(tiny_bids: Path, tmp_path: Path) -> None:
    assert m2m(tmp_path / "nowhere", tmp_path / "out", "participant") == ExitCode.NO_INPUT
    assert m2m(tiny_bids, tiny_bids, "participant", "--dry-run") == ExitCode.USAGE
    assert m2m(tiny_bids, tiny_bids / "m2m", "participant", "--dry-run") == ExitCode.USAGE
    assert not (tiny_bids / "m2m").exists()


def test_label_forms(capsys: pytest.CaptureFixture[str], tiny_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert planned(capsys, tiny_bids, out) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert planned(capsys, tiny_bids, out, "--participant-label", "01", "sub-03") == ["sub-01", "sub-03"]
    assert planned(capsys, tiny_bids, out, "--participant_label", "sub-02", "--participant_label", "04") == [
        "sub-02", "sub-04"]
    labels = tmp_path / "labels.txt"
    labels.write_text("sub-01\n# comment\n02\n")
    assert planned(capsys, tiny_bids, out, "--participant-label", str(labels)) == ["sub-01", "sub-02"]
    assert planned(capsys, tiny_bids, out, "--exclude-participant-label", "sub-01", "02") == ["sub-03", "sub-04"]


def test_dry_run_lists_pet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from m2m_bids.synth import SynthSpec, generate_dataset

    bids = generate_dataset(tmp_path / "bids", SynthSpec.preset("tiny", n_participants=2, pet=True, seed=1))
    assert m2m(bids, tmp_path / "out", "participant", "--dry-run", "--skip-bids-validation") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sub-")]
    assert len(lines) == 2 and all("; PET sub-" in line and line.endswith("_trc-FDG_pet.nii.gz") for line in lines)


def test_selection_errors(tiny_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ["participant", "--dry-run", "--skip-bids-validation"]
    assert m2m(tiny_bids, out, *common, "--participant-label", "77") == ExitCode.NO_MATCH
    assert m2m(tiny_bids, out, *common, "--task", "nback") == ExitCode.NO_MATCH
    # a session that no selected file has matches nothing, even though session-less files would stay
    assert m2m(tiny_bids, out, *common, "--session-label", "99") == ExitCode.NO_MATCH
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"bold": {"acquisition": "multiband"}}))
    assert m2m(tiny_bids, out, *common, "--bids-filter-file", filters) == ExitCode.NO_MATCH
    filters.write_text("{not json")
    assert m2m(tiny_bids, out, *common, "--bids-filter-file", filters) == ExitCode.USAGE


def test_bids_validation_runs_and_fails_on_invalid_input(tiny_bids: Path, tmp_path: Path) -> None:
    assert m2m(tiny_bids, tmp_path / "ok", "participant", "--dry-run") == ExitCode.OK
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in ("participants.tsv", "sub-01"):
        src = tiny_bids / item
        subprocess.run(["cp", "-r", str(src), str(broken / item)], check=True)
    (broken / "dataset_description.json").write_text('{"Name": "no BIDSVersion"}')  # invalid, not absent
    code = m2m(broken, tmp_path / "out", "participant", "--dry-run")
    assert code == ExitCode.INVALID_BIDS
    assert m2m(broken, tmp_path / "out2", "participant", "--dry-run", "--skip_bids_validator") != ExitCode.INVALID_BIDS


def test_participant_run_leaves_input_untouched_and_resumes_from_cache(
        tiny_bids: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, tree_digest) -> None:
    before = tree_digest(tiny_bids)
    out = tmp_path / "derivatives"
    args = (tiny_bids, out, "participant", "--participant-label", "01", "--preset", "tiny",
            "--skip-bids-validation", "--nprocs", "1")
    assert m2m(*args) == ExitCode.OK
    assert tree_digest(tiny_bids) == before
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "m2m-bids"
    snapshots = list((out / "logs").glob("*/config.toml"))
    assert len(snapshots) == 1
    assert not (out / "sub-01" / "log").exists(), "nothing failed: no empty per-participant log folder"
    assert (out / "logs" / snapshots[0].parent.name / "m2m.log").is_file()
    caplog.clear()
    assert m2m(*args) == ExitCode.OK
    assert "no preprocessing needed" in caplog.text
    assert tree_digest(tiny_bids) == before
