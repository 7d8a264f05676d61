"""One split of the group run: fit the tabular encoder, build the datasets, train, predict the test fold.

A finished split leaves ``result.json`` + ``best.safetensors`` in its work folder; with
``train.resume`` it is read back instead of retrained, and an unfinished split continues from its
last checkpoint (see :mod:`m2m_bids.training.checkpoint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.io_utils import write_json_atomic
from m2m_bids.model_inputs.atlas import build_model
from m2m_bids.model_inputs.batch import InputSpec
from m2m_bids.model_inputs.tabular import TabularEncoder, feature_rows
from m2m_bids.model_inputs.windows import EntryLike, participant_of
from m2m_bids.models import input_maps, model_info
from m2m_bids.training import checkpoint as ckpt
from m2m_bids.training.augment import Augmenter
from m2m_bids.training.data import RunRecord, WindowDataset, class_weights, make_records
from m2m_bids.training.distributed import Dist, barrier, broadcast_object
from m2m_bids.training.labels import Labels
from m2m_bids.training.loop import EpochHook, FitPlan, fit, predict
from m2m_bids.training.splits import Split

log = logging.getLogger(__name__)


@dataclass
class SplitOutput:
    """A trained split: best weights, the model it belongs to, test-fold logits per participant."""

    split: Split
    best_state: dict[str, Any]
    best_epoch: int
    history: list[dict[str, float]]
    encoder: TabularEncoder
    model_info: dict[str, Any]
    modalities: tuple[str, ...]
    test_logits: dict[str, np.ndarray] = field(default_factory=dict)
    selection: str = "val_auc"  # the epoch-selection rule that chose best_epoch


class SplitRunner:
    """Trains splits that share entries, phenotype, labels and configuration."""

    def __init__(self, entries: list[EntryLike], phenotype: pd.DataFrame, labels: Labels, cfg: RunConfig,
                 dist: Dist, run_dir: Path) -> None:
        self.entries = entries
        self.phenotype = phenotype
        self.labels = labels
        self.cfg = cfg
        self.dist = dist
        self.run_dir = run_dir
        self.participants = sorted({participant_of(e) for e in entries})
        first = entries[0].load("fmri" if "fmri" in cfg.model.modalities else "smri")
        self.img_size = tuple(int(s) for s in first.shape[:3])
        self.modalities = tuple(cfg.model.modalities)
        if "tabular" in self.modalities and not cfg.train.tabular_columns:
            log.info("no tabular columns chosen (train.tabular_columns): training without the tabular branch")
            self.modalities = tuple(m for m in self.modalities if m != "tabular")

    def build_model(self, n_tabular: int) -> nn.Module:
        """A fresh model of ``cfg.model.arch`` for this input size and tabular width."""
        mc = self.cfg.model
        return build_model(mc.arch, num_classes=len(self.labels.classes), img_size=self.img_size,
                           frames=mc.window_frames, n_tabular=n_tabular, modalities=self.modalities,
                           **self.data_overrides)

    @cached_property
    def data_overrides(self) -> dict[str, Any]:
        """``model.overrides`` plus what a model card must record about the data: the grid affine
        (models that place an atlas on the grid) and what ``functional_map = "auto"`` resolves to
        (``pet`` when every run has a PET map, else ``falff``)."""
        overrides = dict(self.cfg.model.overrides)
        affine = self.entries[0].meta.affine
        if affine is not None:
            overrides.setdefault("grid_affine", [float(v) for v in np.ravel(affine)])
        if overrides.get("functional_map", "auto") == "auto":
            overrides["functional_map"] = "pet" if all("pet" in e.names for e in self.entries) else "falff"
        return overrides

    def check_maps(self, model: nn.Module) -> None:
        """Refuse, naming the participants and the fix, when cache entries lack a map the model reads
        (a PET map for participants without PET, or entries written by an older version)."""
        for name in input_maps(model):
            lacking = sorted({participant_of(e) for e in self.entries if name not in e.names})
            if lacking:
                hint = ("choose another functional_map (model.overrides) or leave these participants out"
                        if name == "pet" else "re-run the participant level so that the cache entries are rebuilt")
                raise AppError(f"--arch {self.cfg.model.arch} reads the cache map {name!r}, which the entries of "
                               f"{len(lacking)} participant(s) lack: " + ", ".join(f"sub-{p}" for p in lacking[:10]),
                               ExitCode.DATA_ERROR, hint=hint)

    def _records(self, ids: tuple[str, ...], tab: dict[str, np.ndarray]) -> list[RunRecord]:
        wanted = set(ids)
        y = {p: int(v) for p, v in self.labels.y.items()}
        chosen = {p: tab[p] for p in self.participants if p in wanted}
        return make_records(self.entries, y, chosen)

    def datasets(self, split: Split, encoder: TabularEncoder, model: nn.Module) -> tuple[WindowDataset, ...]:
        """Training (random windows, augmented if asked), validation and test (all windows) datasets.

        What is loaded follows the model (:meth:`InputSpec.of <m2m_bids.model_inputs.batch.InputSpec.of>`);
        a model that reads no fMRI windows gets one item per run.
        """
        tc, spec = self.cfg.train, InputSpec.of(model)
        tab = feature_rows(encoder, self.phenotype, self.participants)
        common = {"frames": spec.frames, "modalities": spec.modalities, "maps": spec.maps}
        train = WindowDataset(self._records(split.train, tab), train=True, samples_per_run=tc.samples_per_run,
                              augmenter=Augmenter() if tc.augment else None, **common)
        val = WindowDataset(self._records(split.val, tab), train=False, max_eval_windows=tc.max_eval_windows,
                            **common)
        test = WindowDataset(self._records(split.test, tab), train=False, max_eval_windows=tc.max_eval_windows,
                             **common)
        return train, val, test

    def run(self, split: Split, *, seed: int, hook: EpochHook | None) -> SplitOutput:
        """Train ``split`` (or read it back when finished and resuming) and predict its test fold."""
        tc = self.cfg.train
        split_dir = self.run_dir / split.name
        encoder = TabularEncoder.fit(self.phenotype.reindex(list(split.train)), list(tc.tabular_columns))
        model = self.build_model(encoder.n_features)
        self.check_maps(model)
        train_set, val_set, test_set = self.datasets(split, encoder, model)

        info = model_info(model)
        done = split_dir / "result.json"
        finished = _read_finished(split_dir) if tc.resume and done.is_file() else None
        if finished is not None:
            log.info("%s already trained (%s): reusing it", split.name, done)
            best_state, best_epoch, history, selection = finished
        else:
            train_labels = np.array([r.label for r in train_set.records])
            n_classes = len(self.labels.classes)
            weights = class_weights(train_labels, n_classes)
            plan = FitPlan(
                name=split.name, build_model=lambda: self.build_model(encoder.n_features), train_set=train_set,
                val_set=val_set, n_classes=n_classes, seed=seed, checkpoint_dir=split_dir,
                class_weights=weights if tc.class_balance == "weighted_loss" else None,
                sample_weights=(np.tile(weights[train_labels], tc.samples_per_run)
                                if tc.class_balance == "sampler" else None))
            fitted = fit(plan, tc, self.dist, hook)
            best_state, best_epoch, history = fitted.best_state, fitted.best_epoch, fitted.history
            selection = fitted.selection
        model.load_state_dict(best_state)
        model.to(self.dist.device)
        test_logits = predict(model, test_set, tc, self.dist) if len(test_set) else {}
        if self.dist.is_main:
            ckpt.save_weights(split_dir / "best.safetensors", best_state)
            write_json_atomic(done, {"split": split.to_dict(), "best_epoch": best_epoch, "selection": selection,
                                     "history": history,
                                     "test_logits": {p: z.tolist() for p, z in test_logits.items()}})
        barrier(self.dist)
        test_logits = broadcast_object(test_logits, self.dist)
        return SplitOutput(split, best_state, best_epoch, history, encoder, info, self.modalities, test_logits,
                           selection)


def _read_finished(split_dir: Path) -> tuple[dict[str, Any], int, list[dict[str, Any]], str] | None:
    """``(best weights, best epoch, history, epoch-selection rule)`` of a finished split, or ``None`` (with a warning naming
    the file) when its files are missing or corrupt: the split is then trained again."""
    import json

    try:
        result = json.loads((split_dir / "result.json").read_text(encoding="utf-8"))
        best_epoch, history = int(result["best_epoch"]), list(result["history"])
        selection = str(result.get("selection", "val_auc"))
        best_state = ckpt.load_weights(split_dir / "best.safetensors")
    except Exception as err:  # noqa: BLE001 - any unreadable result means "train this split again"
        log.warning("the finished split in %s cannot be read back (%s: %s); training it again", split_dir,
                    type(err).__name__, str(err).strip().splitlines()[0][:200] if str(err).strip() else "")
        return None
    return best_state, best_epoch, history, selection
