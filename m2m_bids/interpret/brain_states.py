"""Temporal "brain states" (the paper's Fig. 4): the moments the model weighed most, and their connectivity.

The temporal attention of a model window is a distribution over its frames (it sums to 1 within a
window), so windows cannot be ranked against each other by their total. Scores are therefore put
on one scale per frame (``score = attention x frames in window``: 1 means the window's average)
and stitched over the whole run. A brain state is a peak of that per-frame score; its functional
connectivity is the Pearson correlation of atlas-region mean BOLD signals over a segment of
``segment_frames`` frames centred on the peak (a single frame has no correlation). Peaks are at
least half a segment apart, so the states are distinct moments rather than one peak counted thrice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from m2m_bids.interpret.atlas_tables import roi_timeseries

log = logging.getLogger(__name__)

#: Fewest frames a connectivity estimate is computed from (below this Pearson r is mostly noise).
MIN_SEGMENT_FRAMES = 10


@dataclass
class BrainState:
    """One top-attended moment and its region-by-region connectivity."""

    state: int
    peak_frame: int
    score: float
    start_frame: int
    stop_frame: int  # exclusive
    connectivity: pd.DataFrame  # regions x regions, Pearson r


def stitch_frame_scores(n_frames: int, starts: list[int], window_scores: list[np.ndarray]) -> np.ndarray:
    """Per-frame scores over a run from per-window attention (each window's scores sum to 1).

    Each window's attention is multiplied by its length (1 = that window's mean) and frames covered
    by several windows get the mean of their scores. Frames no window covered are NaN.
    """
    total = np.zeros(n_frames, dtype=np.float64)
    count = np.zeros(n_frames, dtype=np.float64)
    for start, scores in zip(starts, window_scores):
        scores = np.asarray(scores, dtype=np.float64)
        length = min(len(scores), n_frames - start)
        if length <= 0:
            continue
        total[start:start + length] += scores[:length] * len(scores)
        count[start:start + length] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pick_peaks(scores: np.ndarray, n: int, min_separation: int) -> list[int]:
    """Indices of the ``n`` highest scores at least ``min_separation`` frames apart (greedy)."""
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    peaks: list[int] = []
    for idx in order:
        if not np.isfinite(scores[idx]):
            break
        if all(abs(int(idx) - p) >= min_separation for p in peaks):
            peaks.append(int(idx))
        if len(peaks) == n:
            break
    return peaks


def segment_around(peak: int, length: int, n_frames: int) -> tuple[int, int]:
    """``[start, stop)`` of ``length`` frames centred on ``peak``, shifted to stay inside the run."""
    length = min(length, n_frames)
    start = max(0, min(peak - length // 2, n_frames - length))
    return start, start + length


def pearson_matrix(series: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Pearson r between columns of ``series`` ``(T, R)``; constant or empty regions give NaN."""
    x = np.asarray(series, dtype=np.float64)
    x = x - np.nanmean(x, axis=0, keepdims=True) if x.size else x
    norm = np.sqrt(np.nansum(x ** 2, axis=0))
    valid = np.isfinite(norm) & (norm > 1e-12)
    r = np.full((x.shape[1], x.shape[1]), np.nan)
    if valid.any():
        z = np.where(valid, x / np.where(valid, norm, 1.0), 0.0)
        r_valid = z[:, valid].T @ z[:, valid]
        r[np.ix_(valid, valid)] = np.clip(r_valid, -1.0, 1.0)
    return pd.DataFrame(r, index=names, columns=names)


def brain_states(scores: np.ndarray, bold: np.ndarray, labels_grid: np.ndarray, labels: pd.DataFrame, *,
                 n_states: int = 3, segment_frames: int = 20) -> list[BrainState]:
    """The top ``n_states`` moments of ``scores`` (per frame) with their ROI connectivity.

    Returns fewer states when the run is too short for distinct segments of
    :data:`MIN_SEGMENT_FRAMES` frames, and none (with a warning) if it is shorter than that.
    """
    n_frames = bold.shape[-1]
    if len(scores) != n_frames:
        raise ValueError(f"{len(scores)} frame scores for a run of {n_frames} frames")
    length = min(max(segment_frames, MIN_SEGMENT_FRAMES), n_frames)
    if length < MIN_SEGMENT_FRAMES:
        log.warning("run has %d frames; at least %d are needed for brain-state connectivity",
                    n_frames, MIN_SEGMENT_FRAMES)
        return []
    present = [int(i) for i in labels["index"] if int(i) > 0 and (labels_grid == int(i)).any()]
    names = [str(n) for i, n in zip(labels["index"], labels["name"]) if int(i) in present]
    series = roi_timeseries(bold, labels_grid, present)
    states = []
    for k, peak in enumerate(pick_peaks(scores, n_states, max(1, length // 2)), start=1):
        start, stop = segment_around(peak, length, n_frames)
        states.append(BrainState(k, peak, float(scores[peak]), start, stop,
                                 pearson_matrix(series[start:stop], names)))
    return states


def states_table(states: list[BrainState], tr: float | None) -> pd.DataFrame:
    """One row per state: peak frame and onset (s), score, segment bounds (documented in outputs.md)."""
    rows = [{"state": s.state, "peak_frame": s.peak_frame,
             "onset": round(s.peak_frame * tr, 3) if tr else np.nan, "score": s.score,
             "start_frame": s.start_frame, "stop_frame": s.stop_frame,
             "n_frames": s.stop_frame - s.start_frame} for s in states]
    return pd.DataFrame(rows, columns=["state", "peak_frame", "onset", "score", "start_frame", "stop_frame",
                                       "n_frames"])
