"""Which fMRI windows of a cached run are read, and reading one from the cache.

One cache entry is one BOLD run of one session of a participant (fMRI stored time-first
``(T,X,Y,Z)`` float16 plus the session's T1w ``(X,Y,Z)``), memory-mapped so that a window of
consecutive frames is one contiguous read. Training draws one random window per item
(:func:`train_start`); evaluation and application score every window (:func:`eval_starts`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.preproc.entrymeta import EntryMeta


class EntryLike(Protocol):
    """What model input needs from a :class:`m2m_bids.preproc.cache.CacheEntry`."""

    key: str
    meta: EntryMeta

    @property
    def names(self) -> list[str]: ...

    def load(self, name: str) -> np.ndarray: ...

    def frames(self) -> np.ndarray: ...

    def read_frames(self, start: int, out: np.ndarray) -> int: ...


def participant_of(entry: EntryLike) -> str:
    """Participant label of a cache entry (without ``sub-``)."""
    return strip_prefix(entry.meta.participant, "sub")


def train_start(n_frames: int, frames: int) -> int:
    """A uniformly random first frame of a training window (torch's global generator, so a seeded
    worker draws the same starts every time); 0 for a run shorter than the window."""
    return int(torch.randint(max(1, n_frames - frames + 1), ()).item())


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


def read_window(entry: EntryLike, start: int, out: np.ndarray) -> np.ndarray:
    """Frames ``start:start + len(out)`` of the entry's run, time-first ``(T, X, Y, Z)``, read into ``out``.

    One copy, from the cache file into ``out``; a run shorter than the window is padded by
    repeating its last frame.
    """
    n = entry.read_frames(start, out)
    if n < out.shape[0]:
        out[n:] = out[n - 1]
    return out
