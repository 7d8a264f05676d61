"""Fixtures for the baseline tests: one torch thread, a real tensor cache, tiny RunConfigs per arch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from m2m_bids.config import Execution, ModelCfg, Preproc, RunConfig, Train
from m2m_bids.preproc.cache import TensorCache


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread is much faster than two under contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache(tmp_path: Path) -> TensorCache:
    return TensorCache(tmp_path / "cache")


def arch_config(tmp_path: Path, arch: str, *, window_frames: int = 4, overrides: dict[str, Any] | None = None,
                **train: Any) -> RunConfig:
    """A CPU group run of ``arch`` (tiny model preset); ``train`` overrides Train fields."""
    values: dict[str, Any] = {"epochs": 8, "warmup_epochs": 1, "lr": 3e-3, "batch_size": 8, "num_workers": 0,
                              "folds": 3, "samples_per_run": 2, "tabular_columns": [], "checkpoint_every": 100}
    values.update(train)
    return RunConfig(execution=Execution(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                                         analysis_level="group", device="cpu"),
                     preproc=Preproc(resolution_mm=6.0, grid_shape=[16, 16, 16]),  # the planted grid
                     model=ModelCfg(arch=arch, window_frames=window_frames,
                                    overrides={"preset": "tiny", **(overrides or {})}),
                     train=Train(**values))
