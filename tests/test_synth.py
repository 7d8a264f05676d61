"""Synthetic BIDS generator: layout, headers, planted effects, ground truth, validator, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.synth import GROUND_TRUTH, SynthSpec, generate_dataset, motion_matrices
from m2m_bids.synth.anat import random_head_pose
from m2m_bids.synth.func import FINE_DT, _at_times, coupling_matrix, simulate_bold, slice_times
from m2m_bids.synth.sources import build_sources, sample_mni
from m2m_bids.synth.tabular import RANGES, participants_table, tabular_parameters

SPACE = "space-MNI152NLin2009aSym"
FAST = dict(n_volumes=8)  # for the extra datasets that only check bookkeeping


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, float]:
    """The tiny preset with fMRIPrep-like derivatives, 6 participants (2 per class)."""
    out = tmp_path_factory.mktemp("synth") / "bids"
    started = time.perf_counter()
    generate_dataset(out, SynthSpec.preset("tiny", n_participants=6, fmriprep_derivatives=True))
    return out, time.perf_counter() - started


def _truth(root: Path) -> dict:
    return json.loads((root / GROUND_TRUTH).read_text())


def _sessions(truth: dict, sub: str) -> dict:
    return truth["participants"][sub]["sessions"]["none"]


def test_layout_and_timing(tiny):
    root, seconds = tiny
    assert seconds < 120  # ~5 s CPU; only a pathological slowdown fails this on a loaded machine
    for name in ("dataset_description.json", "README", "CHANGES", "participants.tsv",
                 "participants.json", "sourcedata/ground_truth.json"):
        assert (root / name).is_file(), name
    for i in range(1, 7):
        sub = f"sub-{i:02d}"
        for rel in (f"anat/{sub}_T1w.nii.gz", f"anat/{sub}_T1w.json",
                    f"func/{sub}_task-rest_bold.nii.gz", f"func/{sub}_task-rest_bold.json"):
            assert (root / sub / rel).is_file(), rel
        assert (root / sub / f"anat/{sub}_T1w.nii.gz").stat().st_size > 10_000  # not NIFTI_TOO_SMALL


def test_headers_are_oblique_and_timed(tiny):
    root, _ = tiny
    truth = _truth(root)
    spec = SynthSpec.preset("tiny")
    for sub in ("sub-01", "sub-02"):
        rec = _sessions(truth, sub)
        t1w = nib.load(root / rec["T1w"]["path"])
        bold = nib.load(root / rec["bold"]["path"])
        for img, key in ((t1w, "T1w"), (bold, "bold")):
            np.testing.assert_allclose(img.affine, rec[key]["affine"], atol=1e-4)
            cosines = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
            assert np.abs(cosines).max(axis=0).min() < 0.999  # oblique: not axis-aligned
            assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
        assert t1w.shape == spec.t1w_shape and np.allclose(t1w.header.get_zooms(), spec.t1w_zooms)
        assert nib.aff2axcodes(bold.affine) == ("L", "A", "S")
        assert bold.shape == spec.bold_shape + (spec.n_volumes,)
        assert bold.header.get_zooms()[3] == pytest.approx(spec.repetition_time)
        sidecar = json.loads((root / rec["bold"]["path"].replace(".nii.gz", ".json")).read_text())
        assert sidecar["RepetitionTime"] == spec.repetition_time and sidecar["TaskName"] == "rest"
        timing = sidecar["SliceTiming"]
        assert len(timing) == bold.shape[2] and max(timing) < spec.repetition_time
        assert timing == rec["bold"]["slice_timing"] and len(set(timing)) == bold.shape[2]
        motion = np.array(rec["bold"]["motion_params"])
        assert motion.shape == (spec.n_volumes, 6) and np.all(motion[0] == 0)
        assert 0.05 < np.abs(motion[:, :3]).max() < 5.0  # small but present head motion


def test_participants_table(tiny):
    root, _ = tiny
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "diagnosis", "age", "sex", "MMSE", "tTau", "Abeta42"]
    assert table["diagnosis"].value_counts().to_dict() == {"CN": 2, "MCI": 2, "AD": 2}
    assert _truth(root)["class_counts"] == {"CN": 2, "MCI": 2, "AD": 2}
    described = json.loads((root / "participants.json").read_text())
    assert set(table.columns) <= set(described)
    assert table["MMSE"].between(0, 30).all() and set(table["sex"]) <= {"F", "M"}


@settings(max_examples=40, deadline=None)
@given(effect_size=st.floats(min_value=0.0, max_value=5.0, allow_nan=False), seed=st.integers(0, 2**16))
def test_clinical_table_is_realistic_at_every_effect_size(effect_size, seed):
    """No negative sd, every value in its physiological range, classes ordered as in the literature."""
    n = 120
    table = participants_table([f"{i:03d}" for i in range(n)], ["CN", "MCI", "AD"] * (n // 3), effect_size,
                               np.random.default_rng(seed))
    for column, (low, high) in RANGES.items():
        assert table[column].between(low, high).all(), column
        if column in ("tTau", "Abeta42"):  # continuous columns: nothing clipped onto a bound
            assert table[column].nunique() > n // 2, f"{column} piles up"
    for params in tabular_parameters(effect_size).values():
        assert all(p["logit_sd"] > 0 for p in params.values())
    medians = table.groupby("diagnosis")[["MMSE", "Abeta42", "tTau"]].median()
    if effect_size >= 0.5:
        assert medians.loc["AD", "MMSE"] < medians.loc["CN", "MMSE"]
        assert medians.loc["AD", "Abeta42"] < medians.loc["CN", "Abeta42"]
        assert medians.loc["AD", "tTau"] > medians.loc["CN", "tTau"]
    assert table["MMSE"].max() <= 30 and table.loc[table["diagnosis"] == "AD", "MMSE"].median() >= 10


def test_ground_truth_records_planted_effects(tiny):
    root, _ = tiny
    truth = _truth(root)
    eff = truth["effects"]
    assert eff["planted"] is True and truth["atlas"]["name"] == "aal"
    hip = {dx: eff["atrophy"][dx]["Hippocampus_L"] for dx in ("CN", "MCI", "AD")}
    assert hip["CN"] == 0 < hip["MCI"] < hip["AD"]
    delta = {dx: {c["name"]: c["delta_r"] for c in eff["coupling"]["changes"][dx]} for dx in ("CN", "MCI", "AD")}
    assert delta["AD"]["PCC-mPFC"] < delta["MCI"]["PCC-mPFC"] < delta["CN"]["PCC-mPFC"] == 0
    tab = eff["tabular"]
    assert tab["MMSE"]["AD"]["median"] < tab["MMSE"]["CN"]["median"]
    assert tab["tTau"]["AD"]["median"] > tab["tTau"]["CN"]["median"]
    assert tab["Abeta42"]["AD"]["median"] < tab["Abeta42"]["CN"]["median"]
    assert eff["fraction_above_ratio_cutoff"]["AD"] >= 0.5
    for rec in truth["participants"].values():  # realised coupling recorded (noisy in a 60 s run)
        realised = rec["sessions"]["none"]["bold"]["coupling_realised"]
        assert set(realised) == {"PCC-mPFC", "precuneus-angular"}
        assert all(-1.0 <= v <= 1.0 for v in realised.values())


def test_planted_coupling_is_realised_in_long_signals():
    """Over a long run the latent regional signals carry each class's target correlations."""
    from m2m_bids.atlases import load_atlas
    from m2m_bids.synth.func import region_signals

    names = tuple(load_atlas().labels["name"])
    pos = {n: i for i, n in enumerate(names)}
    for dx in ("CN", "AD"):
        corr, changes = coupling_matrix(names, dx, 1.0)
        series = region_signals(corr, 4000.0, np.random.default_rng(5))
        for change in changes:
            cols = [pos[r] for r in change["regions_a"] + change["regions_b"]]
            emp = np.corrcoef(series[:, cols].T)[: len(change["regions_a"]), len(change["regions_a"]):]
            assert emp.mean() == pytest.approx(change["target_r"], abs=0.08), (dx, change["name"])
    ad = {c["name"]: c["target_r"] for c in coupling_matrix(names, "AD", 1.0)[1]}
    assert ad["PCC-mPFC"] < 0.25 and ad["precuneus-angular"] < 0.3


def _hippocampus_contrast(root: Path, truth: dict, sub: str) -> float:
    """Mean hippocampal intensity / mean brain intensity in the MNI-space derivative T1w."""
    from m2m_bids.atlases import load_atlas

    img = nib.load(root / _sessions(truth, sub)["derivatives"]["anat_preproc"])
    atlas = load_atlas("aal", target=img)
    data = img.get_fdata()
    return float(data[atlas.mask(["Hippocampus_L", "Hippocampus_R"])].mean() / data[data > 100].mean())


def test_atrophy_is_in_the_images(tiny):
    root, _ = tiny
    truth = _truth(root)
    by_dx = {}
    for sub, rec in truth["participants"].items():
        by_dx.setdefault(rec["diagnosis"], []).append(_hippocampus_contrast(root, truth, sub))
    assert np.mean(by_dx["AD"]) < np.mean(by_dx["CN"]) * 0.92
    assert np.ptp(by_dx["CN"]) < 0.02  # CN participants share the template anatomy


def test_fmriprep_derivatives(tiny):
    root, _ = tiny
    deriv = root / "derivatives" / "fmriprep"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "fMRIPrep"
    sub = "sub-01"
    for rel in (f"anat/{sub}_{SPACE}_desc-preproc_T1w.nii.gz", f"anat/{sub}_{SPACE}_desc-brain_mask.nii.gz",
                f"func/{sub}_task-rest_{SPACE}_desc-preproc_bold.nii.gz",
                f"func/{sub}_task-rest_{SPACE}_desc-brain_mask.nii.gz",
                f"func/{sub}_task-rest_desc-confounds_timeseries.tsv"):
        assert (deriv / sub / rel).is_file(), rel
    bold = nib.load(deriv / sub / f"func/{sub}_task-rest_{SPACE}_desc-preproc_bold.nii.gz")
    mask = nib.load(deriv / sub / f"func/{sub}_task-rest_{SPACE}_desc-brain_mask.nii.gz")
    assert bold.shape[:3] == mask.shape and bold.shape[3] == 30
    assert np.allclose(bold.header.get_zooms(), (6.0, 6.0, 6.0, 2.0))
    assert nib.aff2axcodes(bold.affine) == ("R", "A", "S") and np.allclose(bold.affine[:3, 3], [-98, -134, -72])
    conf = pd.read_csv(deriv / sub / f"func/{sub}_task-rest_desc-confounds_timeseries.tsv", sep="\t")
    truth = np.array(_sessions(_truth(root), sub)["bold"]["motion_params"])
    np.testing.assert_allclose(conf[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]], truth, atol=1e-5)


def _validator_errors(root: Path) -> tuple[int, list[dict]]:
    """Exit status and error-level issues of bids-validator-deno on ``root``."""
    exe = shutil.which("bids-validator-deno")
    assert exe, "bids-validator-deno is a project dependency"
    proc = subprocess.run([exe, str(root), "--format", "json"], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    return proc.returncode, [i for i in report["issues"]["issues"] if i["severity"] == "error"]


def test_bids_validator_passes(tiny):
    assert _validator_errors(tiny[0]) == (0, [])


def test_motion_is_applied_to_the_signal(tmp_path):
    """The brain's centre of mass moves the way the recorded motion says it does."""
    spec = SynthSpec.preset("tiny", n_participants=1, motion_mm=1.2, motion_deg=0.0, n_volumes=12,
                            bold_noise=0.0, classes=("CN",))
    root = generate_dataset(tmp_path / "bids", spec)
    rec = _sessions(_truth(root), "sub-01")["bold"]
    img = nib.load(root / rec["path"])
    data = img.get_fdata()
    coords = np.indices(data.shape[:3]).reshape(3, -1)
    aff = img.affine

    def com(vol: np.ndarray) -> np.ndarray:
        w = vol.ravel()
        return aff[:3, :3] @ (coords @ w / w.sum()) + aff[:3, 3]

    mats = motion_matrices(np.array(rec["motion_params"]), np.array(rec["motion_centre_scanner"]))
    c0 = com(data[..., 0])
    k = int(np.argmax(np.linalg.norm(np.array(rec["motion_params"])[:, :3], axis=1)))
    predicted = (np.linalg.inv(mats[k]) @ np.append(c0, 1.0))[:3] - c0
    measured = com(data[..., k]) - c0
    assert np.linalg.norm(predicted) > 1.0
    assert np.linalg.norm(measured - predicted) < 0.25 * np.linalg.norm(predicted) + 0.2


def test_slice_timing_is_applied_to_the_signal():
    """Each slice follows its region's signal at that slice's acquisition time, not the volume onset."""
    spec = SynthSpec.preset("tiny", n_volumes=40, bold_noise=0.0, motion_mm=0.0, motion_deg=0.0,
                            head_rotation_deg=0.0, grid_tilt_deg=0.0, bold_signal_change=0.05)
    src = build_sources(spec)
    rng = np.random.default_rng(3)
    pose = random_head_pose(spec, rng, 1.0)
    corr, _ = coupling_matrix(src.region_names, "CN", 0.0)
    run = simulate_bold(src, spec, rng, pose, corr)
    shape = spec.bold_shape
    vox = np.vstack([np.indices(shape).reshape(3, -1), np.ones((1, int(np.prod(shape))))])
    labels = sample_mni(src.labels, src, (pose.matrix @ run.affine @ vox)[:3].astype(np.float32), order=0)
    labels = labels.reshape(shape).astype(int)
    data = run.data.astype(float)
    onsets = np.arange(spec.n_volumes) * spec.repetition_time
    late = int(np.argmax(run.slice_timing))
    errors_true, errors_onset = [], []
    for z in (late,):
        for region in np.unique(labels[:, :, z]):
            sel = labels[:, :, z] == region
            if region == 0 or sel.sum() < 4:
                continue
            series = data[:, :, z][sel].mean(axis=0)
            series = series / series.mean() - 1.0
            for t_shift, bucket in ((run.slice_timing[z], errors_true), (0.0, errors_onset)):
                model = _at_times(run.fine_series, onsets + t_shift)[:, region - 1]
                bucket.append(1.0 - np.corrcoef(series, model)[0, 1])
    assert run.slice_timing[late] > 1.5 and len(errors_true) >= 3
    assert np.median(errors_true) < np.median(errors_onset)
    assert np.median(errors_true) < 0.05


def test_slice_orders():
    assert slice_times(4, 2.0, "ascending") == [0.0, 0.5, 1.0, 1.5]
    assert slice_times(4, 2.0, "descending") == [1.5, 1.0, 0.5, 0.0]
    assert slice_times(4, 2.0, "interleaved") == [1.0, 0.0, 1.5, 0.5]  # even: 2nd slice first
    assert slice_times(5, 2.0, "interleaved")[0] == 0.0
    assert FINE_DT < 0.5


def _arrays(root: Path) -> list[np.ndarray]:
    return [np.asarray(nib.load(p).dataobj) for p in sorted(root.rglob("*.nii.gz"))]


def test_deterministic_under_seed(tmp_path):
    spec = SynthSpec.preset("tiny", n_participants=2, **FAST)
    a = generate_dataset(tmp_path / "a", spec)
    b = generate_dataset(tmp_path / "b", spec)
    c = generate_dataset(tmp_path / "c", SynthSpec.preset("tiny", n_participants=1, seed=1, **FAST))
    assert _truth(a) == _truth(b)
    assert (a / "participants.tsv").read_text() == (b / "participants.tsv").read_text()
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_arrays(a)[0], _arrays(c)[0])


def _fluctuation_ratio(root: Path, truth: dict, sub: str) -> float:
    """Temporal SD / mean in posterior cingulate + precuneus over the same in the rest of the cortex
    (MNI-space derivative BOLD: no motion, one time per volume)."""
    from m2m_bids.atlases import load_atlas

    img = nib.load(root / _sessions(truth, sub)["derivatives"]["func_preproc"])
    data = img.get_fdata()
    atlas = load_atlas("aal", target=nib.Nifti1Image(np.zeros(img.shape[:3]), img.affine))
    target = atlas.mask(["Cingulate_Post_L", "Cingulate_Post_R", "Precuneus_L", "Precuneus_R"])
    rest = atlas.mask([n for n in atlas.labels["name"] if n.startswith(("Frontal", "Temporal", "Occipital"))])

    def relative_sd(mask: np.ndarray) -> float:
        series = data[mask & (data.mean(-1) > 100)]
        return float(np.mean(series.std(-1) / series.mean(-1)))

    return relative_sd(target) / relative_sd(rest)


def test_fluctuation_loss_is_in_the_images(tiny):
    """AD's planted loss of BOLD fluctuation amplitude in posterior cingulate and precuneus is recorded
    and visible as a lower relative temporal SD there (CN has none)."""
    root, _ = tiny
    truth = _truth(root)
    loss = truth["effects"]["fluctuation_loss"]
    assert loss["CN"]["Precuneus_L"] == 0 < loss["MCI"]["Precuneus_L"] < loss["AD"]["Precuneus_L"] == 0.5
    by_dx: dict[str, list[float]] = {}
    for sub, rec in truth["participants"].items():
        assert _sessions(truth, sub)["bold"]["fluctuation_loss"].keys() == loss["AD"].keys()
        by_dx.setdefault(rec["diagnosis"], []).append(_fluctuation_ratio(root, truth, sub))
    assert max(by_dx["AD"]) < 0.85 * min(by_dx["CN"]), by_dx


def test_effect_size_zero_plants_nothing(tmp_path):
    spec = SynthSpec.preset("tiny", n_participants=3, effect_size=0.0, **FAST)
    truth = _truth(generate_dataset(tmp_path / "bids", spec))
    eff = truth["effects"]
    assert eff["planted"] is False
    assert all(v == 0 for dx in eff["atrophy"].values() for v in dx.values())
    assert all(c["delta_r"] == 0 for changes in eff["coupling"]["changes"].values() for c in changes)
    assert all(v == 0 for dx in eff["fluctuation_loss"].values() for v in dx.values())
    for col, by_dx in eff["tabular"].items():
        assert by_dx["AD"] == by_dx["CN"] == by_dx["MCI"], col
    for rec in truth["participants"].values():
        assert all(v == 0 for v in rec["sessions"]["none"]["T1w"]["atrophy_severity"].values())


def test_sessions_and_class_subset(tmp_path):
    spec = SynthSpec.preset("tiny", n_participants=3, sessions=2, classes=("CN", "AD"),
                            proportions=(2.0, 1.0), **FAST)
    root = generate_dataset(tmp_path / "bids", spec)
    assert (root / "sub-01/ses-02/func/sub-01_ses-02_task-rest_bold.nii.gz").is_file()
    assert (root / "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz").is_file()
    assert _truth(root)["class_counts"] == {"CN": 2, "AD": 1}
    assert _validator_errors(root) == (0, [])
    sev = [rec["sessions"] for rec in _truth(root)["participants"].values() if rec["diagnosis"] == "AD"][0]
    assert sev["ses-02"]["T1w"]["atrophy_severity"]["Hippocampus_L"] > sev["ses-01"]["T1w"]["atrophy_severity"]["Hippocampus_L"]


def test_spec_validation():
    with pytest.raises(AppError) as err:
        SynthSpec.preset("tiny", classes=("CN", "FTD"))
    assert err.value.code == ExitCode.USAGE
    with pytest.raises(AppError):
        SynthSpec.preset("huge")
    with pytest.raises(AppError):
        SynthSpec.preset("tiny", proportions=(1.0,))
    assert SynthSpec.preset("realistic").t1w_shape == (176, 256, 256)
    assert SynthSpec.preset("realistic").bold_shape == (64, 64, 36)


def test_cli_writes_refuses_and_forces(tmp_path):
    exe = shutil.which("m2m-synth")
    assert exe, "the console script is declared in pyproject.toml"
    out = tmp_path / "cli"
    args = [exe, str(out), "--preset", "tiny", "--n-participants", "2", "--n-volumes", "6", "--seed", "4",
            "--classes", "CN,AD", "--effect-size", "0.5"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "2 participants" in first.stdout and "CN=1" in first.stdout
    assert _truth(out)["generator"]["spec"]["effect_size"] == 0.5
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == int(ExitCode.CANT_CREATE) and "--force" in again.stderr
    forced = subprocess.run(args + ["--force"], capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0, forced.stderr


def test_pet_layout_sidecar_truth_and_validator(tmp_path):
    """``--pet``: a validator-clean static FDG PET per session in its own oblique low-resolution grid,
    with uptake GM > WM > CSF, planted AD hypometabolism recorded, and every other image unchanged."""
    exe = shutil.which("m2m-synth")
    out = tmp_path / "pet"
    args = [exe, str(out), "--n-participants", "2", "--n-volumes", "8", "--classes", "CN,AD", "--pet"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "FDG PET" in done.stdout
    assert _validator_errors(out) == (0, [])
    truth = _truth(out)
    spec = SynthSpec.preset("tiny", n_participants=2, n_volumes=8, classes=("CN", "AD"), pet=True)
    hypo = truth["effects"]["hypometabolism"]
    assert hypo["CN"]["Precuneus_L"] == 0 < hypo["AD"]["Precuneus_L"]
    assert set(hypo["AD"]) == set(truth["effects"]["atrophy"]["AD"])  # the same regions as the atrophy
    src = build_sources(spec)
    # tissue probabilities back from the source uptake: fdg = GM + 0.35 WM + 0.05 (brain - GM - WM)
    wm_map = ((src.fdg - 0.95 * src.gm - 0.05 * src.mask) / 0.30).astype(np.float32)
    for sub, rec in truth["participants"].items():
        pet_rec = rec["sessions"]["none"]["pet"]
        img = nib.load(out / pet_rec["path"])
        side = json.loads((out / pet_rec["path"].replace(".nii.gz", ".json")).read_text())
        assert img.shape == tuple(spec.pet_shape) + (spec.pet_frames,)
        assert side["FrameDuration"] == [spec.pet_frame_duration] * spec.pet_frames and side["TracerName"] == "FDG"
        assert np.allclose(img.affine, pet_rec["affine"], atol=1e-5)
        assert abs(img.affine[1, 2]) > 0.1 and np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), spec.pet_zooms)
        assert (rec["diagnosis"] == "AD") == (pet_rec["hypometabolism"]["Hippocampus_L"] > 0)
        # the image's tissue contrast, read through the recorded geometry
        ijk = np.indices(img.shape[:3]).reshape(3, -1)
        mni = (np.asarray(pet_rec["scanner_to_mni"]) @ img.affine @ np.vstack([ijk, np.ones(ijk.shape[1])]))[:3]
        gm, wm, mask = (sample_mni(v.astype(np.float32), src, mni) for v in (src.gm, wm_map, src.mask))
        data = np.asarray(img.dataobj).mean(axis=-1).ravel()
        grey, white = data[gm > 0.7].mean(), data[wm > 0.9].mean()
        csf = data[(mask > 0.99) & (gm < 0.1) & (wm < 0.1)].mean()
        assert grey > 1.5 * white and white > 1.2 * csf, (grey, white, csf)  # measured 1.7-1.8 and 1.4
    plain = generate_dataset(tmp_path / "plain", replace(spec, pet=False))
    mri = [p for p in sorted(out.rglob("*.nii.gz")) if p.parent.name != "pet"]
    assert [p.relative_to(out) for p in mri] == [p.relative_to(plain) for p in sorted(plain.rglob("*.nii.gz"))]
    for x, y in zip(mri, sorted(plain.rglob("*.nii.gz"))):  # PET is drawn last: the MRI is identical
        np.testing.assert_array_equal(np.asarray(nib.load(x).dataobj), np.asarray(nib.load(y).dataobj))
