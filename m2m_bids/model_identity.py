"""The identity of a trained model: ``model_id`` = a hash of its tensors and its card, canonically.

The hash of ``weights.safetensors`` as a file is not an identity: the file's header holds metadata
whose order is not fixed, so two bit-identical trainings can give different files. The identity
is therefore computed from what defines the model: every tensor (name, dtype, shape, bytes) in
sorted name order, and the model card as key-sorted JSON without the fields that name one
particular training run or file (:data:`RUN_SPECIFIC`). Identical retrains get the same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

#: The file of a torch model bundle (``models/model-<arch>/``) holding its card, beside ``weights.safetensors``.
CARD_FILE = "model-card.json"
#: Card fields that differ between identical retrains (when, which run, which file bytes).
RUN_SPECIFIC = frozenset({"created", "run_id", "weights", "model_id"})


def model_digest(state: Mapping[str, torch.Tensor], card: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the tensors in name order and the card's canonical JSON (see module docstring)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    stable = {k: v for k, v in card.items() if k not in RUN_SPECIFIC}
    digest.update(json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str).encode())
    return digest.hexdigest()
