"""Slice-timing correction: shift each slice's time series to a common reference time.

Each slice of an EPI volume is acquired at its own offset within the TR (``SliceTiming``, in
seconds, listed along the stored slice axis given by ``SliceEncodingDirection``). We resample every
slice's series to ``t_ref`` by a Fourier phase shift (exact for band-limited signals, as SPM's
sinc interpolation), after removing the linear trend and mirror-padding the series so that the
FFT's circular wrap-around does not bleed the end of the run into its start.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

_DIRECTION_AXES = {"i": 0, "j": 1, "k": 2}


def parse_slice_encoding(direction: str | None) -> tuple[int, bool]:
    """``SliceEncodingDirection`` (``i``, ``j``, ``k``, optionally with ``-``) -> (axis, reversed).

    BIDS defaults to ``k`` when the field is absent. A reversed direction means the first entry of
    ``SliceTiming`` belongs to the last slice along the axis.
    """
    text = (direction or "k").strip()
    reverse = text.endswith("-")
    axis = _DIRECTION_AXES.get(text.rstrip("-"))
    if axis is None:
        raise ValueError(f"SliceEncodingDirection must be one of i, j, k, i-, j-, k-; got {direction!r}")
    return axis, reverse


def reference_time(slice_times: np.ndarray, ref_fraction: float) -> float:
    """The reference time: ``ref_fraction`` of the way from the first to the last slice acquired."""
    return float(slice_times.min() + ref_fraction * (slice_times.max() - slice_times.min()))


def shift_series(series: np.ndarray, shift_frames: np.ndarray) -> np.ndarray:
    """Sample each row of ``series`` (N, T) at ``t + shift`` frames (Fourier shift, detrended, mirrored)."""
    series = np.asarray(series, dtype=np.float64)
    n = series.shape[-1]
    t = np.arange(n, dtype=np.float64)
    # linear trend per row, removed before and restored (at the shifted times) after
    tc = t - t.mean()
    slope = (series * tc).sum(axis=-1, keepdims=True) / max(float((tc**2).sum()), 1e-12)
    intercept = series.mean(axis=-1, keepdims=True)
    resid = series - intercept - slope * tc
    padded = np.concatenate([resid[:, ::-1], resid, resid[:, ::-1]], axis=-1)
    m = padded.shape[-1]
    freqs = np.fft.rfftfreq(m)
    spectrum = np.fft.rfft(padded, axis=-1)
    phase = np.exp(2j * np.pi * freqs[None, :] * np.asarray(shift_frames, dtype=np.float64)[:, None])
    shifted = np.fft.irfft(spectrum * phase, n=m, axis=-1)[:, n:2 * n]
    trend = intercept + slope * (tc[None, :] + np.asarray(shift_frames)[:, None])
    return shifted + trend


def slice_time_correct(data: np.ndarray, slice_times: list[float], tr: float, slice_axis: int,
                       reverse: bool = False, ref_fraction: float = 0.5) -> tuple[np.ndarray, float]:
    """Correct a 4D (X,Y,Z,T) series; return it (float32) and the reference time in seconds.

    ``slice_axis``/``reverse`` describe the slice axis in ``data``'s voxel order (after any
    reorientation). A ``SliceTiming`` longer than that axis is an error (the sidecar does not
    match the image).
    """
    times = np.asarray(slice_times, dtype=np.float64)
    n_slices = data.shape[slice_axis]
    if times.size != n_slices:
        raise ValueError(f"SliceTiming has {times.size} entries but the image has {n_slices} slices "
                         f"along axis {slice_axis}")
    if reverse:
        times = times[::-1]
    t_ref = reference_time(times, ref_fraction)
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), slice_axis, 0)
    out = np.empty_like(moved)
    for k in range(n_slices):
        shift = (t_ref - times[k]) / tr
        rows = moved[k].reshape(-1, moved.shape[-1])
        if abs(shift) < 1e-9:
            out[k] = moved[k]
            continue
        out[k] = shift_series(rows, np.full(rows.shape[0], shift)).reshape(moved[k].shape).astype(np.float32)
    return np.moveaxis(out, 0, slice_axis), t_ref
