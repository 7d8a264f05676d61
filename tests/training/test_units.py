"""Splits, metrics, windows, samplers, augmentation, learning-rate schedule and checkpoints."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from synth_cache import build_dataset

from m2m_bids.exitcodes import AppError
from m2m_bids.model_inputs.windows import eval_starts
from m2m_bids.training import checkpoint as ckpt
from m2m_bids.training.augment import Augmenter, temporal_shift
from m2m_bids.training.data import (EpochSampler, ShardSampler, WindowDataset, aggregate_logits, class_weights,
                                    make_records)
from m2m_bids.training.loop import lr_at
from m2m_bids.training.metrics import classification_metrics, summarise
from m2m_bids.training.splits import make_splits


def test_subject_level_stratified_splits():
    y = pd.Series([i % 2 for i in range(23)], index=[f"{i:02d}" for i in range(23)])
    folds, final = make_splits(y, folds=5, val_fraction=0.2, seed=0)
    tested = [p for f in folds for p in f.test]
    assert sorted(tested) == sorted(y.index)  # each participant tested exactly once
    for fold in folds:
        assert not set(fold.train) & set(fold.val) and not set(fold.train + fold.val) & set(fold.test)
        assert set(fold.train + fold.val + fold.test) == set(y.index)
        assert {int(y[p]) for p in fold.val} == {0, 1}  # stratified validation split
        assert abs(sum(y[p] for p in fold.test) - len(fold.test) / 2) <= 1
    assert final.test == () and set(final.train + final.val) == set(y.index)
    assert make_splits(y, folds=5, val_fraction=0.2, seed=0) == (folds, final)  # reproducible
    with pytest.raises(AppError):
        make_splits(pd.Series([0, 0, 1], index=["a", "b", "c"]), folds=2, val_fraction=0.2, seed=0)


def test_binary_and_three_class_metrics():
    y = np.array([0, 0, 1, 1, 1])
    prob = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    m = classification_metrics(y, prob)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, prob[:, 1]))
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    y3 = np.array([0, 1, 2, 0, 1, 2])
    eye = np.eye(3)[y3] * 0.7 + 0.1
    m3 = classification_metrics(y3, eye)
    assert m3["roc_auc"] == 1.0 and m3["accuracy"] == 1.0 and m3["pr_auc"] == pytest.approx(1.0)
    s = summarise([m, m3, {**m, "roc_auc": float("nan")}])
    assert s["roc_auc"]["n"] == 2 and s["roc_auc"]["mean"] == pytest.approx((m["roc_auc"] + 1) / 2)
    assert s["accuracy"]["sd"] == pytest.approx(np.std([0.6, 1.0, 0.6], ddof=1))


def test_windows_cover_runs_and_logits_aggregate_per_participant(cache):
    assert eval_starts(10, 4, None) == [0, 4, 6]
    assert eval_starts(3, 4, None) == [0]
    assert eval_starts(40, 4, 3) == [0, 16, 36]  # evenly spaced among the 10 windows
    entries, _ = build_dataset(cache, n_per_class=2, frames=6, seed=5)  # sub-03 has two sessions
    tab = {p: np.array([float(i)], np.float32) for i, p in enumerate(["01", "02", "03", "04"])}
    records = make_records(entries, {"01": 0, "02": 1, "03": 0}, tab)
    assert [r.label for r in records] == [0, 1, 0, 0, -1]
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=False)
    assert len(ds) == 2 * len(records)  # starts 0 and 2
    item = ds[1]
    assert item["fmri"].shape == (1, 4, 16, 16, 16) and item["fmri"].dtype == torch.float16  # time-first
    assert item["smri"].shape == (1, 16, 16, 16, 1) and item["tabular"].shape == (1,)
    np.testing.assert_array_equal(item["fmri"][0].numpy(), np.moveaxis(entries[0].load("fmri")[..., 2:6], -1, 0))
    short = WindowDataset(records, frames=8, modalities=("fmri",), train=True)
    padded = short[0]["fmri"][0].numpy()
    np.testing.assert_array_equal(padded[6], padded[5])  # 6-frame run padded to 8
    logits = np.arange(12, dtype=float).reshape(6, 2)
    agg = aggregate_logits(np.array([0, 2, 3, 3, 2, 4]), logits, records)
    np.testing.assert_allclose(agg["03"], logits[[1, 2, 3, 4]].mean(0))  # both sessions, all windows
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [2 / 3, 2.0])


def test_epoch_sampler_shards_and_balances():
    ranks = [list(EpochSampler(10, rank=r, world=2, seed=1)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 5 and sorted(ranks[0] + ranks[1]) == list(range(10))
    sampler = EpochSampler(7, rank=0, world=2, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(first) == 4
    weights = np.array([1.0] * 9 + [9.0])
    drawn = list(EpochSampler(10, seed=0, weights=weights))
    assert drawn.count(9) >= 2
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sum(shards, []) == list(range(7))


def test_augmentation_keeps_shapes_and_is_seeded():
    rng = np.random.default_rng(0)
    sample = {"fmri": rng.normal(size=(1, 8, 8, 8, 5)).astype(np.float16),
              "smri": rng.normal(size=(1, 8, 8, 8, 1)).astype(np.float16)}
    aug = Augmenter()
    torch.manual_seed(3)
    a = aug(sample)
    torch.manual_seed(3)
    b = aug(sample)
    assert a["fmri"].shape == (1, 8, 8, 8, 5) and a["smri"].shape == (1, 8, 8, 8, 1)
    np.testing.assert_array_equal(a["fmri"], b["fmri"])
    assert not np.allclose(a["fmri"], sample["fmri"].astype(np.float32))
    x = np.arange(5.0)[None]
    np.testing.assert_array_equal(temporal_shift(x, 2), [[0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(temporal_shift(x, -1), [[1, 2, 3, 4, 4]])


def test_warmup_then_cosine():
    values = [lr_at(s, base_lr=1e-3, warmup_steps=4, total_steps=20) for s in range(20)]
    assert values[0] == pytest.approx(2.5e-4) and values[3] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(values[3:], values[4:], strict=False)) and values[-1] < 2e-5
    assert lr_at(12, base_lr=1e-3, warmup_steps=4, total_steps=20) == pytest.approx(5e-4)


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    loop_state = {"scaler": {}, "best": None, "best_epoch": -1}  # what the training loop also saves
    ckpt.save_checkpoint(tmp_path, 1, model, {"optimizer": opt.state_dict(), "history": [{"loss": 1.0}], **loop_state})
    ckpt.save_checkpoint(tmp_path, 3, model, {"optimizer": opt.state_dict(), "history": [{"loss": 0.5}], **loop_state})
    expected = (torch.rand(2), np.random.rand(), random.random())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-e0003.safetensors", "ckpt-e0003.state.pt",
                                                          "latest.json"]
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 3
    weights, state = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(weights["weight"], model.weight.detach())
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(state["optimizer"])
    assert state["epoch"] == 3 and state["history"] == [{"loss": 0.5}]
    ckpt.set_rng_state(state["rng"])
    assert torch.equal(torch.rand(2), expected[0])
    assert np.random.rand() == expected[1] and random.random() == expected[2]
    assert ckpt.load_checkpoint(tmp_path / "none") is None
