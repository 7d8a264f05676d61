"""Datasets over tensor-cache entries: random fMRI windows for training, all windows for evaluation.

One cache entry is one BOLD run of one session of a participant (fMRI stored time-first
``(T,X,Y,Z)`` float16 plus the session's T1w ``(X,Y,Z)``), memory-mapped so that a window of
consecutive frames is one contiguous read. The dataset builds whole batches
(:meth:`WindowDataset.__getitems__`): each window is copied once, from the mapped file straight
into the batch tensor (in shared memory inside a loader worker), and no collate copy follows.
Batches keep the cache's layout and dtype -- ``fmri`` is ``(B, 1, T, X, Y, Z)`` float16 -- and
:func:`m2m_bids.training.loop.forward` puts them in the model's ``(B, 1, X, Y, Z, T)`` order on the
device. Evaluation scores every window of every run; :func:`aggregate_logits` averages them per
participant.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from m2m_bids.preproc.entrymeta import EntryMeta
from m2m_bids.training.augment import Augmenter

log = logging.getLogger(__name__)


class EntryLike(Protocol):
    """What the datasets need from a :class:`m2m_bids.preproc.cache.CacheEntry`."""

    key: str
    meta: EntryMeta

    @property
    def names(self) -> list[str]: ...

    def load(self, name: str) -> np.ndarray: ...

    def frames(self) -> np.ndarray: ...

    def read_frames(self, start: int, out: np.ndarray) -> int: ...


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
    value = entry.meta.participant
    return value[4:] if value.startswith("sub-") else value


def make_records(entries: list[EntryLike], labels: dict[str, int], tabular: dict[str, np.ndarray]) -> list[RunRecord]:
    """Records of the entries whose participant is in ``tabular`` (labels default to -1)."""
    records = []
    for entry in entries:
        p = participant_of(entry)
        if p not in tabular:
            continue
        n_frames = int(entry.frames().shape[0])
        records.append(RunRecord(entry, p, labels.get(p, -1), tabular[p], n_frames))
    return records


def read_window(entry: EntryLike, start: int, out: np.ndarray) -> np.ndarray:
    """Frames ``start:start + len(out)`` of the entry's run, time-first ``(T, X, Y, Z)``, read into ``out``.

    One copy, from the cache file into ``out``; a run shorter than the window is padded by
    repeating its last frame.
    """
    n = entry.read_frames(start, out)
    if n < out.shape[0]:
        out[n:] = out[n - 1]
    return out


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch tensor; in shared memory inside a loader worker (sent without a copy)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` of loaders over a :class:`WindowDataset`: its batches are already built."""
    return batch


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

    def pick(self, index: int) -> tuple[int, int]:
        """(record index, first frame) of item ``index``: a random start when training."""
        if not self.train:
            return self.items[index]
        rec_idx = index % len(self.records)
        span = max(1, self.records[rec_idx].n_frames - self.frames + 1)
        return rec_idx, int(torch.randint(span, ()).item())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One item: the batch of ``[index]`` without its batch axis."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of ``indices``: ``fmri (B,1,T,X,Y,Z)``, ``smri (B,1,X,Y,Z,1)``, maps ``(B,1,X,Y,Z)``
        float16; ``tabular (B,K)``; ``label`` and ``record`` ``(B,)``. Each window is copied once."""
        picks = [self.pick(i) for i in indices]
        if self.augmenter is not None:
            return self._stack([self._augmented(r, s) for r, s in picks], picks)
        b, out = len(picks), {}
        if "fmri" in self.modalities:
            grid = tuple(self.records[picks[0][0]].entry.frames().shape[1:])
            out["fmri"] = batch_tensor((b, 1, self.frames, *grid), torch.float16)
            dest = out["fmri"].numpy()
            for j, (r, start) in enumerate(picks):
                read_window(self.records[r].entry, start, dest[j, 0])
        for name in (["smri"] if "smri" in self.modalities else []) + list(self.maps):
            space = tuple(self.records[picks[0][0]].entry.load(name).shape)
            out[name] = batch_tensor((b, 1, *space, 1) if name == "smri" else (b, 1, *space), torch.float16)
            dest = out[name].numpy().reshape(b, *space)  # a view: T1w (B,1,X,Y,Z,1), maps (B,1,X,Y,Z)
            for j, (r, _) in enumerate(picks):
                dest[j] = self.records[r].entry.load(name)
        return self._labels(out, picks)

    def _augmented(self, rec_idx: int, start: int) -> dict[str, np.ndarray]:
        """One augmented sample (time-last, as :class:`Augmenter` takes it), returned time-first."""
        rec, sample = self.records[rec_idx], {}
        if "fmri" in self.modalities:
            grid = rec.entry.frames().shape[1:]
            window = read_window(rec.entry, start, np.empty((self.frames, *grid), np.float16))
            sample["fmri"] = np.moveaxis(window, 0, -1)[None]  # (1,X,Y,Z,T)
        if "smri" in self.modalities:
            sample["smri"] = np.asarray(rec.entry.load("smri"))[None, ..., None]  # (1,X,Y,Z,1)
        for name in self.maps:
            sample[name] = np.asarray(rec.entry.load(name))[None]  # (1,X,Y,Z)
        sample = self.augmenter(sample)  # type: ignore[misc]
        if "fmri" in sample:
            sample["fmri"] = np.moveaxis(sample["fmri"], -1, 1)  # (1,T,X,Y,Z)
        return sample

    def _stack(self, samples: list[dict[str, np.ndarray]], picks: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        out = {}
        for name in samples[0]:
            out[name] = batch_tensor((len(samples), *samples[0][name].shape), torch.float16)
            np.copyto(out[name].numpy(), np.stack([s[name] for s in samples]), casting="unsafe")
        return self._labels(out, picks)

    def _labels(self, out: dict[str, torch.Tensor], picks: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        recs = [self.records[r] for r, _ in picks]
        if "tabular" in self.modalities:
            out["tabular"] = torch.from_numpy(np.stack([r.tabular for r in recs]))
        out["label"] = torch.tensor([r.label for r in recs], dtype=torch.long)
        out["record"] = torch.tensor([r for r, _ in picks], dtype=torch.long)
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
