"""``connectome-logreg``: features are right, it learns planted coupling / atrophy, same folds and files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from planted import arch_config, build_planted

from m2m_bids.classical.api import train_classical
from m2m_bids.classical.features import _region_operator, fisher_z_connectome, make_parcellation, roi_timeseries
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.training.labels import derive_labels
from m2m_bids.training.metrics import METRICS
from m2m_bids.training.splits import make_splits


def test_roi_means_and_fisher_z_connectome():
    rng = np.random.default_rng(0)
    ts = rng.normal(size=(50, 3))
    ts[:, 1] = 2 * ts[:, 0] + 1  # perfectly correlated with region 0
    ts[:, 2] = 0.0  # flat: no defined correlation
    z = fisher_z_connectome(ts)  # edges (0,1), (0,2), (1,2)
    assert z[0] > 5 and z[1] == 0.0 and z[2] == 0.0
    noisy = rng.normal(size=(50, 4))
    iu = np.triu_indices(4, k=1)
    np.testing.assert_allclose(np.tanh(fisher_z_connectome(noisy)), np.corrcoef(noisy.T)[iu], atol=1e-9)


def test_region_operator_averages_in_mask_voxels(cache):
    entries, _ = build_planted(cache, n_per_class=1, frames=6, seed=0)
    parc = make_parcellation(entries[0])
    assert parc.n_regions > 80 and "Hippocampus_L" in parc.names
    fmri = np.asarray(entries[0].load("fmri"), dtype=np.float32)
    mask = np.ones(parc.labels.shape, bool)
    op = _region_operator(parc, mask)
    ts = roi_timeseries(fmri, op, chunk=4)  # chunking over frames gives the same result
    k = parc.names.index("Hippocampus_L")
    expected = fmri[parc.labels == parc.indices[k]].mean(axis=0)
    np.testing.assert_allclose(ts[:, k], expected, rtol=1e-4, atol=1e-5)
    assert len(parc.feature_names()) == parc.n_regions * (parc.n_regions - 1) // 2 + parc.n_regions


@pytest.mark.parametrize("effect", [{"decoupling": 0.8}, {"atrophy": 0.8}])
def test_learns_planted_coupling_or_atrophy_with_the_deep_models_folds(cache, tmp_path, effect):
    frames = 40 if "decoupling" in effect else 12
    entries, phenotype = build_planted(cache, n_per_class=10, frames=frames, seed=2, **effect)
    phenotype.loc["05", "diagnosis"] = np.nan  # unusable label: reported and left out, as for deep models
    cfg = arch_config(tmp_path, "connectome-logreg", folds=4)
    result = train_classical(entries, phenotype, cfg, cfg.execution.output_dir)
    assert result.summary["roc_auc"]["mean"] >= 0.8, (effect, result.summary)
    assert result.excluded == {"05": "label missing or rule inputs missing"}

    labels = derive_labels(phenotype, sorted(phenotype.index), label_column=cfg.train.label_column,
                           classes=list(cfg.train.classes), label_rule=cfg.train.label_rule)
    folds, final = make_splits(labels.y, folds=4, val_fraction=cfg.train.val_fraction, seed=cfg.execution.random_seed)
    assert result.splits == folds and result.final_split == final  # identical folds for the same seed

    out = cfg.execution.output_dir / "group"
    table = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert list(table["split"]) == [f"fold-{k}" for k in range(1, 5)] + ["mean", "sd"]
    assert list(table.columns) == ["split", *METRICS]
    oof = pd.read_csv(out / "oof-predictions.tsv", sep="\t")
    assert sorted(oof["participant_id"]) == sorted(f"sub-{p}" for p in labels.y.index)
    assert np.allclose(oof[["prob_CN", "prob_AD"]].sum(axis=1), 1.0)
    assert (out / "figures" / "roc.svg").stat().st_size > 1000
    model = json.loads((cfg.execution.output_dir / "models" / "model-connectome-logreg"
                        / "classical-model.json").read_text())
    kept = [model["features"]["names"][i] for i in model["model"]["selected_features"]]
    planted = ("Precuneus", "Angular") if "decoupling" in effect else ("Hippocampus", "ParaHippocampal")
    assert any(all(region in name for region in planted) if "decoupling" in effect
               else any(region in name for region in planted) for name in kept)
    assert len(model["model"]["coef"][0]) == len(kept)


def test_options_and_a_grid_without_affine_are_clear_errors(cache, tmp_path):
    entries, phenotype = build_planted(cache, n_per_class=4, frames=6, seed=5)
    cfg = arch_config(tmp_path, "connectome-logreg", folds=2, overrides={"C": 1.0})
    with pytest.raises(AppError) as err:
        train_classical(entries, phenotype, cfg, cfg.execution.output_dir)
    assert err.value.code is ExitCode.USAGE and "k_grid" in err.value.render()

    from dataclasses import replace

    from m2m_bids.preproc.entrymeta import evolve

    bare = [replace(e, meta=evolve(e.meta, geometry=None)) for e in entries]
    with pytest.raises(AppError) as err:
        train_classical(bare, phenotype, arch_config(tmp_path, "connectome-logreg", folds=2), tmp_path / "o2")
    assert err.value.code is ExitCode.DATA_ERROR and "affine" in err.value.render()


def test_three_classes_one_vs_rest(cache, tmp_path):
    entries, phenotype = build_planted(cache, n_per_class=6, frames=12, atrophy=0.8, seed=6)
    phenotype["diagnosis"] = [["CN", "MCI", "AD"][i % 3] for i in range(len(phenotype))]
    cfg = arch_config(tmp_path, "connectome-logreg", folds=2, classes=["CN", "MCI", "AD"])
    result = train_classical(entries, phenotype, cfg, cfg.execution.output_dir)
    assert set(result.oof.columns) >= {"prob_CN", "prob_MCI", "prob_AD"}
    assert np.allclose(result.oof[["prob_CN", "prob_MCI", "prob_AD"]].sum(axis=1), 1.0)
    assert 0.0 <= result.summary["roc_auc"]["mean"] <= 1.0
    model = json.loads((cfg.execution.output_dir / "models" / "model-connectome-logreg"
                        / "classical-model.json").read_text())
    assert model["classes"] == ["CN", "MCI", "AD"] and len(model["model"]["coef"]) == 3
