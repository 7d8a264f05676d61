"""Same input + same settings + same seed -> byte-identical tensors, in fresh work dirs and caches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from helpers import rigid_matrix, tiny_config, write_description, write_participant  # noqa: E402

from m2m_bids.preproc.api import preprocess_participants  # noqa: E402


def _tensor_hashes(entry_dir: Path) -> dict[str, str]:
    manifest = json.loads((entry_dir / "manifest.json").read_text())
    return {name: info["sha256"] for name, info in manifest["tensors"].items()}


def test_two_runs_in_fresh_work_dirs_give_identical_tensors(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    write_description(bids)
    motion = np.zeros((12, 6))
    motion[6:, 0] = 1.5
    person = write_participant(bids, "01", t1_pull=rigid_matrix((4, -3, 2), (3, -2, 2)), n_volumes=12,
                               motion=motion)
    entries = []
    for attempt in ("a", "b"):
        cfg = tiny_config(bids, tmp_path / f"out-{attempt}", registration="affine",
                          execution={"work_dir": tmp_path / f"work-{attempt}", "random_seed": 7})
        (result,) = preprocess_participants([person], cfg)
        assert result.error is None, result.error
        entries.append(result.entries[0])
    first, second = entries
    assert first.key == second.key and first.path != second.path
    hashes = _tensor_hashes(first.path)
    assert {"fmri", "smri", "mask", "brain_mask", "gm", "alff", "falff", "bold_mean"} <= set(hashes)
    assert hashes == _tensor_hashes(second.path)
    assert first.meta.qc == second.meta.qc
