"""Control for the learning test: with permuted labels cross-validated ROC-AUC stays near chance."""

from __future__ import annotations

import numpy as np
from synth_cache import build_dataset

from m2m_bids.training.api import train_group


def test_shuffled_labels_stay_near_chance(cache, make_config):
    entries, phenotype = build_dataset(cache, n_per_class=16, effect=4.0, seed=0)
    rng = np.random.default_rng(7)
    phenotype["diagnosis"] = rng.permutation(phenotype["diagnosis"].to_numpy())
    cfg = make_config()
    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir)
    assert abs(result.summary["roc_auc"]["mean"] - 0.5) < 0.25, result.summary
