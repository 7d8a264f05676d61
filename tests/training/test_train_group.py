"""End to end on a synthetic cached dataset: it learns a planted signal, not shuffled labels; outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from synth_cache import build_dataset

from m2m_bids.models import create_model
from m2m_bids.training.api import train_group


def test_planted_signal_is_learned_and_outputs_are_complete(cache, make_config, tmp_path):
    entries, phenotype = build_dataset(cache, n_per_class=16, effect=4.0, seed=0)
    phenotype.loc["05", "diagnosis"] = np.nan  # unusable label: reported, left out, still predictable
    cfg = make_config()
    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir)

    assert result.summary["roc_auc"]["mean"] >= 0.9, result.summary
    assert result.excluded == {"05": "label missing or rule inputs missing"}
    out = cfg.execution.output_dir
    oof = pd.read_csv(out / "group" / "oof-predictions.tsv", sep="\t")
    assert sorted(oof["participant_id"]) == sorted(f"sub-{p}" for p in phenotype.index if p != "05")
    assert np.allclose(oof[["prob_CN", "prob_AD"]].sum(axis=1), 1.0)
    table = pd.read_csv(out / "group" / "metrics.tsv", sep="\t")
    assert list(table["split"]) == [f"fold-{k}" for k in range(1, 6)] + ["mean", "sd"]
    assert {"roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1"} <= set(table)
    for name in ("roc.svg", "pr.svg", "training-curves.svg"):
        assert (out / "group" / "figures" / name).stat().st_size > 1000
    assert json.loads((out / "logs" / "status.json").read_text())["state"] == "done"
    metrics = json.loads((out / "group" / "metrics.json").read_text())
    # 2-3 validation participants per class: the epoch is not chosen by their AUC but is the last one
    assert set(metrics["epoch_selection"].values()) == {"last"}
    assert set(metrics["best_epoch"].values()) == {cfg.train.epochs}

    card = json.loads((out / "models" / "model-m2m" / "model-card.json").read_text())
    assert card["classes"] == ["CN", "AD"] and card["positive_class"] == "AD"
    assert card["tabular"]["columns"] == ["age", "sex"]
    assert card["tabular"]["numeric"]["age"]["std"] > 0
    assert card["preproc"]["grid_shape"] == [64, 64, 64] and card["cache"]["param_hashes"] == ["synthetic"]
    assert card["cache"]["params"] == {"grid_shape": [16, 16, 16]} and len(card["cache"]["keys"]) == len(entries)
    folds = card["splits"]["folds"]
    tested = [p for f in folds for p in f["test"]]
    assert sorted(tested) == sorted(p for p in phenotype.index if p != "05")  # every labelled one tested once
    assert "05" in card["excluded"] and card["versions"]["torch"]
    assert card["final_model"]["epoch_selection"] == "last" and card["train"]["epoch_selection"] == "auto"
    weights = load_file(str(out / "models" / "model-m2m" / "weights.safetensors"))
    model = create_model(**card["model"]["config"])
    model.load_state_dict(weights)  # the card rebuilds the exact architecture


def test_three_classes_one_vs_rest(cache, make_config):
    entries, phenotype = build_dataset(cache, n_per_class=6, effect=3.0, seed=1)
    phenotype["diagnosis"] = [["CN", "MCI", "AD"][i % 3] for i in range(len(phenotype))]
    cfg = make_config(classes=["CN", "MCI", "AD"], folds=2, epochs=2, tabular_columns=[], augment=True,
                      class_balance="sampler", num_workers=1)  # also the augmentation + worker paths
    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir)
    assert set(result.oof.columns) >= {"prob_CN", "prob_MCI", "prob_AD"}
    assert 0.0 <= result.summary["roc_auc"]["mean"] <= 1.0
    card = json.loads((cfg.execution.output_dir / "models" / "model-m2m" / "model-card.json").read_text())
    assert card["model"]["config"]["num_classes"] == 3 and card["positive_class"] is None


def test_too_few_participants_for_the_folds_is_a_data_error(cache, make_config):
    from m2m_bids.exitcodes import AppError, ExitCode

    entries, phenotype = build_dataset(cache, n_per_class=2, seed=2)
    cfg = make_config(folds=5)
    with pytest.raises(AppError) as err:
        train_group(entries, phenotype, cfg, cfg.execution.output_dir)
    assert err.value.code is ExitCode.DATA_ERROR and "lower --folds" in err.value.render()
