"""A tiny M2M-AlignNet trained on planted-atrophy data, its bundle, held-out cache entries and a config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from m2m_bids.config import Preset, RunConfig
from m2m_bids.preflight import build_config

from .synthetic import make_entries, tiny_model, train, write_bids_atlas, write_bundle

FRAMES = 4
TRAIN_LABELS = {f"{i:02d}": i % 2 for i in range(1, 25)}  # odd = AD
TEST_LABELS = {"31": 1, "32": 0, "33": 1}


@dataclass
class Trained:
    root: Path
    bundle: Path
    train_entries: list[Any]
    test_entries: list[Any]
    train_accuracy: float
    atlas: Path

    def config(self, **sections: Any) -> RunConfig:
        values = {"execution": {"bids_dir": str(self.root / "bids"), "output_dir": str(self.root / "out"),
                                "analysis_level": "participant", "device": "cpu",
                                **sections.pop("execution", {})},
                  "interpret": {"atlas": f"Blocks={self.atlas}", **sections.pop("interpret", {})}, **sections}
        return build_config(values, preset=Preset.tiny)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    torch.set_num_threads(1)  # as tests/conftest.py: CI runs two workers on two cores
    root = tmp_path_factory.mktemp("apply")
    bids = root / "bids"
    bids.mkdir()
    table = pd.DataFrame({"participant_id": [f"sub-{p}" for p in [*TRAIN_LABELS, *TEST_LABELS]],
                          "diagnosis": [["CN", "AD"][v] for v in [*TRAIN_LABELS.values(), *TEST_LABELS.values()]]})
    table.to_csv(bids / "participants.tsv", sep="\t", index=False)
    trained = Trained(root, root, [], [], 0.0, write_bids_atlas(root / "atlas"))
    preproc = trained.config().preproc.model_dump(mode="json")
    trained.train_entries = make_entries(root / "cache", TRAIN_LABELS, FRAMES, seed=0, preproc=preproc)
    model = tiny_model(FRAMES)
    trained.train_accuracy = train(model, trained.train_entries, list(TRAIN_LABELS.values()), steps=150)
    trained.bundle = write_bundle(model, root / "out" / "models" / "model-m2m",
                                  train_participants=list(TRAIN_LABELS), preproc=preproc)
    trained.test_entries = make_entries(root / "cache", TEST_LABELS, 3 * FRAMES, seed=1, preproc=preproc)
    return trained
