"""Crash-safe checkpoints: weights in safetensors, the rest in a ``weights_only``-loadable file.

A checkpoint of epoch ``e`` is two files, ``ckpt-e<e>.safetensors`` (model weights) and
``ckpt-e<e>.state.pt`` (optimizer, scaler, epoch, RNG states, training history: tensors and plain
Python values only, so ``torch.load(weights_only=True)`` reads it without unpickling code), written
atomically, then ``latest.json`` is atomically pointed at them, then older checkpoints are deleted.
A job killed at any moment leaves the previous checkpoint intact.

Reading one back trusts nothing: the state file is read with ``weights_only=True`` (a crafted
pickle cannot run code), and a checkpoint that is missing, truncated, corrupt or malicious is
reported as a warning naming the file, and the split is trained again from its first epoch, which
gives the same result as resuming would have (only later).
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from m2m_bids.io_utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

LATEST = "latest.json"

#: What a resumed training loop reads from a checkpoint's state (the loop's own entries, epoch, RNG).
RESUME_KEYS = frozenset({"optimizer", "scaler", "history", "best", "best_epoch", "epoch", "rng"})


def write_weights(target: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors to ``target`` (tensors copied to CPU, shared storage split);
    the caller makes it atomic (:func:`save_weights` here, the derivatives sink for a model bundle)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(target), metadata=metadata)


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict as safetensors atomically (a checkpoint in the work dir)."""
    with atomic_path(path) as tmp:
        write_weights(tmp, state, metadata)
    return path


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors state dict."""
    return load_file(str(path), device=str(device))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) generator states as weights_only-safe values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, epoch: int, model: nn.Module, state: dict[str, Any]) -> Path:
    """Save the (unwrapped) model and ``state`` for ``epoch``; returns the state file path.

    ``state`` holds the optimizer/scaler state dicts and loop bookkeeping; the RNG states are
    added here so the resumed run draws the same windows and augmentations.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"ckpt-e{epoch:04d}"
    save_weights(directory / f"{stem}.safetensors", model.state_dict())
    state_path = directory / f"{stem}.state.pt"
    with atomic_path(state_path) as tmp:
        torch.save({**state, "epoch": epoch, "rng": rng_state()}, tmp)
    write_json_atomic(directory / LATEST, {"epoch": epoch, "weights": f"{stem}.safetensors",
                                           "state": f"{stem}.state.pt"})
    for old in directory.glob("ckpt-e*"):
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    return state_path


def load_checkpoint(directory: Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The latest checkpoint in ``directory`` as ``(model weights, state)``, or ``None`` if there is none.

    Also ``None`` (with a warning naming the file) when the checkpoint cannot be read safely: the
    caller then trains the split from the start. ``best.safetensors``, which a resumed run reads
    next, is checked here too.
    """
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    try:
        info = json.loads(pointer.read_text(encoding="utf-8"))
        state_file = _checkpoint_file(directory, info["state"])
        weights = load_weights(_checkpoint_file(directory, info["weights"]), device)
        with warnings.catch_warnings():  # torch's notes on foreign pickles would reach the console
            warnings.simplefilter("ignore")
            state = torch.load(state_file, map_location=device, weights_only=True)
        if not isinstance(state, dict) or not RESUME_KEYS <= set(state):
            raise ValueError(f"{state_file.name} lacks part of the training state ({sorted(RESUME_KEYS)})")
        if (directory / "best.safetensors").exists():
            load_weights(directory / "best.safetensors", "cpu")
    except pickle.UnpicklingError:
        log.warning("the checkpoint in %s holds objects other than tensors and plain values, which are never "
                    "loaded; training this split again from the first epoch", directory)
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint means "start this split again"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        log.warning("the checkpoint in %s cannot be used (%s: %s); training this split again from the "
                    "first epoch", directory, type(err).__name__, reason)
        return None
    log.info("resuming from %s (epoch %d)", directory, info["epoch"])
    return weights, state


def _checkpoint_file(directory: Path, name: Any) -> Path:
    """A file named in ``latest.json``: a plain name inside ``directory``, nothing else."""
    if not isinstance(name, str) or Path(name).name != name or name in {"", ".", ".."}:
        raise ValueError(f"latest.json names {str(name)[:80]!r}, not a checkpoint file")
    return directory / name
