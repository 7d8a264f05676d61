"""Fixtures for the training tests: one torch thread, a real tensor cache, a tiny RunConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from m2m_bids.config import Execution, ModelCfg, RunConfig, Train
from m2m_bids.preproc.cache import TensorCache


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread is ~10x faster than two under contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache(tmp_path: Path) -> TensorCache:
    return TensorCache(tmp_path / "cache")


@pytest.fixture
def make_config(tmp_path: Path):
    """Factory of tiny RunConfigs (``root``: folder for bids/out; ``train`` overrides Train fields)."""
    return lambda root=None, **train: tiny_config(root or tmp_path, **train)


def tiny_config(tmp_path: Path, **train: Any) -> RunConfig:
    """A CPU run of the tiny M2M model on 16^3 x 4-frame windows; ``train`` overrides Train fields."""
    values: dict[str, Any] = {"epochs": 10, "warmup_epochs": 1, "lr": 1e-3, "align_weight": 0.1,
                              "batch_size": 8, "num_workers": 0, "folds": 5, "samples_per_run": 2,
                              "tabular_columns": ["age", "sex"], "checkpoint_every": 2}
    values.update(train)
    return RunConfig(execution=Execution(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                                         analysis_level="group", device="cpu"),
                     model=ModelCfg(window_frames=4, overrides={"preset": "tiny"}),
                     train=Train(**values))
