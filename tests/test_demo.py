"""The README's first command, ``m2m-demo DIR``, end to end at a reduced size, through its console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def test_readme_demo_runs_end_to_end_and_writes_what_it_promises(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    script = shutil.which("m2m-demo")
    command = [script] if script else [sys.executable, "-m", "m2m_bids.demo"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, str(out), "--n-participants", "10", "--held-out", "2", "--epochs", "2",
                             "--folds", "2"],
                            capture_output=True, text=True, env=env, timeout=900, check=False)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed[-4000:]
    assert "Traceback" not in printed
    derivatives = out / "derivatives"
    for path in ("group.html", "group/metrics.json", "group/oof-predictions.tsv", "predictions.tsv",
                 "models/model-m2m/model-card.json", "models/model-m2m/weights.safetensors",
                 "dataset_description.json"):
        assert (derivatives / path).is_file(), path
    held_out = ["sub-09", "sub-10"]
    for label in held_out:
        assert (derivatives / f"{label}.html").is_file()
        assert list((derivatives / label / "anat").glob("*stat-attention*_statmap.nii.gz"))
    predictions = pd.read_csv(derivatives / "predictions.tsv", sep="\t")
    assert sorted(predictions["participant_id"]) == held_out
    assert not predictions["in_training_set"].any()
    # what the demo prints: the commands, the numbers and what they mean, where to look
    assert "$ m2m " in printed and "Cross-validated ROC-AUC of M2M-AlignNet" in printed
    assert "0.5 is chance" in printed and "predicted right" in printed
    assert str(derivatives / "group.html") in printed
