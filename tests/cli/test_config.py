"""RunConfig: defaults from the paper, override order, TOML/YAML round trip, path rules, seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from m2m_bids.config import PRESETS, Preset, RunConfig, seed_everything
from m2m_bids.preflight import build_config
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.runner import save_snapshot


def _cli(tmp_path: Path, **execution) -> dict:
    (tmp_path / "bids").mkdir(exist_ok=True)
    base = {"bids_dir": str(tmp_path / "bids"), "output_dir": str(tmp_path / "out"), "analysis_level": "group"}
    base.update(execution)
    return {"execution": base}


def test_defaults_are_the_papers(tmp_path: Path) -> None:
    cfg = build_config(_cli(tmp_path))
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.folds) == (1e-3, 100, 20, 5)
    assert (cfg.preproc.resolution_mm, cfg.preproc.fwhm_mm) == (3.0, 6.0)
    assert cfg.model.arch == "m2m"
    assert cfg.execution.resolved_work_dir == tmp_path / "out" / "work"
    assert cfg.execution.resolved_cache_dir == tmp_path / "out" / "work" / "tensor-cache"


def test_override_order_defaults_preset_file_cli(tmp_path: Path) -> None:
    config_file = tmp_path / "cfg.toml"
    config_file.write_text('preset = "tiny"\n[train]\nepochs = 7\nlr = 0.5\n[preproc]\nfwhm_mm = 4.0\n')
    cli = _cli(tmp_path)
    cli["train"] = {"lr": 0.25}
    cfg = build_config(cli, config_file=config_file)
    assert cfg.preset is Preset.tiny
    assert cfg.train.epochs == 7                      # file beats preset (tiny says 4)
    assert cfg.train.lr == 0.25                       # command line beats file
    assert cfg.preproc.fwhm_mm == 4.0                 # file beats default
    assert cfg.preproc.grid_shape == tuple(PRESETS[Preset.tiny]["preproc"]["grid_shape"])  # preset beats default
    assert cfg.train.folds == PRESETS[Preset.tiny]["train"]["folds"]


def test_cli_preset_beats_file_preset(tmp_path: Path) -> None:
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text(yaml.safe_dump({"preset": "tiny"}))
    cfg = build_config(_cli(tmp_path), config_file=config_file, preset=Preset.fast)
    assert cfg.preset is Preset.fast and cfg.train.epochs == 30


def test_toml_round_trip_and_snapshot(tmp_path: Path) -> None:
    cli = _cli(tmp_path, participant_label=["sub-01", "02"], bids_filters={"bold": {"task": "rest", "echo": None}})
    cli["train"] = {"classes": ["CN", "MCI", "AD"], "label_rule": "ttau / abeta42 > 0.24"}
    cfg = build_config(cli)
    snapshot = save_snapshot(cfg)
    assert snapshot == tmp_path / "out" / "logs" / cfg.run_id / "config.toml"
    again = RunConfig.from_file(snapshot)
    assert again == cfg                                # null filter values survive TOML too
    reused = build_config(_cli(tmp_path), config_file=snapshot)
    assert reused.run_id != cfg.run_id                 # run_id is never reused
    assert reused.train.classes == ["CN", "MCI", "AD"]


def test_yaml_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("train:\n  folds: 3\nmodel:\n  arch: swift-lf\n")
    cfg = build_config(_cli(tmp_path), config_file=path)
    assert (cfg.train.folds, cfg.model.arch) == (3, "swift-lf")


@pytest.mark.parametrize("content, code", [
    ("[train]\nno_such_option = 1\n", ExitCode.USAGE),
    ("[train]\nfolds = 1\n", ExitCode.USAGE),
    ("this is = = not toml", ExitCode.USAGE),
])
def test_bad_config_files(tmp_path: Path, content: str, code: ExitCode) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(AppError) as err:
        build_config(_cli(tmp_path), config_file=path)
    assert err.value.code is code


def test_output_dir_rules(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    with pytest.raises(AppError, match="BIDS dataset itself"):
        build_config(_cli(tmp_path, output_dir=str(bids)))
    with pytest.raises(AppError, match="derivatives"):
        build_config(_cli(tmp_path, output_dir=str(bids / "out")))
    cfg = build_config(_cli(tmp_path, output_dir=str(bids / "derivatives" / "m2m")))
    assert cfg.execution.output_dir == bids / "derivatives" / "m2m"
    with pytest.raises(AppError, match="work directory"):
        build_config(_cli(tmp_path, work_dir=str(bids / "work")))


def test_labels_lose_their_prefixes(tmp_path: Path) -> None:
    cfg = build_config(_cli(tmp_path, participant_label=["sub-01", "02"], exclude_participant_label=["sub-03"],
                            session_label=["ses-a"], task=["task-rest"]))
    ex = cfg.execution
    assert (ex.participant_label, ex.exclude_participant_label, ex.session_label, ex.task) == (
        ["01", "02"], ["03"], ["a"], ["rest"])


def test_device_is_validated(tmp_path: Path) -> None:
    assert build_config(_cli(tmp_path, device="cuda:1")).execution.device == "cuda:1"
    with pytest.raises(AppError):
        build_config(_cli(tmp_path, device="tpu"))


def test_one_seed_seeds_everything() -> None:
    seed_everything(123)
    first = (np.random.rand(), torch.rand(1).item())
    seed_everything(123)
    assert (np.random.rand(), torch.rand(1).item()) == first
