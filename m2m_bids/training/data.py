"""Datasets over tensor-cache entries: random fMRI windows for training, all windows for evaluation.

Which windows are read and how a batch is built come from :mod:`m2m_bids.model_inputs`, which
``apply`` uses too: the dataset builds whole batches (:meth:`WindowDataset.__getitems__`) with
:func:`~m2m_bids.model_inputs.batch.assemble`, and :func:`m2m_bids.training.loop.forward` hands
them to the model with :func:`~m2m_bids.model_inputs.batch.to_model`. Evaluation scores every
window of every run; :func:`aggregate_logits` averages them per participant.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from m2m_bids.model_inputs.batch import InputSpec, assemble, batch_tensor, tabular_tensor
from m2m_bids.model_inputs.windows import EntryLike, participant_of, read_window, train_start
from m2m_bids.training.augment import Augmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRecord:
    """One cached run with its participant, class index (-1: unknown) and tabular features."""

    entry: EntryLike
    participant: str
    label: int
    tabular: np.ndarray  # (K,) float32
    n_frames: int


def make_records(entries: list[EntryLike], labels: dict[str, int], tabular: dict[str, np.ndarray]) -> list[RunRecord]:
    """Records of the entries whose participant is in ``tabular`` (labels default to -1)."""
    records = []
    for entry in entries:
        p = participant_of(entry)
        if p not in tabular:
            continue
        n_frames = int(entry.frames().shape[0]) if "fmri" in entry.names else 0  # 0: T1w-only entry
        records.append(RunRecord(entry, p, labels.get(p, -1), tabular[p], n_frames))
    return records


def as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``collate_fn`` of loaders over a :class:`WindowDataset`: its batches are already built."""
    return batch


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
        self.spec = InputSpec(frames, tuple(modalities), tuple(maps))
        self.train = train
        self.samples_per_run = samples_per_run
        self.augmenter = augmenter
        self.items: list[tuple[int, int]] = []
        if not train:  # without fMRI windows a run is one item
            for i, rec in enumerate(records):
                self.items += [(i, s) for s in self.spec.starts(rec.n_frames, max_eval_windows)]
        short = [r for r in records if r.n_frames < frames]
        if short and self.spec.windowed:
            log.warning("%d run(s) have fewer frames than the window (%d); padded by repeating the last frame",
                        len(short), frames)

    @property
    def frames(self) -> int:
        return self.spec.frames

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modalities

    @property
    def maps(self) -> tuple[str, ...]:
        return self.spec.maps

    def __len__(self) -> int:
        return len(self.records) * self.samples_per_run if self.train else len(self.items)

    def pick(self, index: int) -> tuple[int, int]:
        """(record index, first frame) of item ``index``: a random start when training."""
        if not self.train:
            return self.items[index]
        rec_idx = index % len(self.records)
        return rec_idx, train_start(self.records[rec_idx].n_frames, self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One item: the batch of ``[index]`` without its batch axis."""
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of ``indices`` (:func:`~m2m_bids.model_inputs.batch.assemble`'s layout) plus
        ``label`` and ``record`` ``(B,)``. Each window is copied once."""
        picks = [self.pick(i) for i in indices]
        if self.augmenter is not None:
            return self._stack([self._augmented(r, s) for r, s in picks], picks)
        recs = [self.records[r] for r, _ in picks]
        out = assemble([(rec.entry, s) for rec, (_, s) in zip(recs, picks, strict=True)],
                       [rec.tabular for rec in recs], self.spec)
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
        if "tabular" in self.modalities:
            out["tabular"] = tabular_tensor([self.records[r].tabular for r, _ in picks])
        return self._labels(out, picks)

    def _labels(self, out: dict[str, torch.Tensor], picks: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        out["label"] = torch.tensor([self.records[r].label for r, _ in picks], dtype=torch.long)
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
