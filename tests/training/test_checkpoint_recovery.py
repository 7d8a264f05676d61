"""``--resume`` never unpickles code and falls back to retraining a split whose checkpoint is unusable."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from m2m_bids.training import checkpoint as ckpt


class _Payload:
    """A pickle that would create a file when unpickled (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A real checkpoint of a small network (epoch 3) plus the split's best weights."""
    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    directory = tmp_path / "fold-1"
    ckpt.save_checkpoint(directory, 3, model, {"optimizer": opt.state_dict(), "scaler": {}, "history": [],
                                               "best": None, "best_epoch": 1})
    ckpt.save_weights(directory / "best.safetensors", model.state_dict())
    return directory


def _latest(directory: Path) -> dict:
    return json.loads((directory / ckpt.LATEST).read_text())


def test_good_checkpoint_loads(saved: Path) -> None:
    weights, state = ckpt.load_checkpoint(saved)
    assert set(weights) == {"weight", "bias"} and state["epoch"] == 3


def test_malicious_state_file_is_not_executed(saved: Path, tmp_path: Path, caplog) -> None:
    marker = tmp_path / "pwned"
    (saved / _latest(saved)["state"]).write_bytes(pickle.dumps({"epoch": _Payload(marker)}))
    with caplog.at_level(logging.WARNING):
        assert ckpt.load_checkpoint(saved) is None
    assert not marker.exists()
    assert "training this split again" in caplog.text and str(saved) in caplog.text


@pytest.mark.parametrize("damage", ["truncate-weights", "truncate-state", "remove-state", "remove-best",
                                    "bad-pointer", "escaping-pointer"])
def test_unusable_checkpoint_means_retrain(saved: Path, damage: str, caplog) -> None:
    info = _latest(saved)
    if damage == "truncate-weights":
        path = saved / info["weights"]
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "truncate-state":
        path = saved / info["state"]
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "remove-state":
        (saved / info["state"]).unlink()
    elif damage == "remove-best":
        (saved / "best.safetensors").write_bytes(b"")
    elif damage == "bad-pointer":
        (saved / ckpt.LATEST).write_text("{not json")
    else:
        (saved / ckpt.LATEST).write_text(json.dumps({**info, "state": "../../../etc/passwd"}))
    with caplog.at_level(logging.WARNING):
        assert ckpt.load_checkpoint(saved) is None
    assert "cannot be used" in caplog.text


def test_unreadable_finished_split_is_trained_again(saved: Path, caplog) -> None:
    from m2m_bids.training.splitrun import _read_finished

    (saved / "result.json").write_text(json.dumps({"best_epoch": 1, "history": []}))
    assert _read_finished(saved) is not None
    (saved / "best.safetensors").write_bytes(b"\x00" * 10)
    with caplog.at_level(logging.WARNING):
        assert _read_finished(saved) is None
    assert "training it again" in caplog.text
