"""A new user's first run: bad choices fail before preprocessing, codes and messages match the docs,
logs are where messages point, and the help reads well at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from m2m_bids.cli.app import main
from m2m_bids.config import Preproc
from m2m_bids.preflight import build_config
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.backends import known_archs
from m2m_bids.training.splits import make_splits


def run_m2m(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Exit code and everything printed (stdout + stderr) of one in-process run."""
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    printed = capsys.readouterr()
    return int(done.value.code or 0), printed.out + printed.err


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text


@pytest.mark.parametrize("level", ["group", "participant"])
@pytest.mark.parametrize("dry", [True, False])
def test_unknown_arch_is_a_usage_error_before_any_work(capsys, tiny_bids: Path, tmp_path: Path, level: str,
                                                       dry: bool) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    code, text = run_m2m(capsys, tiny_bids, out, level, "--arch", "m2n", "--skip-bids-validation",
                         *(["--dry-run"] if dry else []))
    assert code == ExitCode.USAGE and no_traceback(text)
    assert "unknown architecture --arch 'm2n'" in text
    for arch in ("m2m", "swift", "masan", "siamese", "connectome-logreg", "connectome-svc"):
        assert arch in text
    assert set(known_archs()) >= {"m2m", "connectome-svc"}
    assert not (out / "work").exists(), "nothing may be preprocessed"
    assert time.monotonic() - started < 10


def test_unknown_model_option_and_untileable_grid_fail_fast(capsys, tiny_bids: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model.overrides]\nembed_dimm = 8\n")
    code, text = run_m2m(capsys, tiny_bids, tmp_path / "out", "group", "--config-file", bad, "--skip-bids-validation")
    assert code == ExitCode.USAGE and "embed_dimm" in text and no_traceback(text)
    grid = tmp_path / "grid.toml"
    grid.write_text("[preproc]\ngrid_shape = [30, 30, 30]\n")
    code, text = run_m2m(capsys, tiny_bids, tmp_path / "out", "group", "--config-file", grid,
                         "--skip-bids-validation", "--dry-run")
    assert code == ExitCode.USAGE and "not divisible" in text and no_traceback(text)
    assert not (tmp_path / "out" / "work").exists()


def test_missing_model_bundle_is_66_before_preprocessing(capsys, tiny_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, text = run_m2m(capsys, tiny_bids, out, "participant", "--model", tmp_path / "no-such-model",
                         "--skip-bids-validation")
    assert code == ExitCode.NO_INPUT and "does not exist" in text and "no-such-model" in text
    assert no_traceback(text) and not (out / "work").exists()
    empty = tmp_path / "empty-bundle"
    empty.mkdir()
    code, text = run_m2m(capsys, tiny_bids, out, "participant", "--model", empty, "--skip-bids-validation")
    assert code == ExitCode.NO_INPUT and "model-card.json" in text


def _bundle(root: Path, **preproc: object) -> Path:
    """A bundle folder whose card records preprocessing settings (what the group level writes)."""
    folder = root / "models" / "model-m2m"
    folder.mkdir(parents=True)
    settings = {**Preproc().model_dump(mode="json"), **preproc}
    (folder / "model-card.json").write_text(json.dumps({"arch": "m2m", "classes": ["CN", "AD"], "preproc": settings,
                                                        "model": {"config": {}}}))
    return folder


def _participant_cli(tmp_path: Path, out: Path, **execution: object) -> dict:
    (tmp_path / "bids").mkdir(exist_ok=True)
    return {"execution": {"bids_dir": str(tmp_path / "bids"), "output_dir": str(out),
                          "analysis_level": "participant", **execution}}


def test_bundle_preprocessing_is_adopted_and_only_explicit_conflicts_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _bundle(out, resolution_mm=6.0, grid_shape=[32, 32, 32], fwhm_mm=5.0, registration="rigid")
    cfg = build_config(_participant_cli(tmp_path, out))  # default bundle of the arch in OUTPUT_DIR
    assert (cfg.preproc.resolution_mm, cfg.preproc.grid_shape, cfg.preproc.fwhm_mm) == (6.0, (32, 32, 32), 5.0)
    assert cfg.preproc.registration == "rigid"
    assert cfg.execution.model == out / "models" / "model-m2m"
    # the tiny preset's grid is not an explicit choice: the card wins over it
    from m2m_bids.config import Preset
    assert build_config(_participant_cli(tmp_path, out), preset=Preset.tiny).preproc.grid_shape == (32, 32, 32)
    same = {"execution": _participant_cli(tmp_path, out)["execution"], "preproc": {"fwhm_mm": 5}}
    assert build_config(same).preproc.fwhm_mm == 5.0  # explicit but equal: fine
    limits = {"execution": _participant_cli(tmp_path, out)["execution"], "preproc": {"max_fd_mm": 20.0}}
    assert build_config(limits).preproc.max_fd_mm == 20.0  # acceptance limits are the run's own
    clash = {"execution": _participant_cli(tmp_path, out)["execution"], "preproc": {"fwhm_mm": 8.0}}
    with pytest.raises(AppError) as err:
        build_config(clash)
    assert err.value.code == ExitCode.USAGE
    assert "--fwhm=8.0 (model: 5.0)" in err.value.message and "model-card.json" in str(err.value.path)
    config_file = tmp_path / "cfg.toml"
    config_file.write_text("[preproc]\ngrid_shape = [16, 16, 16]\n")
    with pytest.raises(AppError, match="grid_shape"):
        build_config(_participant_cli(tmp_path, out), config_file=config_file)
    # the group level trains: it never adopts a card
    group = build_config({"execution": {**_participant_cli(tmp_path, out)["execution"], "analysis_level": "group"}})
    assert group.preproc.grid_shape == Preproc().grid_shape


def test_validation_messages_have_no_pydantic_prefix(tmp_path: Path) -> None:
    with pytest.raises(AppError) as err:
        build_config(_participant_cli(tmp_path, tmp_path / "out", device="tpu"))
    assert "device must be auto" in err.value.message
    assert "Value error" not in err.value.message


@pytest.mark.parametrize("counts, folds, suggestion", [((1, 5), 2, None), ((3, 5), 5, "at most 3")])
def test_too_few_for_the_folds_never_suggests_an_invalid_value(counts, folds, suggestion) -> None:
    y = pd.Series([0] * counts[0] + [1] * counts[1], index=[f"{i:02d}" for i in range(sum(counts))])
    with pytest.raises(AppError) as err:
        make_splits(y, folds=folds, val_fraction=0.2, seed=0)
    hint = err.value.hint or ""
    if suggestion is None:
        assert "at most" not in hint and "at least 2 participants per class" in hint
    else:
        assert suggestion in hint


def test_failure_log_is_where_the_message_points(capsys, tiny_bids: Path, tmp_path: Path) -> None:
    """A participant whose preprocessing fails has its error in sub-<id>/log/<run-id>/; participants
    that only succeeded leave no empty log folders; no lock files stay in the output root."""
    bids = tmp_path / "bids"
    subprocess.run(["cp", "-r", str(tiny_bids), str(bids)], check=True)
    bold = next((bids / "sub-02" / "func").glob("*_bold.nii.gz"))
    bold.write_bytes(bold.read_bytes()[: len(bold.read_bytes()) // 3])  # truncated: a data error
    out = tmp_path / "out"
    code, text = run_m2m(capsys, bids, out, "participant", "--participant-label", "01", "02", "--preset", "tiny",
                         "--skip-bids-validation", "--nprocs", "1")
    assert code == ExitCode.DATA_ERROR and no_traceback(text)
    run_id = next((out / "logs").glob("*/config.toml")).parent.name
    assert f"see sub-<id>/log/{run_id}/" in text
    errors = out / "sub-02" / "log" / run_id / "errors.log"
    assert errors.is_file() and bold.name in errors.read_text()
    assert not (out / "sub-01" / "log").exists(), "a participant that succeeded leaves no empty log folder"
    assert not list(out.glob(".*.lock")) and not list(out.glob("*.lock"))


def test_help_reads_well_at_80_columns() -> None:
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    result = subprocess.run([sys.executable, "-m", "m2m_bids", "--help"], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 0
    assert "…" not in result.stdout, "an option name or help text is cut"
    assert "<bool>" not in result.stdout
    for name in ("--participant-label", "--exclude-participant-label", "--skip-bids-validation",
                 "--allow-training-participants", "--stop-on-first-crash"):
        assert name in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


@pytest.mark.parametrize("alias, canonical", [("--participant_label", "--participant-label"),
                                              ("--session-id", "--session-label"), ("--n_cpus", "--nprocs"),
                                              ("--seed=3", "--random-seed=3")])
def test_aliases_are_rewritten_to_the_declared_option(alias: str, canonical: str) -> None:
    from m2m_bids.cli.argv import canonical_flags

    assert canonical_flags([alias, "x"]) == [canonical, "x"]
