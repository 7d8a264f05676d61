"""Per-run maps on the output grid, stored next to ``fmri``/``smri`` in every cache entry.

They give models compact, participant-comparable summaries that the voxel z-scored series cannot
carry: z-scoring sets every voxel's variance to 1, which erases the amplitude of its fluctuations
(ALFF) and its mean signal; and the T1w intensity alone mixes tissue contrast with atrophy, where
a grey-matter probability isolates the tissue AD removes.

* ``gm``: grey-matter probability of the T1w (3-class Atropos k-means, CSF < GM < WM in T1w
  intensity, inside the brain mask).
* ``alff`` / ``falff``: amplitude of low-frequency (0.01-0.08 Hz) fluctuations, divided by its
  in-mask mean (mALFF, Zang et al. 2007), and its fraction of the amplitude over all frequencies
  (fALFF, Zou et al. 2008), which is insensitive to the voxel's overall scale.
* ``bold_mean``: the mean BOLD image divided by its in-mask mean.

All maps are zero outside the mask, float32 here (the cache stores float16).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

#: Atropos k-means classes for a T1w: CSF, GM, WM (ascending intensity).
N_TISSUE_CLASSES = 3
GM_CLASS_RANK = 1


def coverage_mask(brain: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Brain voxels the BOLD field of view covers (a partial-coverage EPI leaves the rest at zero)."""
    return (np.asarray(brain) > 0) & (np.abs(series).max(axis=-1) > 0)


@contextmanager
def _private_tempdir() -> Iterator[None]:
    """Point ``tempfile`` at a folder removed on exit, for the duration of the block.

    antspyx's ``atropos`` writes its posterior images to ``tempfile.mktemp()`` names and never
    deletes them: three files per call, so every participant would leave litter in the user's
    TMPDIR (a shared /tmp on a cluster node) until it fills. Workers are processes, so swapping
    the module-level temp dir for one call affects no other thread's files.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="m2m-atropos-") as private:
        tempfile.tempdir = private
        try:
            yield
        finally:
            tempfile.tempdir = previous


def grey_matter_probability(t1w: np.ndarray, mask: np.ndarray, *, spacing_mm: float,
                            mrf: float = 0.1, iterations: int = 5) -> np.ndarray:
    """GM posterior of a 3-class Atropos (ANTs) k-means segmentation of ``t1w`` inside ``mask``.

    The classes are ranked by their mean T1w intensity rather than trusting Atropos' label order,
    so GM is the middle class whatever the intensity scale (z-scored or raw) of ``t1w``.
    """
    import ants

    inside = np.asarray(mask) > 0
    out = np.zeros(inside.shape, dtype=np.float32)
    if inside.sum() < 10 * N_TISSUE_CLASSES:
        return out
    data = np.asarray(t1w, dtype=np.float32)
    lo, hi = np.percentile(data[inside], [0.5, 99.5])
    scaled = np.where(inside, np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0), 0.0).astype(np.float32)
    spacing = (float(spacing_mm),) * 3
    image = ants.from_numpy(scaled, spacing=spacing)
    ants_mask = ants.from_numpy(inside.astype(np.float32), spacing=spacing)
    try:
        with _private_tempdir():
            result = ants.atropos(a=image, x=ants_mask, i=f"kmeans[{N_TISSUE_CLASSES}]", m=f"[{mrf},1x1x1]",
                                  c=f"[{iterations},0]", priorweight=0.0, r=0)  # r=0: fixed seed, reproducible
    except Exception as err:  # noqa: BLE001 - antspy raises a bare Exception for a failed Atropos
        raise ValueError(f"Atropos failed on {int(inside.sum())} brain voxels: {err}") from err
    labels = result["segmentation"].numpy()
    probs = [p.numpy() for p in result["probabilityimages"]]
    means = [float(scaled[labels == k + 1].mean()) if (labels == k + 1).any() else np.inf
             for k in range(len(probs))]
    gm = probs[int(np.argsort(means)[GM_CLASS_RANK])]
    out[inside] = np.clip(gm[inside], 0.0, 1.0)
    return out


def amplitude_maps(series: np.ndarray, mask: np.ndarray, *, repetition_time: float,
                   band_hz: tuple[float, float] = (0.01, 0.08)) -> tuple[np.ndarray, np.ndarray]:
    """(mALFF, fALFF) of a (X, Y, Z, T) series sampled every ``repetition_time`` seconds.

    Each voxel's series is linearly detrended; its amplitude spectrum (|FFT|, DC excluded) is
    averaged over ``band_hz`` (ALFF) and, summed, divided by the sum over all frequencies up to
    Nyquist (fALFF). ALFF is then divided by its in-mask mean. Raises ``ValueError`` when the run
    is too short for any frequency bin to fall in the band.
    """
    inside = np.asarray(mask) > 0
    n_frames = series.shape[-1]
    freqs = np.fft.rfftfreq(n_frames, d=float(repetition_time))
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    if not in_band.any():
        raise ValueError(f"a run of {n_frames} volumes x {repetition_time} s has no frequency bin in "
                         f"{band_hz[0]}-{band_hz[1]} Hz (resolution {freqs[1] if len(freqs) > 1 else 0:.4f} Hz)")
    voxels = np.asarray(series, dtype=np.float64)[inside]  # (V, T)
    t = np.arange(n_frames, dtype=np.float64)
    design = np.column_stack([np.ones(n_frames), t - t.mean()])
    beta, *_ = np.linalg.lstsq(design, voxels.T, rcond=None)
    residual = voxels - (design @ beta).T
    amplitude = np.abs(np.fft.rfft(residual, axis=-1))[:, 1:] * (2.0 / n_frames)
    band = in_band[1:]
    alff = amplitude[:, band].mean(axis=-1)
    total = amplitude.sum(axis=-1)
    falff = np.divide(amplitude[:, band].sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
    alff_map = np.zeros(inside.shape, dtype=np.float32)
    falff_map = np.zeros(inside.shape, dtype=np.float32)
    alff_map[inside] = alff / max(float(alff.mean()), 1e-12) if alff.size else alff
    falff_map[inside] = falff
    return alff_map, falff_map


def mean_image(series: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Temporal mean of a (X, Y, Z, T) series divided by its in-mask mean; zero outside the mask."""
    inside = np.asarray(mask) > 0
    mean = np.asarray(series, dtype=np.float32).mean(axis=-1)
    out = np.zeros(inside.shape, dtype=np.float32)
    if inside.any():
        scale = float(mean[inside].mean())
        out[inside] = mean[inside] / scale if abs(scale) > 1e-12 else 0.0
    return out
