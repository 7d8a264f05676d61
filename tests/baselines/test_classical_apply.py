"""``connectome-svc`` and the participant level of the classical archs (predictions, region importance, refusals)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from planted import ATROPHY, arch_config, build_planted
from sklearn.metrics import roc_auc_score

from m2m_bids.classical.api import calibrate, make_classifier, train_classical
from m2m_bids.classical.apply import apply_classical
from m2m_bids.classical.features import parcellation_from_card
from m2m_bids.classical.model import LinearModel, export, region_values
from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import ExitCode
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import evolve

SVC = "connectome-svc"


def participant_config(cfg: RunConfig, **execution: object) -> RunConfig:
    """The group run's configuration at the participant level (same preprocessing, same OUTPUT_DIR)."""
    update = {"analysis_level": "participant", **execution}
    return cfg.model_copy(update={"execution": cfg.execution.model_copy(update=update)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """connectome-svc trained on 20 planted-atrophy participants (01-20), 8 held out (31-38)."""
    root = tmp_path_factory.mktemp("classical-apply")
    cache = TensorCache(root / "cache")
    entries, phenotype = build_planted(cache, n_per_class=10, frames=12, atrophy=0.8, seed=2)
    held_out, held_phenotype = build_planted(cache, n_per_class=4, frames=12, atrophy=0.8, seed=7, first=31)
    cfg = arch_config(root, SVC, folds=4)
    result = train_classical(entries, phenotype, cfg, cfg.execution.output_dir)
    return cfg, result, entries, held_out, held_phenotype


@pytest.mark.parametrize("effect", [{"decoupling": 0.8}, {"atrophy": 0.8}])
def test_svc_learns_planted_effects_on_the_logreg_folds(cache, tmp_path, effect):
    frames = 40 if "decoupling" in effect else 12
    entries, phenotype = build_planted(cache, n_per_class=10, frames=frames, seed=2, **effect)
    svc = arch_config(tmp_path / "svc", SVC, folds=4)
    logreg = arch_config(tmp_path / "logreg", "connectome-logreg", folds=4)
    result = train_classical(entries, phenotype, svc, svc.execution.output_dir)
    baseline = train_classical(entries, phenotype, logreg, logreg.execution.output_dir)
    assert result.summary["roc_auc"]["mean"] >= 0.8, (effect, result.summary)
    assert [s.test for s in result.splits] == [s.test for s in baseline.splits]  # same test participants per fold
    oof = result.oof
    assert np.allclose(oof[["prob_CN", "prob_AD"]].sum(axis=1), 1.0)
    assert roc_auc_score(oof["true_label"] == "AD", oof["prob_AD"]) >= 0.8  # calibrated probabilities rank too
    metrics = json.loads((svc.execution.output_dir / "group" / "metrics.json").read_text())
    assert set(metrics["chosen_parameters"]) == {"fold-1", "fold-2", "fold-3", "fold-4", "final"}


@pytest.mark.parametrize("arch", ["connectome-logreg", SVC])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_json_model_gives_scikit_learns_probabilities(arch, n_classes):
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(30, 12))
    y = np.arange(30) % n_classes
    x[:, 3] += y
    model = make_classifier(arch, 1.0, 5000, seed=0, k_best=5, binary=n_classes == 2)
    model = calibrate(model, x, y, inner=3, seed=0) if arch == SVC else model.fit(x, y)
    exported = json.loads(json.dumps(export(model, arch)))  # what classical-model.json holds
    linear = LinearModel.from_dict(exported, n_classes)
    x_new = rng.normal(size=(7, 12))
    np.testing.assert_allclose(linear.proba(x_new), model.predict_proba(x_new), atol=1e-9)
    assert exported["link"] == ("platt" if arch == SVC else "logistic" if n_classes == 2 else "softmax")
    contributions = linear.contributions(x_new[:1], class_index=n_classes - 1)
    row, sign = linear.class_row(n_classes - 1)
    index = n_classes - 1 if n_classes > 2 else 0
    np.testing.assert_allclose(contributions.sum() + sign * linear.intercept[index], sign * linear.decision(x_new[:1])[0, index])


def test_platt_sigmoid_never_inverts_the_svc_ranking():
    """A sigmoid fitted the wrong way round (a > 0) is replaced by the constrained optimum a = 0."""
    from scipy.optimize import minimize_scalar
    from scipy.special import expit

    from m2m_bids.classical.api import _monotone

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(13, 6)), np.array([0] * 6 + [1] * 7)
    model = calibrate(make_classifier(SVC, 1.0, 5000, seed=0, k_best=3), x, y, inner=3, seed=0)
    calibrator = model.calibrated_classifiers_[0].calibrators[0]
    calibrator.a_ = 1.5  # what an unlucky out-of-fold fit gives: probability falling with the decision value
    _monotone(model, y)
    assert calibrator.a_ == 0.0
    targets = np.where(y == 1, 8 / 9, 1 / 8)  # Platt's smoothed targets, 7 positives and 6 negatives

    def log_loss(b: float) -> float:
        p = expit(-b)
        return float(-np.sum(targets * np.log(p) + (1 - targets) * np.log(1 - p)))

    assert calibrator.b_ == pytest.approx(minimize_scalar(log_loss).x, abs=1e-5)
    assert np.ptp(model.predict_proba(x)[:, 1]) == 0  # the base rate for everyone


def test_platt_in_sample_when_a_class_has_one_participant():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 6)), np.array([0, 0, 1])
    x[2] += 2.0
    model = calibrate(make_classifier(SVC, 1.0, 5000, seed=0, k_best=3), x, y, inner=1, seed=0)
    linear = LinearModel.from_dict(export(model, SVC), 2)
    np.testing.assert_allclose(linear.proba(x), model.predict_proba(x), atol=1e-9)
    assert model.predict_proba(x)[2, 1] > model.predict_proba(x)[0, 1]


def test_region_values_split_each_edge_between_its_two_regions():
    # 3 regions: edges (0,1), (0,2), (1,2), then the three regional T1w means
    values = region_values(np.array([2.0, 4.0, 0.0, 10.0, 20.0, 30.0]), 3)
    np.testing.assert_allclose(values, [10 + 1 + 2, 20 + 1, 30 + 2])
    with pytest.raises(ValueError, match="do not fit 3 regions"):
        region_values(np.zeros(5), 3)


def test_participant_level_applies_the_bundle(trained):
    cfg, result, _, held_out, phenotype = trained
    out = cfg.execution.output_dir
    bundle = out / "models" / f"model-{SVC}"
    card = json.loads((bundle / "classical-model.json").read_text())
    assert card["model"]["link"] == "platt" and card["preproc"]["grid_shape"] == [16, 16, 16]
    assert set(card["splits"]["final"]["train"]) | set(card["splits"]["final"]["val"]) == set(
        f"{i:02d}" for i in range(1, 21))

    assert apply_classical(bundle, held_out, participant_config(cfg)) == {}

    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert sorted(table["participant_id"]) == sorted(
        [f"sub-{p}" for p in phenotype.index] + ["sub-33", "sub-36"])  # two sessions each
    assert not table["in_training_set"].any() and table["model_id"].str.startswith(f"{SVC}@").all()
    assert np.allclose(table[["prob_CN", "prob_AD"]].sum(axis=1), 1.0) and (table["n_runs"] == 1).all()
    truth = table["participant_id"].str[4:].map(phenotype["diagnosis"])
    assert table.loc[truth == "AD", "prob_AD"].mean() > table.loc[truth == "CN", "prob_AD"].mean() + 0.2

    folder = out / "sub-33"
    preds = pd.read_csv(folder / "sub-33_ses-2_desc-connectomesvc_predictions.tsv", sep="\t")
    assert list(preds["scope"]) == ["session", "run"] and preds.loc[0, "session_id"] == "ses-2"
    sidecar = json.loads((folder / "sub-33_ses-2_desc-connectomesvc_predictions.json").read_text())
    assert sidecar["Arch"] == SVC and "Platt" in sidecar["Probabilities"] and sidecar["InTrainingSet"] is False

    stem = "sub-33_ses-1_space-MNI152NLin2009aSym_atlas-aal_res-6_stat-importance_desc-connectomesvc"
    regions = pd.read_csv(folder / f"{stem}_table.tsv", sep="\t")
    assert list(regions["rank"][:3]) == [1, 2, 3] and regions["top"].sum() == 5
    top = set(regions.loc[regions["rank"] <= 5, "name"])
    assert len(top & set(ATROPHY)) >= 2, regions.head(8)  # 4 planted of ~107 regions
    for participant, sign in (("33", -1), ("36", 1)):  # CN, AD (both with two sessions)
        own = pd.read_csv(out / f"sub-{participant}" / f"{stem.replace('sub-33', f'sub-{participant}')}_table.tsv",
                          sep="\t").set_index("name")
        assert sign * own.loc[list(ATROPHY), "contribution"].sum() > 0  # atrophy pushes towards AD
        np.testing.assert_allclose(own["importance"], regions.set_index("name").loc[own.index, "importance"])
    table_json = json.loads((folder / f"{stem}_table.json").read_text())
    assert table_json["ContributionTowards"] == "AD" and "half" in table_json["Description"]

    nii = folder / "sub-33_ses-1_space-MNI152NLin2009aSym_res-6_stat-importance_desc-connectomesvc_statmap.nii.gz"
    img = nib.load(nii)
    assert img.shape == (16, 16, 16) and np.allclose(img.affine, card["grid"]["affine"])
    labels = parcellation_from_card(card["features"], (16, 16, 16), np.asarray(card["grid"]["affine"])).labels
    hippocampus = regions.set_index("name").loc["Hippocampus_L", "index"]
    assert np.allclose(np.asarray(img.dataobj)[labels == hippocampus],
                       regions.set_index("name").loc["Hippocampus_L", "mean"], rtol=1e-5)
    html = (out / "sub-33.html").read_text()
    assert "Session 2" in html and "Hippocampus" in html and "run(s) averaged" in html and "towards AD" in html
    assert "predictions.tsv" in (out / ".bidsignore").read_text()


def test_training_participant_refused_unless_allowed_and_then_warned(trained, caplog):
    cfg, _, entries, _, _ = trained
    bundle = cfg.execution.output_dir / "models" / f"model-{SVC}"
    entry = entries[0]  # sub-01 trained the final model
    failures = apply_classical(bundle, [entry], participant_config(cfg))
    assert failures["01"].code == ExitCode.DATA_ERROR and "training set" in failures["01"].message
    assert failures["01"].path.endswith("classical-model.json")
    caplog.set_level(logging.WARNING)
    assert apply_classical(bundle, [entry], participant_config(cfg, allow_training_participants=True)) == {}
    assert "sub-01 was in the training set" in caplog.text
    table = pd.read_csv(cfg.execution.output_dir / "predictions.tsv", sep="\t").set_index("participant_id")
    assert bool(table.loc["sub-01", "in_training_set"]) is True


def test_preprocessing_mismatch_exits_65_naming_what_differs(trained):
    cfg, _, _, held_out, _ = trained
    bundle = cfg.execution.output_dir / "models" / f"model-{SVC}"
    smoothed = cfg.model_copy(update={"preproc": cfg.preproc.model_copy(update={"fwhm_mm": 4.0})})
    failures = apply_classical(bundle, held_out[:1], participant_config(smoothed))
    assert failures["31"].code == ExitCode.DATA_ERROR == 65
    assert "fwhm_mm: model=6.0, data=4.0" in failures["31"].message
    assert "classical-model.json" in failures["31"].render()

    entry = held_out[1]  # a cache entry made on another grid
    geometry = type(entry.meta.geometry)(**{**entry.meta.geometry.model_dump(), "affine": (np.eye(4) * 3).tolist()})
    moved = replace(entry, meta=evolve(entry.meta, geometry=geometry))
    failures = apply_classical(bundle, [moved], participant_config(cfg))
    assert failures["32"].code == ExitCode.DATA_ERROR and "affine" in failures["32"].message


def test_runner_finds_the_classical_bundle(trained):
    from m2m_bids.runner import _model_bundle

    cfg, _, _, _, _ = trained
    assert _model_bundle(participant_config(cfg)) == cfg.execution.output_dir / "models" / f"model-{SVC}"
    assert _model_bundle(participant_config(cfg, model=cfg.execution.output_dir / "models" / f"model-{SVC}")) is not None
