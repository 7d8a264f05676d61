"""Group level: k-fold cross-validation, out-of-fold metrics, and the final model bundle.

``train_group(entries, phenotype, cfg, output_dir)`` is what the runner calls. Under
``torchrun`` every rank calls it; ranks share the work of each split and only rank 0 writes.

Outputs::

    OUTPUT_DIR/models/model-<arch>/weights.safetensors, model-card.json
    OUTPUT_DIR/group/metrics.tsv, metrics.json, oof-predictions.tsv, figures/{roc,pr,training-curves}.svg
    OUTPUT_DIR/logs/status.json                      (heartbeat)
    WORK_DIR/train/<arch>-<run key>/<split>/          (checkpoints, finished-split results: resume)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.model_inputs.windows import EntryLike, participant_of
from m2m_bids.training.distributed import Dist, barrier, setup_distributed, teardown
from m2m_bids.training.labels import Labels, derive_labels
from m2m_bids.training.loop import EpochHook
from m2m_bids.training.metrics import classification_metrics, softmax, summarise
from m2m_bids.training.outputs import write_bundle, write_group_outputs
from m2m_bids.training.progress import Progress
from m2m_bids.training.result import GroupResult, normalise_index, oof_row
from m2m_bids.training.splits import make_splits
from m2m_bids.training.splitrun import SplitOutput, SplitRunner

log = logging.getLogger(__name__)


def train_group(entries: list[EntryLike], phenotype: pd.DataFrame, cfg: RunConfig, output_dir: Path, *,
                on_epoch_end: EpochHook | None = None) -> GroupResult:
    """Cross-validate ``cfg.model.arch`` on the labelled participants of ``entries``, then train the final model.

    ``phenotype`` is participants.tsv indexed by participant label (no ``sub-``).
    ``on_epoch_end(split_name, stats)`` is called after every epoch (progress hooks, tests).
    """
    if not entries:
        raise AppError("no cached samples to train on", ExitCode.DATA_ERROR, hint="run the participant level first")
    dist = setup_distributed(cfg.execution.device)
    try:
        return _train_group(entries, phenotype, cfg, Path(output_dir), dist, on_epoch_end)
    finally:
        teardown(dist)


def _train_group(entries: list[EntryLike], phenotype: pd.DataFrame, cfg: RunConfig, output_dir: Path, dist: Dist,
                 on_epoch_end: EpochHook | None) -> GroupResult:
    tc = cfg.train
    participants = sorted({participant_of(e) for e in entries})
    phenotype = normalise_index(phenotype)
    labels = derive_labels(phenotype, participants, label_column=tc.label_column, classes=list(tc.classes),
                           label_rule=tc.label_rule)
    log.info("labelled participants per class: %s", labels.counts())
    folds, final = make_splits(labels.y, folds=tc.folds, val_fraction=tc.val_fraction, seed=cfg.execution.random_seed)
    run_dir = cfg.execution.resolved_work_dir / "train" / f"{cfg.model.arch}-{run_key(entries, labels, cfg)}"
    writer = DerivativesWriter(output_dir)
    progress = Progress(writer, total_splits=len(folds) + 1, epochs=tc.epochs, enabled=dist.is_main)
    runner = SplitRunner(entries, phenotype, labels, cfg, dist, run_dir)

    def hook(name: str, stats: dict[str, Any]) -> None:
        progress.epoch(name, stats)
        if on_epoch_end is not None:
            on_epoch_end(name, stats)

    try:
        outputs: list[SplitOutput] = []
        for k, split in enumerate([*folds, final]):
            progress.start_split(split.name)
            outputs.append(runner.run(split, seed=cfg.execution.random_seed + 1000 * (k + 1), hook=hook))
            progress.end_split()
    except BaseException:
        progress.close("failed")
        raise
    oof = _oof_table(outputs[:-1], labels)
    per_fold = {o.split.name: classification_metrics(*_xy(oof[oof["split"] == o.split.name], labels.classes))
                for o in outputs[:-1]}
    summary = summarise(list(per_fold.values()))
    bundle = output_dir / "models" / f"model-{cfg.model.arch}"
    result = GroupResult(bundle, labels.classes, per_fold, summary, oof, labels.excluded, folds, final)
    if dist.is_main:
        write_group_outputs(writer, result, outputs, labels)
        write_bundle(writer, bundle, outputs[-1], result, labels, cfg, entries)
        progress.close("done", roc_auc=summary["roc_auc"])
    barrier(dist)
    log.info("cross-validated ROC-AUC %.3f ± %.3f over %d folds; bundle in %s", summary["roc_auc"]["mean"],
             summary["roc_auc"]["sd"], len(folds), bundle)
    return result


def run_key(entries: list[EntryLike], labels: Labels, cfg: RunConfig) -> str:
    """Stable key of everything that determines a training run (the resume directory's name)."""
    train = cfg.train.model_dump(mode="json", exclude={"resume", "num_workers"})
    payload = {"train": train, "model": cfg.model.model_dump(mode="json"),
               "preproc": cfg.preproc.model_dump(mode="json"), "seed": cfg.execution.random_seed,
               "entries": sorted(entry_id(e) for e in entries),
               "labels": {k: int(v) for k, v in labels.y.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def entry_id(entry: EntryLike) -> str:
    """An identifier of a cache entry: its content key (inputs + preprocessing parameters)."""
    return str(entry.key)


def _oof_table(outputs: list[SplitOutput], labels: Labels) -> pd.DataFrame:
    rows = [oof_row(p, out.split.name, int(labels.y[p]), softmax(z[None])[0], labels.classes)
            for out in outputs for p, z in sorted(out.test_logits.items())]
    return pd.DataFrame(rows)


def _xy(rows: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    y = rows["true_label"].map(classes.index).to_numpy(int)
    prob = rows[[f"prob_{c}" for c in classes]].to_numpy(float)
    return y, prob


def load_group_metrics(output_dir: Path) -> dict[str, Any]:
    """Read back ``group/metrics.json`` (reports)."""
    return json.loads((output_dir / "group" / "metrics.json").read_text(encoding="utf-8"))


__all__ = ["train_group", "run_key", "load_group_metrics"]
