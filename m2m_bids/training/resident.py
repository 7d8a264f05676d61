"""Datasets held resident on the GPU (or in pinned host memory) when they fit: windows cut there.

A small cohort (tens of runs on a 64^3 grid; a few hundred on a 96^3 grid of an 80 GB card) fits
in device memory several times over, so reading the same windows from the cache every epoch only
burns host memory bandwidth. :func:`choose_residency` decides once per dataset, from its size and
the free memory, and logs the choice; :class:`ResidentBatches` then serves batches with exactly
the items of the :class:`~m2m_bids.training.data.WindowDataset` (same sampler, same random
starts), sliced on the device -- no host copy at all -- or, in pinned memory, with one host copy
and an asynchronous transfer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, Sampler

from m2m_bids.training.data import WindowDataset

log = logging.getLogger(__name__)

#: Share of the free GPU memory one resident dataset may take (training and validation sets
#: together stay under half; the rest is the model's activations).
GPU_SHARE = 0.25
#: Share of the available host memory one pinned dataset may take (pinned pages cannot be swapped).
PINNED_SHARE = 0.4


def resident_bytes(dataset: WindowDataset) -> int:
    """Bytes the dataset's tensors take when held whole (float16 runs and maps)."""
    total = 0
    for rec in dataset.records:
        if "fmri" in dataset.modalities:
            run = rec.entry.frames()
            total += max(run.shape[0], dataset.frames) * int(np.prod(run.shape[1:])) * 2
        for name in (["smri"] if "smri" in dataset.modalities else []) + list(dataset.maps):
            total += int(np.prod(rec.entry.load(name).shape)) * 2
    return total


def host_available_bytes() -> int:
    """Memory the OS reports available to new allocations."""
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_residency(dataset: WindowDataset, device: torch.device, name: str) -> str:
    """``gpu``, ``pinned`` or ``stream`` (cache reads in loader workers), logged with the reason.

    Only on CUDA devices and without augmentation (which runs on the host); on a CPU the page
    cache already holds the mapped runs and the workers overlap reading with compute.
    """
    if device.type != "cuda" or not dataset.records:
        return "stream"
    if dataset.augmenter is not None:
        log.info("%s windows: streamed from the cache by loader workers (augmentation runs on the host)", name)
        return "stream"
    need = resident_bytes(dataset)
    free, _ = torch.cuda.mem_get_info(device)
    if need <= GPU_SHARE * free:
        log.info("%s windows: %d runs (%.2f GB) held resident on %s (under %.0f%% of its %.1f GB free); "
                 "windows are sliced on the device", name, len(dataset.records), need / 1e9, device,
                 100 * GPU_SHARE, free / 1e9)
        return "gpu"
    host = host_available_bytes()
    if need <= PINNED_SHARE * host:
        log.info("%s windows: %d runs (%.2f GB) held in pinned host memory (too large for %.0f%% of the "
                 "%.1f GB free on %s); one host copy per window", name, len(dataset.records), need / 1e9,
                 100 * GPU_SHARE, free / 1e9, device)
        return "pinned"
    log.info("%s windows: %d runs (%.2f GB) streamed from the cache by loader workers (too large for GPU or "
             "pinned memory)", name, len(dataset.records), need / 1e9)
    return "stream"


class ResidentBatches:
    """Batches of ``dataset`` in ``sampler`` order, cut from tensors held on ``device`` or pinned.

    Holds each run once, time-first and padded to at least one window (the padding repeats the last
    frame, as :func:`~m2m_bids.model_inputs.windows.read_window` does), plus the static images. Batches
    match the dataset's: ``fmri (B,1,T,X,Y,Z)``, ``smri (B,1,X,Y,Z,1)``, maps ``(B,1,X,Y,Z)``.
    """

    def __init__(self, dataset: WindowDataset, sampler: Sampler, batch_size: int, device: torch.device,
                 *, pinned: bool = False, drop_last: bool = False) -> None:
        self.dataset = dataset
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.device = device
        self.pinned = pinned
        home = torch.device("cpu") if pinned else device
        self.runs: list[torch.Tensor] = []
        self.statics: dict[str, list[torch.Tensor]] = {}
        for rec in dataset.records:
            if "fmri" in dataset.modalities:
                run = torch.from_numpy(np.array(rec.entry.frames()))  # time-first, writable
                if run.shape[0] < dataset.frames:
                    run = torch.cat([run, run[-1:].expand(dataset.frames - run.shape[0], *run.shape[1:])])
                self.runs.append(self._hold(run, home))
            for name in (["smri"] if "smri" in dataset.modalities else []) + list(dataset.maps):
                self.statics.setdefault(name, []).append(
                    self._hold(torch.from_numpy(np.array(rec.entry.load(name))), home))
        self.tabular = (torch.from_numpy(np.stack([r.tabular for r in dataset.records]))
                        if "tabular" in dataset.modalities else None)
        self.labels = torch.tensor([r.label for r in dataset.records], dtype=torch.long)

    def _hold(self, tensor: torch.Tensor, home: torch.device) -> torch.Tensor:
        if self.pinned:
            return tensor.contiguous().pin_memory()
        return tensor.to(home, copy=True)

    def __len__(self) -> int:
        return len(self.batches)

    def _stack(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """One copy into the batch: on the device, or into pinned memory then sent asynchronously."""
        if not self.pinned:
            return torch.stack(parts)
        out = torch.empty((len(parts), *parts[0].shape), dtype=parts[0].dtype, pin_memory=True)
        return torch.stack(parts, out=out).to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for indices in self.batches:
            yield self.batch([self.dataset.pick(i) for i in indices])

    def batch(self, picks: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The batch of (record, start) ``picks``; on the device (pinned: copied there asynchronously)."""
        frames, out = self.dataset.frames, {}
        records = torch.tensor([r for r, _ in picks], dtype=torch.long)
        if self.runs:
            out["fmri"] = self._stack([self.runs[r][s:s + frames] for r, s in picks]).unsqueeze(1)
        for name, vols in self.statics.items():
            stacked = self._stack([vols[r] for r, _ in picks]).unsqueeze(1)
            out[name] = stacked.unsqueeze(-1) if name == "smri" else stacked
        if self.tabular is not None:
            out["tabular"] = self.tabular[records]
        out["label"] = self.labels[records]
        out["record"] = records
        return out
