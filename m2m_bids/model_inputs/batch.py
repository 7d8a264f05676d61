"""Batch tensors from cache entries, and their hand-over to the model.

:func:`assemble` builds the batch of a list of (run, window start) picks in the cache's layout and
dtype -- ``fmri (B,1,T,X,Y,Z)``, ``smri (B,1,X,Y,Z,1)``, maps ``(B,1,X,Y,Z)`` float16, ``tabular
(B,K)`` float32 -- with one copy per window, from the mapped file straight into the batch tensor
(in shared memory inside a loader worker, so no collate copy follows). :func:`to_model` moves a
batch to the device, casts it to the compute dtype there and puts ``fmri`` in the model's
``(B,1,X,Y,Z,T)`` order: the forward's keyword arguments. Training loaders and ``apply`` both
go through these two functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import get_worker_info

from m2m_bids.model_inputs.windows import EntryLike, eval_starts, read_window
from m2m_bids.models.config import MAP_INPUTS
from m2m_bids.models.registry import input_maps, input_modalities

#: The modality inputs of a model's forward (the cache maps of :data:`MAP_INPUTS` come besides).
INPUTS = ("fmri", "smri", "tabular")


@dataclass(frozen=True)
class InputSpec:
    """What a model reads: ``frames``-frame fMRI windows (if ``fmri`` is among ``modalities``), the
    T1w, the tabular row, and per-run cache ``maps``."""

    frames: int
    modalities: tuple[str, ...]
    maps: tuple[str, ...] = ()

    @classmethod
    def of(cls, model: nn.Module) -> InputSpec:
        """The inputs ``model`` was built for (its window length, modalities and maps)."""
        return cls(int(model.config.frames), input_modalities(model), input_maps(model))  # type: ignore[attr-defined]

    @property
    def windowed(self) -> bool:
        """Whether items are fMRI windows (otherwise a run is one item)."""
        return "fmri" in self.modalities

    @property
    def images(self) -> tuple[str, ...]:
        """Cache tensors read whole per run: the T1w if used, then the maps."""
        return (("smri",) if "smri" in self.modalities else ()) + self.maps

    def starts(self, n_frames: int, max_windows: int | None = None) -> list[int]:
        """The evaluation windows of a run of ``n_frames`` frames (``[0]`` when no fMRI is read)."""
        return eval_starts(n_frames, self.frames, max_windows) if self.windowed else [0]


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised batch tensor; in shared memory inside a loader worker (sent without a copy)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def tabular_tensor(rows: Sequence[np.ndarray]) -> torch.Tensor:
    """``(B, K)`` float32 from one feature row per item."""
    return torch.from_numpy(np.stack([np.asarray(r, np.float32) for r in rows]))


def assemble(picks: Sequence[tuple[EntryLike, int]], rows: Sequence[np.ndarray], spec: InputSpec) -> dict[str, torch.Tensor]:
    """The batch of ``(entry, window start)`` picks with their tabular ``rows``, in cache layout (see the
    module docstring); only what ``spec`` reads."""
    b, out = len(picks), {}
    if spec.windowed:
        grid = tuple(picks[0][0].frames().shape[1:])
        out["fmri"] = batch_tensor((b, 1, spec.frames, *grid), torch.float16)
        dest = out["fmri"].numpy()
        for j, (entry, start) in enumerate(picks):
            read_window(entry, start, dest[j, 0])
    for name in spec.images:
        space = tuple(picks[0][0].load(name).shape)
        out[name] = batch_tensor((b, 1, *space, 1) if name == "smri" else (b, 1, *space), torch.float16)
        dest = out[name].numpy().reshape(b, *space)  # a view: T1w (B,1,X,Y,Z,1), maps (B,1,X,Y,Z)
        for j, (entry, _) in enumerate(picks):
            dest[j] = entry.load(name)
    if "tabular" in spec.modalities:
        out["tabular"] = tabular_tensor(rows)
    return out


def to_model(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The forward's keyword arguments from a batch: the present inputs and maps on ``device``.

    Inputs travel in the cache's float16 and are cast on the device to ``dtype`` (under mixed
    precision the autocast dtype, so no fp32 copy of a 96^3 window is ever made). ``fmri`` arrives
    time-first ``(B,1,T,X,Y,Z)`` and is handed over as a ``(B,1,X,Y,Z,T)`` view; the encoder's patch
    embedding makes the one copy it needs anyway.
    """
    inputs: dict[str, torch.Tensor] = {}
    for key in (*INPUTS, *MAP_INPUTS):
        if key in batch:
            x = batch[key].to(device, non_blocking=True)
            x = x.to(dtype) if x.is_floating_point() else x
            inputs[key] = x.permute(0, 1, 3, 4, 5, 2) if key == "fmri" else x
    return inputs


def run_inputs(entry: EntryLike, starts: Sequence[int], row: np.ndarray | None, spec: InputSpec,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Forward keyword arguments (fp32) for the windows of one run starting at ``starts``, each with
    the participant's tabular ``row`` (none: an empty row)."""
    row = np.zeros(0, np.float32) if row is None else row
    batch = assemble([(entry, s) for s in starts], [row] * len(starts), spec)
    return to_model(batch, device, torch.float32)
