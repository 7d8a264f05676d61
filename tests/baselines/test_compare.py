"""benchmarks/compare.py end to end on a small synthetic dataset: one table row per arch, same folds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


def test_compare_writes_one_row_per_arch_over_identical_folds(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("compare", COMPARE)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)  # type: ignore[union-attr]
    archs = ["cnn3d", "connectome-svc"]
    compare.main([str(tmp_path), "--n-participants", "8", "--folds", "2", "--epochs", "2", "--archs", *archs,
                  "--train-seeds", "0", "1", "--threads", "1"])

    table = pd.read_csv(tmp_path / "compare.tsv", sep="\t")
    assert list(table["arch"]) == archs
    assert table["roc_auc_mean"].between(0, 1).all() and (table["params"] > 0).all()
    assert (tmp_path / "compare.md").read_text().count("| `") == 2 and (tmp_path / "compare.svg").is_file()
    folds = [pd.read_csv(tmp_path / "runs" / a / "group" / "oof-predictions.tsv", sep="\t")
             .set_index("participant_id")["split"].sort_index() for a in archs]
    assert len(folds[0]) == 8 and folds[0].equals(folds[1])  # the same test participants per fold for every arch

    # a second training seed on the same data (its own run), and the row is the mean over the seeds
    seed_means = [float(v) for v in table.loc[0, "roc_auc_seed_means"].split()]
    assert (table["seeds"] == 2).all() and len(seed_means) == 2
    assert table.loc[0, "roc_auc_mean"] == pytest.approx(sum(seed_means) / 2, abs=1e-4)
    card = json.loads((tmp_path / "runs" / "cnn3d-seed1" / "models" / "model-cnn3d" / "model-card.json").read_text())
    assert card["seeds"]["random_seed"] == 1
