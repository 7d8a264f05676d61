"""BIDS-Derivatives writer: names, sidecars, description, .bidsignore, logs, concurrency, safety."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from m2m_bids import __version__
from m2m_bids.bids.derivatives import ENTITY_ORDER, DerivativesWriter, bids_filename
from m2m_bids.bids.layout import collect_participants
from m2m_bids.bids.validator import run_validator, validate_bids_dir
from m2m_bids.config import Execution, Preproc
from m2m_bids.exitcodes import AppError, ExitCode

SPACE = "MNI152NLin2009cAsym"


def _img(shape: tuple[int, ...], seed: int = 0) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.random.default_rng(seed).random(shape).astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    return img


def test_entity_order_follows_the_bids_schema() -> None:
    from bidsschematools.schema import load_schema

    schema = load_schema()
    standard = [schema.objects.entities[name]["name"] for name in schema.rules.entities]
    assert [e for e in ENTITY_ORDER if e in standard] == standard
    name = bids_filename({"desc": "preproc", "res": "3", "atlas": "AAL", "space": SPACE, "run": "01",
                          "task": "rest", "session": "pre", "subject": "01", "stat": "attention"}, "bold", "nii.gz")
    assert name == f"sub-01_ses-pre_task-rest_run-01_space-{SPACE}_atlas-AAL_res-3_stat-attention_desc-preproc_bold.nii.gz"


@pytest.mark.parametrize("entities", [{"sub": "01", "flavour": "x"}, {"sub": "0_1"}, {"desc": "x"}])
def test_bad_entities_are_refused(entities) -> None:
    with pytest.raises(ValueError):
        bids_filename(entities, "T1w", ".nii.gz")


def test_paths_and_refusals(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    writer = DerivativesWriter(tmp_path / "out", bids_dir=bids, run_id="r1")
    assert writer.build_path({"subject": "01", "session": "a", "task": "rest", "suffix": "bold"}, "bold", ".nii.gz",
                             "func") == tmp_path / "out/sub-01/ses-a/func/sub-01_ses-a_task-rest_bold.nii.gz"
    assert writer.output_path("group", "metrics.tsv") == tmp_path / "out/group/metrics.tsv"
    for escape in (lambda: writer.output_path("..", "bids", "x.tsv"),
                   lambda: writer.write_sidecar(tmp_path / "elsewhere" / "x_T1w.nii.gz", {})):
        with pytest.raises(AppError) as info:
            escape()
        assert info.value.code == ExitCode.CANT_CREATE
    with pytest.raises(ValueError):
        writer.build_path({"sub": "01"}, "T1w", ".nii.gz", "../anat")
    with pytest.raises(AppError) as info:
        writer.write_sidecar(tmp_path / "elsewhere" / "x_T1w.nii.gz", {})
    assert info.value.code == ExitCode.CANT_CREATE and not (tmp_path / "elsewhere").exists()
    with pytest.raises(AppError) as info:
        DerivativesWriter(bids / "outputs", bids_dir=bids)
    assert info.value.code == ExitCode.USAGE


def test_description_merge_container_doi_and_relative_link(tmp_path: Path, monkeypatch) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "ds", "BIDSVersion": "1.9.0", "DatasetDOI": "10.18112/openneuro.ds000001.v1.0.0",
         "License": "CC0"}), encoding="utf-8")
    out = bids / "derivatives" / "m2m-bids"
    out.mkdir(parents=True)
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "mine", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "other-tool", "Version": "2"}]}), encoding="utf-8")
    monkeypatch.setenv("M2M_CONTAINER_TYPE", "apptainer")
    monkeypatch.setenv("M2M_CONTAINER_TAG", "m2m-bids_0.1.0.sif")
    writer = DerivativesWriter(out, bids_dir=bids, run_id="r1", links={"fmriprep": "/data/fmriprep"})
    path = writer.write_dataset_description()
    first = path.read_text(encoding="utf-8")
    desc = json.loads(first)
    assert desc["Name"] == "mine" and desc["DatasetType"] == "derivative" and desc["License"] == "CC0"
    assert desc["GeneratedBy"][0] == {"Name": "m2m-bids", "Version": __version__,
                                      "CodeURL": "https://github.com/m2m-bids/m2m-bids",
                                      "Container": {"Type": "apptainer", "Tag": "m2m-bids_0.1.0.sif"}}
    assert desc["GeneratedBy"][1] == {"Name": "other-tool", "Version": "2"}
    assert desc["DatasetLinks"] == {"raw": "../..", "fmriprep": "/data/fmriprep"}
    assert desc["SourceDatasets"] == [{"DOI": "doi:10.18112/openneuro.ds000001.v1.0.0"}]
    writer.write_dataset_description()
    assert path.read_text(encoding="utf-8") == first  # idempotent


def test_bidsignore_keeps_foreign_lines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bidsignore").write_text("extra/\n", encoding="utf-8")
    writer = DerivativesWriter(out)
    writer.update_bidsignore(["*_relmat.tsv"])
    writer.update_bidsignore(["*_relmat.tsv"])
    lines = (out / ".bidsignore").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "extra/" and lines.count("*_relmat.tsv") == 1 and "*_statmap.nii.gz" in lines


def test_participant_log(tmp_path: Path) -> None:
    writer = DerivativesWriter(tmp_path / "out", run_id="run42")
    logger = logging.getLogger("m2m_bids.test_participant_log")
    logger.setLevel(logging.DEBUG)
    with writer.participant_log("sub-07") as folder:
        logger.info("inside")
    logger.info("outside")
    assert folder == tmp_path / "out/sub-07/log/run42"
    text = (folder / "m2m.log").read_text(encoding="utf-8")
    assert "inside" in text and "outside" not in text


def _write_outputs(writer: DerivativesWriter, label: str) -> None:
    """What a participant run writes: preprocessed T1w, a statmap, predictions and a figure."""
    writer.save_nifti(_img((20, 20, 20)),
                      writer.build_path({"sub": label, "space": SPACE, "res": "3", "desc": "preproc"}, "T1w",
                                        ".nii.gz", "anat"),
                      {"SkullStripped": True, "Resolution": "3 mm isotropic",
                       "Sources": [f"bids:raw:sub-{label}/anat/sub-{label}_T1w.nii.gz"]})
    bold = _img((20, 20, 20, 8), seed=1)
    writer.save_nifti(bold, writer.build_path({"sub": label, "task": "rest", "space": SPACE, "res": "3",
                                               "desc": "smoothed"}, "bold", ".nii.gz", "func"),
                      {"SkullStripped": False, "Resolution": "3 mm isotropic", "RepetitionTime": 2.0,
                       "TaskName": "rest"})
    writer.save_nifti(_img((20, 20, 20), seed=2),
                      writer.build_path({"sub": label, "space": SPACE, "res": "3", "stat": "attention", "desc": "T1w"},
                                        "statmap", ".nii.gz", "anat"),
                      {"Description": "attention map"})
    table = pd.DataFrame({"participant_id": [f"sub-{label}"], "predicted_label": ["AD"], "prob_AD": [0.7],
                          "prob_CN": [np.nan]})
    writer.save_tsv(table, writer.build_path({"sub": label, "desc": "m2m"}, "predictions", ".tsv"),
                    sidecar={"prob_AD": {"Description": "p"}})
    writer.save_file(writer.figure_path({"sub": label, "desc": "attention"}, "map"),
                     b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    writer.save_json({"Classes": ["CN", "AD"], "Scores": np.array([0.25, 0.75])},
                     writer.build_path({"sub": label, "desc": "scores"}, "predictions", ".json"))


def test_outputs_pass_bids_validator(tmp_path: Path) -> None:
    writer = DerivativesWriter(tmp_path / "out", bids_dir=tmp_path / "bids", run_id="r1")
    writer.write_dataset_description()
    writer.update_bidsignore()
    _write_outputs(writer, "01")
    with writer.participant_log("01"):
        logging.getLogger("m2m_bids").warning("a participant message")
    writer.save_text("<html></html>", writer.output_path("sub-01.html"))
    writer.save_json({}, writer.output_path("models", "model-m2m", "model-card.json"))
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])
    png = writer.save_figure(figure, writer.figure_path({"sub": "01", "desc": "roc"}, "curve", ".png"))
    assert png.read_bytes().startswith(b"\x89PNG") and png.parent.name == "figures"
    assert json.loads((tmp_path / "out/sub-01/sub-01_desc-scores_predictions.json").read_text())["Scores"] == [0.25, 0.75]
    tsv = (tmp_path / "out/sub-01/sub-01_desc-m2m_predictions.tsv").read_text(encoding="utf-8")
    assert tsv.splitlines()[1].endswith("\tn/a")
    report = run_validator(tmp_path / "out")
    assert report.returncode == 0 and report.ok, report.errors


def _job(out: str, bids: str, label: str, rounds: int) -> None:
    writer = DerivativesWriter(out, bids_dir=bids, run_id=f"run{label}")
    for i in range(rounds):
        writer.write_dataset_description()
        writer.update_bidsignore([f"job{label}_{i}.txt"])
    _write_outputs(writer, label)


def test_concurrent_participant_jobs_share_one_output_dir(tmp_path: Path) -> None:
    out, bids = tmp_path / "out", tmp_path / "bids"
    bids.mkdir()
    ctx = multiprocessing.get_context("fork")
    jobs = [ctx.Process(target=_job, args=(str(out), str(bids), f"{n:02d}", 15)) for n in range(1, 5)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0, 0, 0, 0]
    desc = json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))
    assert [g["Name"] for g in desc["GeneratedBy"]] == ["m2m-bids"]
    lines = set((out / ".bidsignore").read_text(encoding="utf-8").splitlines())
    assert {f"job{n:02d}_{i}.txt" for n in range(1, 5) for i in range(15)} <= lines  # no update lost
    for n in range(1, 5):
        assert nib.load(out / f"sub-{n:02d}/anat/sub-{n:02d}_space-{SPACE}_res-3_desc-preproc_T1w.nii.gz").shape == (20,) * 3
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"
    assert run_validator(out).ok


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "derivatives":
            continue
        digest.update(str(rel).encode())
        if path.is_file():
            digest.update(path.read_bytes())
            digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


def test_input_dataset_is_never_modified(bids_skeleton, tmp_path: Path) -> None:
    bids = bids_skeleton({"01": None, "02": {"sessions": {"a": None}}})
    before = _tree_hash(bids)
    out = bids / "derivatives" / "m2m-bids"
    ex = Execution(bids_dir=bids, output_dir=out, analysis_level="participant")
    found, problems = collect_participants(ex, Preproc())
    assert len(found) == 2 and problems == []
    assert validate_bids_dir(bids, ["01", "02"]).ok
    writer = DerivativesWriter(out, bids_dir=bids, run_id="r1")
    writer.write_dataset_description()
    writer.update_bidsignore()
    _write_outputs(writer, "01")
    assert _tree_hash(bids) == before
    assert json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))["DatasetLinks"] == {"raw": "../.."}
