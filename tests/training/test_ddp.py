"""``torchrun --nproc_per_node 2`` trains with DDP on gloo (CPU): both ranks agree, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synth_cache import build_dataset


@pytest.mark.ddp
def test_torchrun_two_cpu_ranks(cache, tmp_path):
    entries, phenotype = build_dataset(cache, n_per_class=5, effect=3.0, seed=4)
    root = cache.root.parent
    (root / "job.json").write_text(json.dumps({"keys": [e.key for e in entries]}))
    phenotype.rename_axis("participant").to_csv(root / "participants.tsv", sep="\t")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(root)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((root / "worlds-rank0.json").read_text()) == [2] * 6  # 3 splits x 2 epochs, world of 2
    oof = [pd.read_csv(root / f"oof-rank{r}.tsv", sep="\t") for r in (0, 1)]
    pd.testing.assert_frame_equal(oof[0], oof[1])  # predictions gathered from both shards, same on both ranks
    assert len(oof[0]) == len(phenotype)
    out = root / "out"
    assert (out / "models" / "model-m2m" / "weights.safetensors").is_file()
    assert json.loads((out / "logs" / "status.json").read_text())["state"] == "done"
