"""An interrupted group run resumes from its checkpoints and ends where an uninterrupted run ends."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from synth_cache import build_dataset

from m2m_bids.training.api import train_group


class Interrupted(RuntimeError):
    """Stands for a job killed by the scheduler in the middle of a split."""


def test_resume_after_interruption_matches_uninterrupted_run(cache, make_config, tmp_path):
    entries, phenotype = build_dataset(cache, n_per_class=5, effect=3.0, seed=3)
    settings = {"folds": 2, "epochs": 4, "checkpoint_every": 2}
    reference_cfg = make_config(root=tmp_path / "reference", **settings)
    reference = train_group(entries, phenotype, reference_cfg, reference_cfg.execution.output_dir)

    cfg = make_config(root=tmp_path / "interrupted", **settings)
    seen: list[tuple[str, int]] = []

    def kill_in_fold_2(split: str, stats: dict) -> None:
        seen.append((split, int(stats["epoch"])))
        if split == "fold-2" and stats["epoch"] == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_group(entries, phenotype, cfg, cfg.execution.output_dir, on_epoch_end=kill_in_fold_2)
    status = json.loads((cfg.execution.output_dir / "logs" / "status.json").read_text())
    assert status["state"] == "failed"
    run_dir = next((cfg.execution.resolved_work_dir / "train").iterdir())
    assert (run_dir / "fold-1" / "result.json").is_file()
    assert json.loads((run_dir / "fold-2" / "latest.json").read_text())["epoch"] == 1  # epochs 1-2 saved

    resumed_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": True})})
    seen.clear()
    resumed = train_group(entries, phenotype, resumed_cfg, cfg.execution.output_dir,
                          on_epoch_end=lambda split, stats: seen.append((split, int(stats["epoch"]))))
    # fold-1 is reused, fold-2 continues after its epoch-2 checkpoint, the final model runs in full
    assert seen == [("fold-2", 3), ("fold-2", 4)] + [("final", e) for e in range(1, 5)]
    merged = reference.oof.merge(resumed.oof, on=["participant_id", "split"], suffixes=("_ref", "_res"))
    assert len(merged) == len(reference.oof)
    np.testing.assert_allclose(merged["prob_AD_ref"], merged["prob_AD_res"], atol=1e-5)
    for fold, metrics in reference.per_fold.items():
        for name, value in metrics.items():
            assert resumed.per_fold[fold][name] == pytest.approx(value, abs=1e-6, nan_ok=True)
    bundle = "models/model-m2m/weights.safetensors"
    ref_w = load_file(str(reference_cfg.execution.output_dir / bundle))
    res_w = load_file(str(cfg.execution.output_dir / bundle))
    assert all(np.allclose(ref_w[k].numpy(), res_w[k].numpy(), atol=1e-6) for k in ref_w)
