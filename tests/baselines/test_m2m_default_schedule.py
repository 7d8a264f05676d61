"""M2M-AlignNet learns at its default alignment schedule (small planted run, CPU)."""

from __future__ import annotations

import json

from planted import arch_config, build_planted

from m2m_bids.training.api import train_group


def run_m2m(cache, tmp_path, **train):
    """CV ROC-AUC and the final split's history of ``--arch m2m`` on hippocampal atrophy alone."""
    entries, phenotype = build_planted(cache, n_per_class=10, frames=8, atrophy=2.0, seed=4)
    cfg = arch_config(tmp_path, "m2m", epochs=10, lr=1e-3, **train)
    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir)
    card = json.loads((cfg.execution.output_dir / "models" / "model-m2m" / "model-card.json").read_text())
    return result.summary["roc_auc"]["mean"], card


def test_default_schedule_learns_where_the_paper_weight_does_not_yet(cache, tmp_path):
    """The defaults (weight 0.1 reached by a ramp) learn the sMRI effect in 10 epochs, at least as well
    as the paper's weight 1 from the first step (whose alignment gradient slows the classifier)."""
    auc, card = run_m2m(cache, tmp_path / "default")
    assert card["train"]["align_weight"] == 0.1 and card["train"]["align_ramp"] == 0.5
    assert auc >= 0.8, auc  # measured 0.89 (paper weight: 0.66 before the self-weights of the M2M loss
    # were computed on the raw latents, 0.81 since)
    paper_auc, _ = run_m2m(cache, tmp_path / "paper", align_weight=1.0, align_ramp=0.0)
    assert paper_auc <= auc, (paper_auc, auc)
