"""The nipype workflow end to end on tiny synthetic participants (tiny preset: 6 mm, 16^3)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import rigid_matrix, tiny_config, write_description, write_participant  # noqa: E402

from m2m_bids.exitcodes import ExitCode  # noqa: E402
from m2m_bids.preproc.api import preprocess_participants  # noqa: E402
from m2m_bids.preproc.template import template_image  # noqa: E402


def test_raw_pipeline_cache_derivatives_and_failures(tmp_path: Path, caplog) -> None:
    """Good, too-short and broken-sidecar participants in one run: the good one is cached with
    derivatives, the others fail with specific messages, a second run reuses the cache."""
    bids = tmp_path / "bids"
    write_description(bids)
    motion = np.zeros((12, 6))
    motion[6:, 0] = 2.0
    good = write_participant(bids, "01", t1_pull=rigid_matrix((3, -2, 2), (3, -2, 2)), n_volumes=12, motion=motion)
    short = write_participant(bids, "02", t1_pull=np.eye(4), n_volumes=6)
    broken = write_participant(bids, "03", t1_pull=np.eye(4), n_volumes=12, rng_seed=3)
    run = broken.sessions[0].bold_runs[0]
    bad_run = replace(run, metadata={**run.metadata, "SliceTiming": [0.0, 0.5, 1.0]})  # 3 entries, 22 slices
    broken = replace(broken, sessions=(replace(broken.sessions[0], bold_runs=(bad_run,)),))
    cfg = tiny_config(bids, tmp_path / "out", execution={"nipype_plugin": "Linear", "save_preproc": True})
    results = preprocess_participants([good, short, broken], cfg)
    by_label = {r.label: r for r in results}
    assert [r.label for r in results] == ["01", "02", "03"]

    ok = by_label["01"]
    assert ok.error is None and len(ok.entries) == 1 and not ok.cached
    entry = ok.entries[0]
    fmri, smri, mask = entry.load("fmri"), entry.load("smri"), entry.load("mask")
    assert fmri.shape == (16, 16, 16, 12) and fmri.dtype == np.float16
    assert smri.shape == (16, 16, 16) and mask.dtype == np.uint8 and mask.sum() > 500
    inside = np.asarray(fmri, dtype=np.float32)[mask > 0]
    assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05  # z-scored in the mask
    maps = {name: np.asarray(entry.load(name), dtype=np.float32) for name in ("gm", "alff", "falff", "bold_mean")}
    for name, data in maps.items():  # per-run maps: grid-shaped float16, zero outside the run mask
        assert entry.load(name).dtype == np.float16 and data.shape == (16, 16, 16), name
        assert np.all(data[mask == 0] == 0) and np.isfinite(data).all(), name
    assert 0.0 <= maps["gm"].min() and maps["gm"].max() <= 1.0 and maps["gm"][mask > 0].std() > 0.1
    assert maps["alff"][mask > 0].mean() == pytest.approx(1.0, abs=0.01)  # mALFF
    assert maps["bold_mean"][mask > 0].mean() == pytest.approx(1.0, abs=0.01)
    assert 0.0 < maps["falff"][mask > 0].mean() < 1.0
    assert entry.meta.participant == "01" and entry.meta.bold.slice_timing.corrected
    assert 1.0 < entry.meta.bold.motion.max_translation_mm < 3.0  # the planted 2 mm shift
    # the T1w landed on the template: correlation with the template on the grid, inside the mask
    from m2m_bids.preproc.grid import make_grid
    from m2m_bids.preproc.template import grid_template

    tpl = grid_template("t1", make_grid(6.0, (16, 16, 16)))
    r = np.corrcoef(np.asarray(smri, dtype=np.float32)[mask > 0], tpl[mask > 0])[0, 1]
    assert r > 0.8, r

    out = tmp_path / "out" / "sub-01"
    t1_file = out / "anat" / "sub-01_space-MNI152NLin2009aSym_res-6_desc-preproc_T1w.nii.gz"
    bold_file = out / "func" / "sub-01_task-rest_space-MNI152NLin2009aSym_res-6_desc-smoothed_bold.nii.gz"
    assert t1_file.is_file() and bold_file.is_file()
    side = json.loads(bold_file.with_name(bold_file.name.replace(".nii.gz", ".json")).read_text())
    assert side["RepetitionTime"] == 2.0 and side["SliceTimingCorrected"] is True and "StartTime" in side
    assert side["Sources"][0] == "bids:raw:sub-01/func/sub-01_task-rest_bold.nii.gz"
    assert nib.load(str(bold_file)).shape == (16, 16, 16, 12)
    assert {p.suffix for p in (out / "figures").iterdir()} == {".png", ".svg", ".tsv"}  # + the QC table
    assert (out / "figures" / "sub-01_desc-regqc_table.tsv").is_file() and entry.meta.qc.brain_dice > 0.8

    assert by_label["02"].error is not None and by_label["02"].error.code == ExitCode.DATA_ERROR
    assert "only 6 volumes" in by_label["02"].error.message
    err = by_label["03"].error
    assert err is not None and "SliceTiming has 3 entries" in err.message and err.hint
    assert list((tmp_path / "out" / "sub-03" / "log" / "test-run").glob("crash-*"))

    with caplog.at_level(logging.INFO):
        again = preprocess_participants([good], cfg)
    assert again[0].cached and again[0].entries[0].key == entry.key
    assert "no preprocessing needed" in caplog.text


def _write_fmriprep_tree(root: Path, label: str, n_volumes: int = 10) -> Path:
    """A tiny fMRIPrep-like derivatives tree in MNI space (4 mm), with a description naming fMRIPrep."""
    deriv = root / "derivatives" / "fmriprep"
    (deriv / f"sub-{label}" / "anat").mkdir(parents=True)
    (deriv / f"sub-{label}" / "func").mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]}))
    t1 = template_image("t1", 4.0)
    mask = template_image("mask", 4.0)
    space = "space-MNI152NLin2009cAsym_res-2"
    anat, func = deriv / f"sub-{label}" / "anat", deriv / f"sub-{label}" / "func"
    nib.save(t1, str(anat / f"sub-{label}_{space}_desc-preproc_T1w.nii.gz"))
    nib.save(mask, str(anat / f"sub-{label}_{space}_desc-brain_mask.nii.gz"))
    rng = np.random.default_rng(0)
    data = np.asarray(t1.dataobj)[..., None] * 1000 + rng.normal(0, 10, t1.shape + (n_volumes,))
    stem = f"sub-{label}_task-rest"
    nib.save(nib.Nifti1Image(data.astype(np.float32), t1.affine), str(func / f"{stem}_{space}_desc-preproc_bold.nii.gz"))
    nib.save(mask, str(func / f"{stem}_{space}_desc-brain_mask.nii.gz"))
    (func / f"{stem}_{space}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": 2.0,
                                                                            "SliceTimingCorrected": True,
                                                                            "StartTime": 0.9}))
    rows = ["trans_x\ttrans_y\ttrans_z\trot_x\trot_y\trot_z\tframewise_displacement"]
    rows += [f"{0.1 * i}\t0\t0\t0\t0\t0\t{'n/a' if i == 0 else 0.1}" for i in range(n_volumes)]
    (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(rows) + "\n")
    return deriv


def test_fmriprep_derivatives_are_resampled_and_smoothed(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    write_description(bids)
    raw = write_participant(bids, "01", t1_pull=np.eye(4), n_volumes=10)
    _write_fmriprep_tree(bids, "01")  # auto-detected under BIDS_DIR/derivatives
    cfg = tiny_config(bids, tmp_path / "out", execution={"nipype_plugin": "Linear"})
    result = preprocess_participants([raw], cfg)[0]
    assert result.error is None, result.error
    entry = result.entries[0]
    assert entry.meta.provenance.input == "fmriprep" and entry.meta.provenance.fmriprep_space == "MNI152NLin2009cAsym"
    assert entry.meta.bold.slice_timing.corrected is True
    assert abs(entry.meta.bold.motion.max_translation_mm - 0.9) < 1e-6
    assert entry.load("fmri").shape == (16, 16, 16, 10)
    assert not (tmp_path / "out" / "work" / "nipype" / "m2m_preproc_wf" / "sub_01_wf" / "anat_nosession_wf").exists()
