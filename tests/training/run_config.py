"""A tiny CPU RunConfig for the training tests (a module, not conftest, so any test file can import it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m2m_bids.config import Execution, ModelCfg, RunConfig, Train


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
