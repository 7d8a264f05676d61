"""Unit tests of the explanation building blocks: maps, atlas tables, brain states, names, checks, t-SNE."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.interpret.atlas_tables import parcellate, roi_timeseries, top_regions
from m2m_bids.interpret.brain_states import brain_states, pearson_matrix, pick_peaks, stitch_frame_scores
from m2m_bids.interpret.bundle import preproc_differences
from m2m_bids.interpret.maps import relative_to_uniform, smooth, upsample_tokens
from m2m_bids.interpret.naming import Namer, res_label
from m2m_bids.interpret.tsne import embed_latents, perplexity_for

from .synthetic import block_atlas


def test_upsample_tokens_keeps_peak_and_mean_one():
    tokens = np.full((4, 4, 4), 1 / 64)
    tokens[1, 2, 3] += 0.5
    tokens /= tokens.sum()
    up = upsample_tokens(tokens, (16, 16, 16), mode="nearest")
    assert up.shape == (16, 16, 16)
    assert up.mean() == pytest.approx(1.0, rel=1e-5)
    peak = np.unravel_index(up.argmax(), up.shape)
    assert (peak[0] // 4, peak[1] // 4, peak[2] // 4) == (1, 2, 3)
    smooth_up = upsample_tokens(tokens, (16, 16, 16))
    assert smooth_up.mean() == pytest.approx(1.0, rel=1e-3)


def test_relative_to_uniform_and_smooth():
    vol = np.zeros((9, 9, 9), np.float32)
    vol[4, 4, 4] = 10.0
    sm = smooth(vol, fwhm_mm=6.0, voxel_mm=3.0)
    assert sm.sum() == pytest.approx(10.0, rel=1e-3)  # mass kept inside the volume
    assert sm[4, 4, 4] < 10.0 and sm[4, 4, 5] > 0
    assert relative_to_uniform(sm).mean() == pytest.approx(1.0, rel=1e-5)
    assert not relative_to_uniform(np.zeros(5)).any()


def test_parcellate_ranks_regions_and_flags_top():
    grid, lut = block_atlas()
    vol = np.ones(grid.shape, np.float32)
    vol[grid == 5] = 3.0
    vol[grid == 7] = 2.0
    extra = pd.concat([lut, pd.DataFrame([{"index": 99, "name": "absent"}])], ignore_index=True)
    table = parcellate(vol, grid, extra, top_k=2)
    assert list(table["index"][:2]) == [5, 7]
    assert table["mean"].iloc[0] == pytest.approx(3.0)
    assert table["top"].sum() == 2
    absent = table[table["index"] == 99].iloc[0]
    assert absent["n_voxels"] == 0 and pd.isna(absent["rank"])
    best = top_regions(table, 2)
    assert [r["index"] for r in best] == [5, 7] and best[0]["rank"] == 1


def test_roi_timeseries_means_region_voxels():
    grid, lut = block_atlas()
    bold = np.zeros(grid.shape + (5,), np.float32)
    bold[grid == 3] = np.arange(5)
    series = roi_timeseries(bold, grid, [3, 4, 1000])
    np.testing.assert_allclose(series[:, 0], np.arange(5))
    assert not series[:, 1].any() and np.isnan(series[:, 2]).all()


def test_stitch_and_pick_peaks():
    scores = stitch_frame_scores(10, [0, 5], [np.array([0.1, 0.1, 0.6, 0.1, 0.1]), np.full(5, 0.2)])
    np.testing.assert_allclose(scores, [0.5, 0.5, 3.0, 0.5, 0.5, 1, 1, 1, 1, 1])
    overlap = stitch_frame_scores(4, [0, 1], [np.array([0.5, 0.5, 0.0]), np.array([0.0, 1.0, 0.0])])
    assert overlap[1] == pytest.approx(0.75) and overlap[2] == pytest.approx(1.5)
    peaks = pick_peaks(np.array([0, 5, 4.9, 0, 0, 3, 0, 0, 2, 0.0]), 3, min_separation=3)
    assert peaks == [1, 5, 8]


def test_pearson_matrix_matches_numpy_and_handles_constant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    x[:, 3] = 1.0
    r = pearson_matrix(x, list("abcd"))
    np.testing.assert_allclose(r.iloc[:3, :3].to_numpy(), np.corrcoef(x[:, :3].T), atol=1e-10)
    assert r.loc["d"].isna().all()


def test_brain_states_find_coupling_at_the_attended_moment():
    """Two regions are coupled only in frames 40-59; attention peaks there; state 1 shows the coupling."""
    grid, lut = block_atlas()
    rng = np.random.default_rng(1)
    t = 80
    bold = rng.normal(size=grid.shape + (t,)).astype(np.float32)
    shared = rng.normal(size=20)
    bold[grid == 1, 40:60] += 3 * shared
    bold[grid == 2, 40:60] += 3 * shared
    scores = np.ones(t)
    scores[50] = 5.0
    scores[10] = 3.0
    states = brain_states(scores, bold, grid, lut, n_states=2, segment_frames=20)
    assert [s.peak_frame for s in states] == [50, 10]
    assert (states[0].start_frame, states[0].stop_frame) == (40, 60)
    assert states[0].connectivity.loc["block_000", "block_001"] > 0.8
    assert abs(states[1].connectivity.loc["block_000", "block_001"]) < 0.6
    assert brain_states(np.ones(5), bold[..., :5], grid, lut) == []


def test_names_follow_entity_order(tmp_path: Path):
    namer = Namer(DerivativesWriter(tmp_path), "01", "A")
    path = namer.path("anat", "statmap", ".nii.gz", desc="T1w", stat="attention", res=res_label(3.0),
                      space="MNI152NLin2009aSym")
    assert path == tmp_path / "sub-01" / "ses-A" / "anat" / \
        "sub-01_ses-A_space-MNI152NLin2009aSym_res-3_stat-attention_desc-T1w_statmap.nii.gz"
    assert namer.path(None, "predictions", ".tsv", desc="m2m").parent == tmp_path / "sub-01"
    assert res_label(2.5) == "2p5"
    with pytest.raises(ValueError):
        namer.path(None, "x", ".tsv", bogus="1")


def test_preproc_differences_name_what_differs():
    card = {"fwhm_mm": 6.0, "resolution_mm": 3.0, "grid_shape": [64, 64, 64], "min_volumes": 20}
    same = {"fwhm_mm": 6, "resolution_mm": 3.0, "grid_shape": (64, 64, 64), "min_volumes": 50}
    assert preproc_differences(card, same) == []
    diffs = preproc_differences(card, {**same, "fwhm_mm": 4.0})
    assert diffs == ["fwhm_mm: model=6.0, data=4.0"]


def _write_rows(args: tuple[str, int]) -> None:
    from m2m_bids.interpret.predictions import update_predictions

    out, i = args
    rows = pd.DataFrame([{"participant_id": f"sub-{i:02d}", "session_id": "n/a", "n_windows": 1,
                          "predicted_label": "AD", "prob_CN": 0.2, "prob_AD": 0.8, "model_id": "m2m@x",
                          "in_training_set": False}])
    update_predictions(Path(out), rows, ["CN", "AD"])


def test_dataset_predictions_survive_parallel_jobs(tmp_path: Path):
    with mp.get_context("fork").Pool(3) as pool:
        pool.map(_write_rows, [(str(tmp_path), i) for i in range(8)])
    table = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert sorted(table["participant_id"]) == [f"sub-{i:02d}" for i in range(8)]
    _write_rows((str(tmp_path), 3))  # re-applying replaces, never duplicates
    assert len(pd.read_csv(tmp_path / "predictions.tsv", sep="\t")) == 8
    assert "prob_AD" in (tmp_path / "predictions.json").read_text()


def test_tsne_adapts_perplexity_to_tiny_n():
    assert perplexity_for(6) == pytest.approx(5 / 3)
    assert perplexity_for(1000) == 30.0
    rng = np.random.default_rng(0)
    rows = [{"participant_id": f"sub-{i}", "session_id": "n/a", "modality": m, "label": "AD" if i % 2 else "CN",
             "vector": rng.normal(size=8) + (3 if i % 2 else 0)} for i in range(5) for m in ("fmri", "smri")]
    coords, perplexity = embed_latents(pd.DataFrame(rows))
    assert perplexity < 10 and coords[["tsne_1", "tsne_2"]].notna().all().all()
    few, p = embed_latents(pd.DataFrame(rows[:2]))
    assert np.isnan(p) and few["tsne_1"].isna().all()


def test_app_error_codes_for_leakage():
    from m2m_bids.interpret.api import check_leakage

    class FakeCard:  # only the attributes check_leakage reads
        training_participants = {"01"}
        card_path = Path("/m/model-card.json")

    with pytest.raises(AppError) as err:
        check_leakage(FakeCard(), "01", allow=False)  # type: ignore[arg-type]
    assert err.value.code == ExitCode.DATA_ERROR and "training set" in err.value.message
    assert check_leakage(FakeCard(), "01", allow=True) is True  # type: ignore[arg-type]
    assert check_leakage(FakeCard(), "02", allow=False) is False  # type: ignore[arg-type]
