"""Datasets over tensor-cache entries: random fMRI windows for training, all windows for evaluation.

One cache entry is one BOLD run of one session of a participant (fMRI ``(X,Y,Z,T)`` float16 plus
the session's T1w ``(X,Y,Z)``), memory-mapped so that workers read only the frames of a window.
Tensors stay float16 until they reach the device (half the host-to-device bytes); the training
step casts them. Evaluation scores every window of every run; :func:`aggregate_logits` averages
them per participant.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from m2m_bids.training.augment import Augmenter

log = logging.getLogger(__name__)


class EntryLike(Protocol):
    """What the datasets need from a :class:`m2m_bids.preproc.cache.CacheEntry`."""

    key: str
    meta: dict[str, Any]

    @property
    def names(self) -> list[str]: ...

    def load(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True)
class RunRecord:
    """One cached run with its participant, class index (-1: unknown) and tabular features."""

    entry: EntryLike
    participant: str
    label: int
    tabular: np.ndarray  # (K,) float32
    n_frames: int


def participant_of(entry: EntryLike) -> str:
    """Participant label of a cache entry (without ``sub-``)."""
    value = str(entry.meta["participant"])
    return value[4:] if value.startswith("sub-") else value


def make_records(entries: list[EntryLike], labels: dict[str, int], tabular: dict[str, np.ndarray]) -> list[RunRecord]:
    """Records of the entries whose participant is in ``tabular`` (labels default to -1)."""
    records = []
    for entry in entries:
        p = participant_of(entry)
        if p not in tabular:
            continue
        n_frames = int(entry.load("fmri").shape[-1])
        records.append(RunRecord(entry, p, labels.get(p, -1), tabular[p], n_frames))
    return records


def _window(fmri: np.ndarray, start: int, frames: int) -> np.ndarray:
    """Frames ``start:start+frames``; short runs are padded by repeating the last frame."""
    chunk = np.asarray(fmri[..., start:start + frames])
    if chunk.shape[-1] < frames:
        pad = np.repeat(chunk[..., -1:], frames - chunk.shape[-1], axis=-1)
        chunk = np.concatenate([chunk, pad], axis=-1)
    return chunk


def eval_starts(n_frames: int, frames: int, max_windows: int | None) -> list[int]:
    """Window starts covering a run: back to back, plus one ending at the last frame if needed."""
    if n_frames <= frames:
        return [0]
    starts = list(range(0, n_frames - frames + 1, frames))
    if starts[-1] + frames < n_frames:
        starts.append(n_frames - frames)
    if max_windows is not None and len(starts) > max_windows:
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in pick]
    return starts


class WindowDataset(Dataset):
    """Samples of ``frames`` consecutive fMRI frames with the session's T1w and tabular row.

    ``train=True``: item ``i`` is a random window of run ``i % len(records)`` (``samples_per_run``
    draws per run per epoch), augmented if an :class:`Augmenter` is given. ``train=False``: the
    items enumerate every evaluation window of every run, in order.
    """

    def __init__(self, records: list[RunRecord], *, frames: int, modalities: tuple[str, ...], train: bool,
                 samples_per_run: int = 1, max_eval_windows: int | None = None,
                 augmenter: Augmenter | None = None, maps: tuple[str, ...] = ()) -> None:
        self.records = records
        self.frames = frames
        self.modalities = modalities
        self.maps = maps
        self.train = train
        self.samples_per_run = samples_per_run
        self.augmenter = augmenter
        self.items: list[tuple[int, int]] = []
        if not train:  # without fMRI windows a run is one item
            for i, rec in enumerate(records):
                starts = eval_starts(rec.n_frames, frames, max_eval_windows) if "fmri" in modalities else [0]
                self.items += [(i, s) for s in starts]
        short = [r for r in records if r.n_frames < frames]
        if short and "fmri" in modalities:
            log.warning("%d run(s) have fewer frames than the window (%d); padded by repeating the last frame",
                        len(short), frames)

    def __len__(self) -> int:
        return len(self.records) * self.samples_per_run if self.train else len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.train:
            rec_idx = index % len(self.records)
            rec = self.records[rec_idx]
            span = max(1, rec.n_frames - self.frames + 1)
            start = int(torch.randint(span, ()).item())
        else:
            rec_idx, start = self.items[index]
            rec = self.records[rec_idx]
        sample: dict[str, Any] = {}
        if "fmri" in self.modalities:
            sample["fmri"] = _window(rec.entry.load("fmri"), start, self.frames)[None]  # (1,X,Y,Z,T)
        if "smri" in self.modalities:
            sample["smri"] = np.asarray(rec.entry.load("smri"))[None, ..., None]  # (1,X,Y,Z,1)
        for name in self.maps:
            sample[name] = np.asarray(rec.entry.load(name))[None]  # (1,X,Y,Z)
        if self.augmenter is not None:
            sample = self.augmenter(sample)
        out = {k: torch.from_numpy(np.array(v, dtype=np.float16, order="C")) for k, v in sample.items()}
        if "tabular" in self.modalities:
            out["tabular"] = torch.from_numpy(rec.tabular)
        out["label"] = torch.tensor(rec.label, dtype=torch.long)
        out["record"] = torch.tensor(rec_idx, dtype=torch.long)
        return out


class EpochSampler(Sampler[int]):
    """Shuffled (or class-balanced) indices for one epoch, sharded across DDP ranks.

    One class covers the single-process and the distributed case: every rank draws the same
    permutation from ``seed + epoch`` and keeps every ``world``-th index, padding so all ranks get
    the same number of batches. ``weights`` switch to sampling with replacement (balanced classes).
    """

    def __init__(self, n: int, *, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True,
                 weights: np.ndarray | None = None) -> None:
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch so every epoch (and every resumed epoch) draws the same order."""
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=gen).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order += order[: total - len(order)]
        return iter(order[self.rank:total:self.world])

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """Contiguous, unpadded shard of ``range(n)`` for this rank (evaluation: every item once)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        bounds = np.linspace(0, n, world + 1).round().astype(int)
        self.indices = list(range(bounds[rank], bounds[rank + 1]))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights per class, normalised to mean 1 (for the weighted loss)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return weights


def aggregate_logits(record_idx: np.ndarray, logits: np.ndarray, records: list[RunRecord]) -> dict[str, np.ndarray]:
    """Mean logits per participant over all windows of all its runs."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for r, z in zip(record_idx, logits, strict=True):
        p = records[int(r)].participant
        sums[p] = sums.get(p, 0) + z
        counts[p] = counts.get(p, 0) + 1
    return {p: sums[p] / counts[p] for p in sums}
