"""Run by ``torchrun --nproc_per_node 2`` from test_ddp.py: one rank of a group training job (gloo, CPU)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist

from m2m_bids.config import Execution, ModelCfg, RunConfig, Train
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.training.api import train_group


def main(root: Path) -> None:
    torch.set_num_threads(1)
    job = json.loads((root / "job.json").read_text())
    cache = TensorCache(root / "cache")
    entries = [cache.get(key) for key in job["keys"]]
    phenotype = pd.read_csv(root / "participants.tsv", sep="\t", dtype={"participant": str}).set_index("participant")
    cfg = RunConfig(execution=Execution(bids_dir=root / "bids", output_dir=root / "out", analysis_level="group",
                                        device="cpu"),
                    model=ModelCfg(window_frames=4, overrides={"preset": "tiny"}),
                    train=Train(folds=2, epochs=2, warmup_epochs=1, batch_size=8, num_workers=0,
                                tabular_columns=["age", "sex"]))
    worlds: list[int] = []
    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir,
                         on_epoch_end=lambda split, stats: worlds.append(dist.get_world_size()))
    rank = int(os.environ["RANK"])
    result.oof.to_csv(root / f"oof-rank{rank}.tsv", sep="\t", index=False)
    (root / f"worlds-rank{rank}.json").write_text(json.dumps(worlds))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
