"""Per-run maps (GM probability, mALFF/fALFF, mean BOLD) against known answers."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from m2m_bids.preproc.maps import amplitude_maps, coverage_mask, grey_matter_probability, mean_image
from m2m_bids.synth.geometry import resample_to_resolution
from m2m_bids.synth.sources import load_templates


@pytest.fixture(scope="module")
def tissues() -> dict[str, np.ndarray]:
    """The ICBM152 T1 the synthetic generator uses, with its GM/WM probability maps, at 4 mm."""
    raw, affine = load_templates()
    return {key: resample_to_resolution(data, affine, 4.0)[0] for key, data in raw.items()}


def test_grey_matter_probability_follows_tissue_ground_truth(tissues) -> None:
    mask = tissues["mask"] > 0.5
    rng = np.random.default_rng(0)
    t1 = (tissues["t1"] + rng.normal(0, 0.02, mask.shape)) * 1000.0  # scanner-like scale
    gm = grey_matter_probability(t1, mask, spacing_mm=4.0)
    truth_gm, truth_wm = tissues["gm"], tissues["wm"]
    truth_csf = np.clip(tissues["mask"] - truth_gm - truth_wm, 0, 1)
    in_gm, in_wm, in_csf = (mask & (t > 0.6) for t in (truth_gm, truth_wm, truth_csf))
    assert in_gm.sum() > 200 and in_wm.sum() > 200 and in_csf.sum() > 10
    # measured: GM 0.67-0.71, WM 0.02-0.03, CSF < 0.01
    assert gm[in_gm].mean() > 0.5, gm[in_gm].mean()
    assert gm[in_wm].mean() < 0.15 and gm[in_csf].mean() < 0.15
    assert np.all(gm[~mask] == 0) and gm.min() >= 0 and gm.max() <= 1
    # the class order does not depend on the intensity scale (z-scored T1w on the grid)
    z = np.where(mask, (t1 - np.median(t1[mask])) / t1[mask].std(), 0.0)
    assert np.corrcoef(grey_matter_probability(z, mask, spacing_mm=4.0)[mask], gm[mask])[0, 1] > 0.95


def test_alff_and_falff_of_sinusoids() -> None:
    """A 0.05 Hz oscillation is all low-frequency (fALFF ~ 1), a 0.2 Hz one none of it (fALFF ~ 0)."""
    tr, n = 2.0, 200
    t = np.arange(n) * tr
    series = np.zeros((3, 1, 1, n), dtype=np.float32)
    series[0, 0, 0] = 100 + 2.0 * np.sin(2 * np.pi * 0.05 * t)
    series[1, 0, 0] = 100 + 2.0 * np.sin(2 * np.pi * 0.2 * t)
    series[2, 0, 0] = 100 + 5.0 * np.sin(2 * np.pi * 0.05 * t)  # outside the mask
    mask = np.array([1, 1, 0], bool).reshape(3, 1, 1)
    alff, falff = amplitude_maps(series, mask, repetition_time=tr, band_hz=(0.01, 0.08))
    assert falff[0, 0, 0] > 0.85 and falff[1, 0, 0] < 0.05, falff.ravel()
    assert alff[0, 0, 0] > 50 * alff[1, 0, 0]
    assert alff[mask].mean() == pytest.approx(1.0, rel=1e-5)  # mALFF: divided by its in-mask mean
    assert alff[2, 0, 0] == 0 and falff[2, 0, 0] == 0
    # scale-free: a voxel scaled by 10 has the same fALFF and (normalised) ALFF pattern
    alff10, falff10 = amplitude_maps(series * 10, mask, repetition_time=tr)
    np.testing.assert_allclose(falff10, falff, atol=1e-5)
    np.testing.assert_allclose(alff10, alff, atol=1e-4)
    with pytest.raises(ValueError, match="no frequency bin"):
        amplitude_maps(series[..., :5], mask, repetition_time=tr)


def test_mean_image_and_coverage() -> None:
    series = np.zeros((2, 2, 1, 4), dtype=np.float32)
    series[0, 0, 0] = 100.0
    series[1, 0, 0] = 300.0
    series[0, 1, 0] = 50.0  # in the brain mask below? no: outside
    brain = np.array([[1, 0], [1, 1]], np.uint8)[..., None]
    mask = coverage_mask(brain, series)
    assert mask.sum() == 2 and not mask[1, 1, 0]  # brain voxel with no BOLD signal is dropped
    mean = mean_image(series, mask)
    np.testing.assert_allclose(mean[mask], [0.5, 1.5])
    assert mean[0, 1, 0] == 0


def test_grey_matter_probability_leaves_nothing_in_tmpdir(tissues, tmp_path, monkeypatch) -> None:
    """antspyx's Atropos writes its posteriors to mktemp() names; none may outlive the call."""
    mask = tissues["mask"] > 0.5
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    grey_matter_probability(tissues["t1"] * 1000.0, mask, spacing_mm=4.0)
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert tempfile.gettempdir() == str(tmpdir)
