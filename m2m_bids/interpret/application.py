"""Applying a model bundle, whatever its backend: the steps shared by the torch and classical bundles.

Both backends group the cached runs by participant
(:func:`~m2m_bids.model_inputs.windows.participant_of`, :func:`session_of`), refuse a participant the
model was trained on (:func:`check_leakage`), apply the model to one participant at a time while
later participants go on past a failure (:func:`apply_each`), then update the dataset-level
``predictions.tsv`` and the ``.bidsignore`` once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.config import RunConfig
from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.interpret.bundle import TrainedOn
from m2m_bids.interpret.predictions import update_predictions

log = logging.getLogger(__name__)


def session_of(entry: Any) -> str | None:
    """Session label of a cache entry (without ``ses-``), None without sessions."""
    value = entry.meta.session
    if value in (None, "", "n/a"):
        return None
    return strip_prefix(str(value), "ses")


def check_leakage(bundle: TrainedOn, label: str, allow: bool) -> bool:
    """True if ``label`` trained the model; refuses (exit 65) unless ``allow``."""
    if label not in bundle.training_participants:
        return False
    if not allow:
        raise AppError(f"sub-{label} was in the training set of this model; its prediction would be optimistic "
                       "(data leakage)", ExitCode.DATA_ERROR, path=str(bundle.card_path),
                       hint="apply the model to participants it was not trained on, or pass "
                            "--allow-training-participants to do it anyway (outputs are then flagged)")
    log.warning("sub-%s was in the training set of this model: its outputs are flagged in_training_set", label)
    return True


def apply_each(grouped: dict[str, list[Any]], apply_one: Callable[[str, list[Any]], pd.DataFrame],
               cfg: RunConfig, classes: list[str], modalities: Sequence[str]) -> dict[str, AppError]:
    """Apply ``apply_one(label, entries)`` to every participant, keep going past per-participant
    failures (unless ``--stop-on-first-crash``), then update the dataset-level predictions table
    once (its ``modalities`` column: what the model read, e.g. ``smri+tabular``) and the
    .bidsignore. Shared by the torch and the classical bundles."""
    failures: dict[str, AppError] = {}
    rows = []
    for label in sorted(grouped):
        try:
            rows.append(apply_one(label, grouped[label]))
            log.info("sub-%s: predicted %s", label, ", ".join(rows[-1]["predicted_label"].astype(str)))
        except AppError as err:
            failures[label] = err
        except OSError as err:
            failures[label] = AppError(f"could not write the outputs of sub-{label}: {err}", ExitCode.IO_ERROR,
                                       path=str(getattr(err, "filename", "") or cfg.execution.output_dir))
        if failures.get(label) is not None and cfg.execution.stop_on_first_crash:
            break
    if rows:
        table = pd.concat(rows, ignore_index=True)
        table.insert(table.columns.get_loc("predicted_label") + 1, "modalities", "+".join(modalities))
        update_predictions(cfg.execution.output_dir, table, classes)
    bidsignore(cfg)
    return failures


def bidsignore(cfg: RunConfig) -> None:
    """List the explanation outputs in ``.bidsignore`` (the derivatives writer owns the file)."""
    writer = DerivativesWriter(cfg.execution.output_dir, bids_dir=cfg.execution.bids_dir, run_id=cfg.run_id)
    writer.update_bidsignore()
