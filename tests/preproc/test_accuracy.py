"""Accuracy on synthetic data with known answers: registration, motion, slice timing, smoothing."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import head_image, rigid_matrix, subject_affine  # noqa: E402

from m2m_bids.preproc.grid import OutputGrid, make_grid  # noqa: E402
from m2m_bids.preproc.template import template_image  # noqa: E402
from m2m_bids.preproc.motion import estimate_motion, framewise_displacement, params_to_matrices  # noqa: E402
from m2m_bids.preproc.registration import bias_correct, register_t1w_to_template  # noqa: E402
from m2m_bids.preproc.resample import FWHM_TO_SIGMA, resample_series, smooth  # noqa: E402
from m2m_bids.preproc.slicetiming import parse_slice_encoding, slice_time_correct  # noqa: E402


@pytest.mark.parametrize("method", ["rigid", "affine"])
def test_t1w_registration_error_below_1p5_mm(method: str) -> None:
    """Template moved by 6 degrees / 8 mm (+ 5 % scaling for affine), registered back at 4 mm."""
    truth = rigid_matrix((6.0, -4.0, 5.0), (6.0, -5.0, 4.0))  # subject mm -> MNI mm
    if method == "affine":
        truth = truth @ np.diag([1.05, 0.97, 1.0, 1.0])
    shape = (48, 57, 48)
    affine = subject_affine(shape, 4.0, flip_x=True)
    t1 = head_image(2.0, truth, shape, affine) + np.random.default_rng(0).normal(0, 5, shape)
    img = nib.as_closest_canonical(nib.Nifti1Image(t1.astype(np.float32), affine))
    prepared, brain = bias_correct(img, np.asarray(img.dataobj) > 100, 4.0)  # the template is brain-only
    reg = register_t1w_to_template(prepared, brain, method, 4.0, make_grid(6.0, (16, 16, 16)))
    mask = template_image("mask", 4.0)
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    mni = ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    expected = mni @ np.linalg.inv(truth)[:3, :3].T + np.linalg.inv(truth)[:3, 3]
    found = mni @ reg.matrix[:3, :3].T + reg.matrix[:3, 3]
    error = np.linalg.norm(found - expected, axis=1)
    assert error.mean() < 1.5, f"mean registration error {error.mean():.2f} mm"


def test_motion_parameters_recovered() -> None:
    rng = np.random.default_rng(1)
    tpl = template_image("t1", 4.0)
    ref = np.asarray(tpl.dataobj) * 1000
    n = 8
    truth = np.zeros((n, 6))
    truth[1:, :3] = rng.uniform(-2.5, 2.5, (n - 1, 3))
    truth[1:, 3:] = np.deg2rad(rng.uniform(-2.5, 2.5, (n - 1, 3)))
    center = tpl.affine[:3, :3] @ ((np.asarray(ref.shape) - 1) / 2) + tpl.affine[:3, 3]
    grid = OutputGrid(ref.shape, tpl.affine, 4.0)
    series = resample_series(np.repeat(ref[..., None], n, -1), tpl.affine, grid,
                             np.linalg.inv(params_to_matrices(truth, center)))
    series += rng.normal(0, 10, series.shape).astype(np.float32)
    series[..., 0] = ref + rng.normal(0, 10, ref.shape)
    found = estimate_motion(series, tpl.affine)
    assert np.abs(found[:, :3] - truth[:, :3]).max() < 0.5
    assert np.rad2deg(np.abs(found[:, 3:] - truth[:, 3:])).max() < 0.5
    fd = framewise_displacement(found)
    assert fd[0] == 0 and np.allclose(fd, framewise_displacement(truth), atol=1.5)


def test_slice_timing_reduces_planted_offset_error() -> None:
    """Each slice samples sin(w t) at its own offset; after correction all match the reference time."""
    tr, n_frames, n_slices = 2.0, 60, 8
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.zeros(n_slices)
    times[order] = np.arange(n_slices) * tr / n_slices
    omega = 2 * np.pi / 17.0  # 17 s period: well below Nyquist (4 s)
    t = np.arange(n_frames) * tr
    data = np.zeros((3, 3, n_slices, n_frames), dtype=np.float32)
    for k in range(n_slices):
        data[:, :, k, :] = 100 + 10 * np.sin(omega * (t + times[k]))
    corrected, t_ref = slice_time_correct(data, times.tolist(), tr, slice_axis=2, ref_fraction=0.5)
    target = 100 + 10 * np.sin(omega * (t + t_ref))
    interior = slice(5, -5)
    before = np.abs(data[1, 1, :, interior] - target[interior]).mean()
    after = np.abs(corrected[1, 1, :, interior] - target[interior]).mean()
    assert after < 0.1 * before, (before, after)
    assert parse_slice_encoding("k-") == (2, True) and parse_slice_encoding(None) == (2, False)
    with pytest.raises(ValueError):
        slice_time_correct(data, times[:-1].tolist(), tr, slice_axis=2)


def test_smoothing_fwhm_within_10_percent() -> None:
    vol = np.zeros((41, 41, 41), dtype=np.float32)
    vol[20, 20, 20] = 1.0
    out = smooth(vol, 6.0, 3.0)
    coords = (np.arange(41) - 20) * 3.0
    for axis in range(3):
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        sigma = np.sqrt((profile * coords**2).sum() / profile.sum())
        fwhm = sigma / FWHM_TO_SIGMA
        assert abs(fwhm - 6.0) / 6.0 < 0.10, fwhm
    assert np.isclose(out.sum(), 1.0, atol=1e-3)


def test_resampling_zero_outside_field_of_view() -> None:
    data = np.ones((10, 10, 10), dtype=np.float32)
    src = np.diag([3.0, 3.0, 3.0, 1.0])
    grid = OutputGrid((20, 10, 10), np.diag([3.0, 3.0, 3.0, 1.0]), 3.0)
    out = resample_series(data, src, grid, np.eye(4)[None])
    assert np.allclose(out[:10], 1.0) and np.allclose(out[11:], 0.0)


def test_syn_coordinates_match_known_transform() -> None:
    """SyN: the warped grid coordinates (composite affine + displacement) land on the known answer."""
    from m2m_bids.preproc.template import grid_template

    truth = rigid_matrix((4.0, -3.0, 2.0), (3.0, -2.0, 4.0))
    shape = (48, 57, 48)
    affine = subject_affine(shape, 4.0)
    t1 = head_image(2.0, truth, shape, affine)
    grid = make_grid(6.0, (16, 16, 16))
    reg = register_t1w_to_template(nib.Nifti1Image(t1.astype(np.float32), affine), t1 > 0, "syn", 4.0, grid)
    assert reg.coords is not None and reg.coords.shape == (16, 16, 16, 3)
    inside = grid_template("mask", grid) > 0
    world = grid.world_coords()
    expected = world @ np.linalg.inv(truth)[:3, :3].T + np.linalg.inv(truth)[:3, 3]
    error = np.linalg.norm(reg.coords - expected, axis=-1)[inside]
    assert not np.isnan(error).any() and error.mean() < 1.5, error.mean()
