"""Synthetic resting-state BOLD: coupled regional signals, slice timing and head motion.

Each atlas region carries one haemodynamic time series; regions of a resting-state network share
a planted correlation, and the AD (and milder MCI) correlation changes from
:data:`~m2m_bids.synth.spec.COUPLING_AD` are applied to the target matrix; the fluctuation of the
regions in :data:`~m2m_bids.synth.spec.FLUCTUATION_LOSS_AD` is scaled down. Every voxel is
sampled at its own slice's acquisition time and through that volume's rigid head motion, so
slice-timing and motion correction have real work to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import math

from scipy import ndimage

from m2m_bids.synth.anat import HeadPose, acquisition_affine
from m2m_bids.synth.geometry import SmoothWarp, apply, motion_matrices, voxel_coords
from m2m_bids.synth.sources import Sources, sample_mni
from m2m_bids.synth.spec import (BETWEEN_REGION_R, CLASS_SCALE, COUPLING_AD, NETWORKS,
                                 WITHIN_NETWORK_R, SynthSpec)

BOLD_SCALE = 1000.0
FINE_DT = 0.1  # s; resolution of the latent regional signals


@dataclass(frozen=True)
class BoldRun:
    """One simulated run: stored data plus everything needed to score preprocessing."""

    data: np.ndarray  # int16 (X, Y, Z, T)
    affine: np.ndarray
    slice_timing: list[float]
    motion_params: np.ndarray  # (T, 6): tx, ty, tz [mm], rx, ry, rz [rad]
    motion_centre: np.ndarray  # scanner mm
    region_series: np.ndarray  # (T, R) latent regional signal at volume onsets (unit variance)
    fine_series: np.ndarray  # (n_fine, R) the same signals every FINE_DT seconds
    amplitude: np.ndarray  # (R,) scale of each regional signal in the image (1 - fluctuation loss)


def slice_times(n_slices: int, tr: float, order: str) -> list[float]:
    """Acquisition onset of each slice (s), Siemens-style interleaving for ``interleaved``."""
    if order == "ascending":
        sequence = list(range(n_slices))
    elif order == "descending":
        sequence = list(range(n_slices - 1, -1, -1))
    else:
        first = 1 if n_slices % 2 == 0 else 0
        sequence = list(range(first, n_slices, 2)) + list(range(1 - first, n_slices, 2))
    times = np.zeros(n_slices)
    times[sequence] = np.arange(n_slices) * tr / n_slices
    return [round(float(t), 4) for t in times]


def random_motion(n_vols: int, spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """Smooth random-walk rigid motion (first volume = reference = zero)."""
    steps = np.concatenate([rng.normal(0, spec.motion_mm, (n_vols, 3)),
                            rng.normal(0, np.deg2rad(spec.motion_deg), (n_vols, 3))], axis=1)
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0)
    walk = ndimage.gaussian_filter1d(walk, sigma=1.0, axis=0, mode="nearest")
    return walk - walk[0]


def coupling_matrix(region_names: tuple[str, ...], diagnosis: str,
                    effect_size: float) -> tuple[np.ndarray, list[dict]]:
    """Target correlation between all regions for a class, and the planted pair changes.

    Lowering only some pairs inside a network can leave a matrix that is not a correlation
    matrix; it is then projected to the nearest positive-definite one, and the recorded
    ``target_r``/``delta_r`` are the values after that projection (``requested_delta_r`` before).
    """
    n = len(region_names)
    pos = {name: i for i, name in enumerate(region_names)}
    corr = np.full((n, n), BETWEEN_REGION_R)
    for members in NETWORKS.values():
        idx = [pos[m] for m in members]
        corr[np.ix_(idx, idx)] = WITHIN_NETWORK_R
    changes = []
    scale = CLASS_SCALE[diagnosis] * effect_size
    for label, group_a, group_b, delta in COUPLING_AD:
        ia, ib = [pos[r] for r in group_a], [pos[r] for r in group_b]
        corr[np.ix_(ia, ib)] += delta * scale
        corr[np.ix_(ib, ia)] += delta * scale
        changes.append({"name": label, "regions_a": list(group_a), "regions_b": list(group_b),
                        "requested_delta_r": round(delta * scale, 4) + 0.0})
    np.fill_diagonal(corr, 1.0)
    try:
        np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:  # keep it a valid correlation matrix
        vals, vecs = np.linalg.eigh(corr)
        corr = vecs @ np.diag(np.clip(vals, 1e-6, None)) @ vecs.T
        d = np.sqrt(np.diag(corr))
        corr = corr / d[:, None] / d[None, :]
    for change in changes:  # report what the (possibly PSD-adjusted) matrix really holds
        ia = [pos[r] for r in change["regions_a"]]
        ib = [pos[r] for r in change["regions_b"]]
        target = float(corr[np.ix_(ia, ib)].mean())
        change["target_r"] = round(target, 4)
        change["delta_r"] = round(target - WITHIN_NETWORK_R, 4) + 0.0
    return corr, changes


def canonical_hrf(dt: float) -> np.ndarray:
    """SPM-like double-gamma haemodynamic response sampled every ``dt`` seconds (32 s long)."""
    t = np.arange(0.0, 32.0, dt)

    def gamma_pdf(shape: float) -> np.ndarray:
        return t ** (shape - 1.0) * np.exp(-t) / math.gamma(shape)

    hrf = gamma_pdf(6.0) - gamma_pdf(16.0) / 6.0
    return hrf / np.abs(hrf).sum()


def region_signals(corr: np.ndarray, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Latent regional BOLD signals (n_fine, R): correlated white noise through the HRF."""
    hrf = canonical_hrf(FINE_DT)
    n_fine = int(np.ceil(duration / FINE_DT)) + 2
    chol = np.linalg.cholesky(corr)
    white = rng.standard_normal((n_fine + len(hrf) - 1, corr.shape[0])) @ chol.T
    n_fft = int(2 ** np.ceil(np.log2(white.shape[0] + len(hrf))))
    full = np.fft.irfft(np.fft.rfft(white, n_fft, axis=0) * np.fft.rfft(hrf, n_fft)[:, None], n_fft, axis=0)
    bold = full[len(hrf) - 1: white.shape[0]]  # the 'valid' part of the convolution
    bold -= bold.mean(axis=0)
    return (bold / bold.std(axis=0)).astype(np.float32)


def _at_times(fine: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of fine-grid signals (n_fine, R) at arbitrary times -> (*times, R)."""
    pos = np.clip(times / FINE_DT, 0, fine.shape[0] - 1.001)
    lo = np.floor(pos).astype(int)
    w = (pos - lo)[..., None].astype(np.float32)
    return fine[lo] * (1 - w) + fine[lo + 1] * w


def amplitude_vector(region_names: tuple[str, ...], loss: dict[str, float]) -> np.ndarray:
    """Per-region signal scale (R,): ``1 - loss`` for the regions in ``loss``, 1 elsewhere."""
    return np.array([1.0 - loss.get(name, 0.0) for name in region_names], dtype=np.float32)


def simulate_bold(src: Sources, spec: SynthSpec, rng: np.random.Generator, pose: HeadPose,
                  corr: np.ndarray, warp: SmoothWarp | None = None,
                  amplitude: np.ndarray | None = None) -> BoldRun:
    """One BOLD run on an oblique EPI grid; returns data and the true acquisition parameters.

    ``amplitude`` (R,) scales each region's fluctuation (see :func:`amplitude_vector`); None = 1.
    """
    amplitude = np.ones(corr.shape[0], np.float32) if amplitude is None else np.asarray(amplitude, np.float32)
    shape = tuple(spec.bold_shape)
    tr, n_vols = spec.repetition_time, spec.n_volumes
    affine = acquisition_affine(shape, tuple(spec.bold_zooms), spec.bold_axcodes, pose,
                                spec.grid_tilt_deg, rng)
    timing = slice_times(shape[2], tr, spec.slice_order)
    fine = region_signals(corr, n_vols * tr + tr, rng)
    onsets = np.arange(n_vols)[:, None] * tr + np.asarray(timing)[None, :]  # (T, Z)
    regional = _at_times(fine, onsets) * amplitude  # (T, Z, R)
    regional = np.concatenate([np.zeros(regional.shape[:2] + (1,), np.float32), regional], axis=2)
    params = random_motion(n_vols, spec, rng)
    centre = pose.brain_centre_scanner
    epi = src.blurred("epi", _blur_sigma(spec.bold_zooms, spec.template_res))
    vox = voxel_coords(shape)
    slice_of_voxel = np.indices(shape)[2].ravel()
    drift = 1.0 + 0.01 * np.cos(np.linspace(0, np.pi, n_vols) + rng.uniform(0, np.pi))
    out = np.empty(shape + (n_vols,), dtype=np.int16)
    matrices = motion_matrices(params, centre)
    n_vox = vox.shape[1]
    chunk = max(1, 4_000_000 // n_vox)  # volumes per map_coordinates call (bounded memory)
    for first in range(0, n_vols, chunk):
        ks = range(first, min(first + chunk, n_vols))
        mni = np.concatenate([apply(pose.matrix @ matrices[k] @ affine, vox) for k in ks], axis=1)
        if warp is not None:
            mni += warp.displacement(mni)
        base = sample_mni(epi, src, mni).reshape(len(ks), n_vox)
        label = sample_mni(src.labels, src, mni, order=0).astype(np.int64).reshape(len(ks), n_vox)
        for j, k in enumerate(ks):
            value = base[j] * (1.0 + spec.bold_signal_change * regional[k, slice_of_voxel, label[j]])
            out[..., k] = _magnitude(value.reshape(shape) * drift[k], spec.bold_noise, rng)
    return BoldRun(data=out, affine=affine, slice_timing=timing, motion_params=params,
                   motion_centre=centre, region_series=_at_times(fine, np.arange(n_vols) * tr),
                   fine_series=fine, amplitude=amplitude)


def mni_bold(src: Sources, spec: SynthSpec, grid_affine: np.ndarray, shape: tuple[int, int, int],
             run: BoldRun, rng: np.random.Generator) -> np.ndarray:
    """The same run as a perfect preprocessing would give it: MNI grid, no motion, one time/volume."""
    ref_time = float(np.median(run.slice_timing))
    times = np.arange(spec.n_volumes) * spec.repetition_time + ref_time
    regional = _at_times(run.fine_series, times) * run.amplitude
    regional = np.concatenate([np.zeros((len(times), 1), np.float32), regional], axis=1)
    mni = apply(grid_affine, voxel_coords(shape))
    base = sample_mni(src.blurred("epi", _blur_sigma((spec.deriv_bold_res,), spec.template_res)), src, mni)
    label = sample_mni(src.labels, src, mni, order=0).astype(np.int64)
    data = base[:, None] * (1.0 + spec.bold_signal_change * regional[:, label].T)
    data += rng.normal(0, spec.bold_noise, data.shape).astype(np.float32) * (base[:, None] > 0)
    return np.clip(data * BOLD_SCALE, 0, None).reshape(shape + (len(times),)).astype(np.float32)


def _blur_sigma(zooms: tuple[float, ...], res: float) -> float:
    """Gaussian sigma (working-grid voxels) approximating a coarser acquisition's point spread."""
    return max(min(zooms) / res - 1.0, 0.0) / 2.0


def _magnitude(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add complex Gaussian noise and take the magnitude (Rician), scaled to int16."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.sqrt(real * real + imag * imag) * BOLD_SCALE, 0, 32767).astype(np.int16)
