"""The backend table: which code trains a given ``--arch`` and which code applies a given bundle.

Two backends stand behind ``--arch``: the torch models (:mod:`m2m_bids.models.registry`, trained by
:mod:`m2m_bids.training` and applied by :mod:`m2m_bids.interpret`) and the classical scikit-learn
baselines (:mod:`m2m_bids.classical.registry`). Each is a :class:`Backend` row: its archs, the
file that marks its model bundle, and its train / apply / group-explanation functions. The runner
and the preflight checks ask this table once; no stage branches on the kind of model.

The table itself is light (the arch names and card files, read at start-up by the preflight
checks); each function loads its backend's stage code when it is called, so a dry run, a refused
dataset or a preprocessing-only run never imports scikit-learn or the training stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m2m_bids.classical import registry as classical_registry
from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError
from m2m_bids.model_identity import CARD_FILE as TORCH_CARD_FILE
from m2m_bids.models import list_models

if TYPE_CHECKING:
    import pandas as pd

    from m2m_bids.training.result import GroupResult

#: ``train(entries, phenotype, cfg, output_dir)``: cross-validate, write the group files and the bundle.
TrainFn = Callable[[list[Any], "pd.DataFrame", RunConfig, Path], "GroupResult"]
#: ``apply(bundle_dir, entries, cfg)``: participant outputs; per-participant failures by label.
ApplyFn = Callable[[Path, list[Any], RunConfig], dict[str, AppError]]
#: ``explain(bundle_dir, entries, cfg)``: group-level explanations and report; returns the report path.
ExplainFn = Callable[[Path, list[Any], RunConfig], Path]


@dataclass(frozen=True)
class Backend:
    """One way to train and apply a model; ``explain_group`` is None where there is nothing to explain
    beyond the group metrics (the classical bundles' region importance is per participant)."""

    name: str
    archs: frozenset[str]
    card_file: str
    train: TrainFn
    apply: ApplyFn
    explain_group: ExplainFn | None
    #: the model reads BOLD whatever ``--modalities`` says (functional connectivity is its main feature)
    always_reads_bold: bool = False


def _train_torch(entries: list[Any], phenotype: pd.DataFrame, cfg: RunConfig, output_dir: Path) -> GroupResult:
    from m2m_bids.training.api import train_group

    return train_group(entries, phenotype, cfg, output_dir)


def _apply_torch(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> dict[str, AppError]:
    from m2m_bids.interpret.api import apply_model

    return apply_model(bundle_dir, entries, cfg)


def _explain_torch(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> Path:
    from m2m_bids.interpret.group import write_group_interpretation

    return write_group_interpretation(bundle_dir, entries, cfg)


def _train_classical(entries: list[Any], phenotype: pd.DataFrame, cfg: RunConfig, output_dir: Path) -> GroupResult:
    from m2m_bids.classical.api import train_classical

    return train_classical(entries, phenotype, cfg, output_dir)


def _apply_classical(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> dict[str, AppError]:
    from m2m_bids.classical.apply import apply_classical

    return apply_classical(bundle_dir, entries, cfg)


TORCH = Backend(name="torch", archs=frozenset(list_models()), card_file=TORCH_CARD_FILE,
                train=_train_torch, apply=_apply_torch, explain_group=_explain_torch)
CLASSICAL = Backend(name="classical", archs=frozenset(classical_registry.list_archs()),
                    card_file=classical_registry.CARD_FILE, train=_train_classical, apply=_apply_classical,
                    explain_group=None, always_reads_bold=True)
BACKENDS: tuple[Backend, ...] = (TORCH, CLASSICAL)


def known_archs() -> list[str]:
    """Every value ``--arch`` accepts, over all backends."""
    return sorted(arch for backend in BACKENDS for arch in backend.archs)


def backend_of_arch(arch: str) -> Backend:
    """The backend that trains ``arch``; KeyError (naming the valid archs) for an unknown one."""
    for backend in BACKENDS:
        if arch in backend.archs:
            return backend
    raise KeyError(f"unknown arch {arch!r}; choose one of {known_archs()}")


def needs_fmri(cfg: RunConfig) -> bool:
    """Whether the configured model reads BOLD: ``fmri`` among ``--modalities``, or a backend whose
    models always read it. Participants without usable BOLD are kept T1w-only exactly when it is False."""
    return backend_of_arch(cfg.model.arch).always_reads_bold or "fmri" in cfg.model.modalities


def bundle_card(model_dir: Path) -> Path | None:
    """The card file of a bundle folder (whichever backend wrote it), or None when it holds no bundle."""
    for backend in BACKENDS:
        if (Path(model_dir) / backend.card_file).is_file():
            return Path(model_dir) / backend.card_file
    return None


def backend_of_bundle(model_dir: Path) -> Backend | None:
    """The backend whose card file ``model_dir`` holds, or None when it holds no bundle."""
    card = bundle_card(model_dir)
    return None if card is None else next(b for b in BACKENDS if b.card_file == card.name)
