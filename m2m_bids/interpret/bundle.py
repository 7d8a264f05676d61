"""Load a model bundle (``models/model-<arch>/``) for application, and refuse data it was not made for.

A bundle is ``weights.safetensors`` + ``model-card.json`` (written by
:func:`m2m_bids.training.outputs.write_bundle`). Nothing is unpickled: the network is rebuilt from
the card's ``model.config`` with :func:`m2m_bids.model_inputs.atlas.build_model` and the tensors are read from
safetensors. Before any tensor is used the bundle is verified, and every failure is exit 65 with
the file named: the card must give the weights' SHA-256 (a card without one is refused, not
trusted), ``weights.file`` must be a file name inside the bundle folder (no ``../x`` or
``/etc/passwd``), the file must match the checksum, and the card's classes must match the
network's outputs.

Two checks protect the user from numbers that look right and are not:

* preprocessing: a model trained on 3 mm, 6 mm-smoothed tensors says nothing reliable about 2 mm
  unsmoothed ones. Every preprocessing parameter that changes the tensors must match (exit 65).
* leakage: a participant the final model was trained on gets an optimistic prediction; applying to
  one is refused (exit 65) unless ``allow_training_participants`` is set, and then flagged in the
  outputs (``in_training_set``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from m2m_bids.config import ACCEPTANCE_ONLY
from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.model_identity import CARD_FILE, model_digest
from m2m_bids.model_inputs.atlas import build_model

log = logging.getLogger(__name__)

#: Preprocessing fields that do not change the cached tensors (only which runs are accepted).
PREPROC_IGNORED = frozenset({"min_volumes"}) | ACCEPTANCE_ONLY


class CardBacked:
    """What every bundle reads from its card (torch ``model-card.json`` or ``classical-model.json``).

    Subclasses are dataclasses with ``path`` (the bundle folder) and ``card`` (the parsed JSON) and
    set ``card_file``.
    """

    path: Path
    card: dict[str, Any]
    card_file: str

    @property
    def card_path(self) -> Path:
        return self.path / self.card_file

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.card["classes"]]

    @property
    def training_participants(self) -> set[str]:
        """Participants whose data trained the final model (its train and validation sets)."""
        return training_participants(self.card)

    @property
    def preproc(self) -> dict[str, Any]:
        return dict(self.card.get("preproc") or {})


@dataclass
class Bundle(CardBacked):
    """A loaded model with its card."""

    path: Path
    card: dict[str, Any]
    model: nn.Module
    card_file = CARD_FILE

    @property
    def arch(self) -> str:
        return str(self.card.get("arch", self.model.config.arch))  # type: ignore[attr-defined]

    @cached_property
    def model_id(self) -> str:
        """``<arch>@<first 12 hex of the tensors-and-card hash>`` (:mod:`m2m_bids.model_identity`)."""
        return f"{self.arch}@{model_digest(self.model.state_dict(), self.card)[:12]}"


class TrainedOn(Protocol):
    """What the leakage check needs of a bundle (torch :class:`Bundle` or a classical model)."""

    @property
    def card_path(self) -> Path: ...

    @property
    def training_participants(self) -> set[str]: ...


def training_participants(card: dict[str, Any]) -> set[str]:
    """Participants of a card's final split (train + validation): their predictions would be optimistic."""
    final = (card.get("splits") or {}).get("final") or {}
    ids = list(final.get("train", [])) + list(final.get("val", []))
    return {strip_prefix(str(p), "sub") for p in ids}


def read_card(bundle_dir: Path) -> dict[str, Any]:
    """The parsed model card, with a clear error when it is missing or broken."""
    path = Path(bundle_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise AppError("the model bundle has no model-card.json", ExitCode.NO_INPUT, path=str(path),
                       hint="point --model at a models/model-<arch>/ folder written by the group level") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AppError(f"model-card.json is not valid UTF-8 JSON ({err})", ExitCode.DATA_ERROR, path=str(path),
                       hint="re-run the group level to rewrite the bundle") from None
    if not isinstance(card, dict):
        raise AppError("model-card.json does not hold a JSON object", ExitCode.DATA_ERROR, path=str(path),
                       hint="re-run the group level to rewrite the bundle")
    for key in ("model", "classes", "weights"):
        if key not in card:
            raise AppError(f"model-card.json lacks the {key!r} entry", ExitCode.DATA_ERROR, path=str(path),
                           hint="the bundle was written by an incompatible version; retrain it")
    return card


def verified_weights(bundle_dir: Path, card: dict[str, Any]) -> Path:
    """The weights file named by the card, confined to the bundle folder and matching its SHA-256."""
    card_path = Path(bundle_dir) / CARD_FILE
    entry = card["weights"] if isinstance(card["weights"], dict) else {}
    name, expected = entry.get("file", "weights.safetensors"), entry.get("sha256")
    if not isinstance(name, str) or name in {"", ".", ".."} or Path(name).name != name:
        raise AppError(f"weights.file in model-card.json must be a file name inside the bundle folder, "
                       f"not {str(name)[:80]!r}", ExitCode.DATA_ERROR, path=str(card_path),
                       hint="the card was edited; restore the bundle written by the group level")
    weights = Path(bundle_dir) / name
    if weights.resolve().parent != Path(bundle_dir).resolve():
        raise AppError("the weights file links outside the model bundle", ExitCode.DATA_ERROR, path=str(weights),
                       hint="copy the real file into the bundle folder instead of a symbolic link")
    if not isinstance(expected, str) or len(expected) != 64:
        raise AppError("model-card.json gives no SHA-256 for the weights, so they cannot be verified",
                       ExitCode.DATA_ERROR, path=str(card_path),
                       hint="use the complete bundle written by the group level (its card has weights.sha256)")
    if not weights.is_file():
        raise AppError("the model bundle has no weights file", ExitCode.NO_INPUT, path=str(weights),
                       hint="copy the whole models/model-<arch>/ folder")
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        raise AppError("the weights do not match the checksum in model-card.json", ExitCode.DATA_ERROR,
                       path=str(weights), hint="the file is corrupt or from another bundle; copy it again")
    return weights


def load_bundle(bundle_dir: Path, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild the network from the card and load its verified weights (every failure: exit 65)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file


    bundle_dir = Path(bundle_dir)
    card = read_card(bundle_dir)
    weights = verified_weights(bundle_dir, card)
    card_path = bundle_dir / CARD_FILE
    model_entry = card["model"] if isinstance(card["model"], dict) else {}
    config = dict(model_entry.get("config", model_entry))
    try:
        model = build_model(**config)
    except (TypeError, ValueError, KeyError) as err:
        raise AppError(f"the card's model.config cannot build a network: {err}", ExitCode.DATA_ERROR,
                       path=str(card_path), hint="retrain the bundle with this version of m2m-bids") from None
    n_classes = len(card["classes"]) if isinstance(card["classes"], list) else 0
    n_outputs = int(getattr(model.config, "num_classes", n_classes))
    if n_classes != n_outputs:
        raise AppError(f"model-card.json lists {n_classes} classes for a network with {n_outputs} "
                       "outputs", ExitCode.DATA_ERROR, path=str(card_path),
                       hint="the card was edited or belongs to another bundle; restore the original card")
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except (RuntimeError, ValueError, TypeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise AppError(f"the weights do not fit the architecture in the card: {first}", ExitCode.DATA_ERROR,
                       path=str(weights), hint="retrain the bundle with this version of m2m-bids") from None
    model.to(torch.device(device)).eval()
    log.info("loaded model %s from %s", card.get("arch"), bundle_dir)
    return Bundle(bundle_dir, card, model)


def preproc_differences(card_preproc: dict[str, Any], used: dict[str, Any]) -> list[str]:
    """Human-readable ``name: model=<a>, data=<b>`` for every tensor-changing parameter that differs."""
    diffs = []
    for key in sorted(set(card_preproc) | set(used)):
        if key in PREPROC_IGNORED or key not in card_preproc or key not in used:
            continue
        a, b = _norm(card_preproc[key]), _norm(used[key])
        if a != b:
            diffs.append(f"{key}: model={card_preproc[key]!r}, data={used[key]!r}")
    return diffs


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def entry_preproc(entry: Any, run_preproc: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing parameters of a cached entry: this run's, overridden by those stored with it.

    ``run_preproc`` are the parameters of this run (they are part of the cache key, so they
    describe the cached tensors); parameters stored in the entry's metadata win where present.
    """
    used = dict(run_preproc)
    used.update(entry.meta.provenance.preproc or {})
    return used


def refuse_mismatch(diffs: list[str], entry: Any, card_file: str = CARD_FILE) -> None:
    """Exit 65 naming every difference (``name: model=<a>, data=<b>``), when there is one."""
    if diffs:
        raise AppError("the cached tensors were preprocessed differently from the model's training data ("
                       + "; ".join(diffs) + ")", ExitCode.DATA_ERROR, path=str(getattr(entry, "path", "")),
                       hint=f"re-run the participant level with the model's preprocessing options "
                            f"(see 'preproc' in {card_file}), e.g. --config-file with those values")


def check_entry(bundle: Bundle, entry: Any, run_preproc: dict[str, Any]) -> None:
    """Refuse (exit 65) cached tensors that were not preprocessed as the model's training data.

    Parameters come from :func:`entry_preproc`; the tensor shape is checked against the model's
    input size too.
    """
    diffs = preproc_differences(bundle.preproc, entry_preproc(entry, run_preproc))
    img_size = tuple(bundle.model.config.img_size)  # type: ignore[attr-defined]
    shape = tuple(np.shape(entry.load("smri" if "smri" in bundle.model.config.modalities else "fmri"))[:3])  # type: ignore[attr-defined]
    if shape != img_size:
        diffs.append(f"grid_shape: model={list(img_size)}, data={list(shape)}")
    refuse_mismatch(diffs, entry)
