"""sMRI-only participants: a usable T1w without usable BOLD is kept, T1w only, for models that read
no BOLD (``--modalities smri tabular``) and refused, with the reason, by models that need fMRI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from run_config import tiny_config  # noqa: E402
from synth_cache import GRID, build_dataset, make_run  # noqa: E402

from m2m_bids.backends import needs_fmri  # noqa: E402
from m2m_bids.bids.layout import collect_participants  # noqa: E402
from m2m_bids.config import Execution, ModelCfg, Preproc, RunConfig  # noqa: E402
from m2m_bids.exitcodes import ExitCode  # noqa: E402
from m2m_bids.preproc.availability import refuse_lacking, split_by_fmri  # noqa: E402
from m2m_bids.preproc.cache import TensorCache  # noqa: E402
from m2m_bids.preproc.entrymeta import EntryMeta, Geometry, Provenance  # noqa: E402
from m2m_bids.preproc.plan import plan_participant  # noqa: E402
from m2m_bids.testing import make_bids_dataset  # noqa: E402

T1W_ONLY = {"anat": [{"suffix": "T1w"}]}
SHORT_BOLD = {"anat": [{"suffix": "T1w"}], "func": [{"task": "rest", "suffix": "bold", "volumes": 5}]}


def _dataset(root: Path) -> Path:
    """sub-01 complete, sub-02 without BOLD, sub-03 with a 5-volume BOLD run."""
    return make_bids_dataset(root, {"01": None, "02": T1W_ONLY, "03": SHORT_BOLD})


def test_sessions_without_usable_bold_are_kept_t1w_only_when_no_fmri_is_needed(tmp_path: Path) -> None:
    bids = _dataset(tmp_path / "bids")
    ex = Execution(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant")
    found, problems = collect_participants(ex, Preproc(), scan_voxels=False)  # a model that needs fMRI
    assert [p.label for p in found] == ["01"]
    assert {(p.label, p.code) for p in problems} == {("02", ExitCode.NO_INPUT), ("03", ExitCode.DATA_ERROR)}

    found, problems = collect_participants(ex, Preproc(), scan_voxels=False, anat_only=True)
    assert problems == [] and [p.label for p in found] == ["01", "02", "03"]
    sessions = {p.label: p.sessions[0] for p in found}
    assert not sessions["01"].fmri_absent and sessions["01"].no_bold is None
    assert sessions["02"].fmri_absent and sessions["02"].no_bold == "no BOLD run matches the selection"
    assert sessions["03"].fmri_absent and "sub-03_task-rest_bold.nii.gz" in sessions["03"].no_bold
    assert "5 volumes" in sessions["03"].no_bold

    cfg = RunConfig(execution=ex.model_copy(update={"work_dir": tmp_path / "work"}),
                    model=ModelCfg(modalities=["smri", "tabular"]))
    plans = {p.label: plan_participant(p, cfg) for p in found}
    (anat,) = plans["03"]
    assert anat.bold is None and anat.name == "anat" and anat.meta.bold is None
    assert anat.meta.no_bold == sessions["03"].no_bold and anat.meta.provenance.source_bold is None
    assert anat.key != plans["02"][0].key and plans["01"][0].bold is not None


def _t1w_only_entry(cache: TensorCache, participant: str, reason: str, session: str | None = None):
    run = make_run(np.random.default_rng(int(participant)), 0, 4, 0.0)
    affine = [[6.0, 0, 0, -45.0], [0, 6.0, 0, -63.0], [0, 0, 6.0, -36.0], [0, 0, 0, 1.0]]
    meta = EntryMeta(participant=participant, session=session, no_bold=reason,
                     geometry=Geometry(affine=affine, grid_shape=(GRID,) * 3, resolution_mm=6.0),
                     provenance=Provenance(source_t1w=f"/bids/sub-{participant}/anat/sub-{participant}_T1w.nii.gz"))
    return cache.put(TensorCache.make_key({"p": participant, "s": session}, {"anat_only": True}),
                     {"smri": run["smri"], "mask": run["mask"]}, meta)


def test_models_that_need_fmri_refuse_t1w_only_participants_with_the_reason(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path / "cache")
    entries, _ = build_dataset(cache, n_per_class=2, frames=4)  # 01-04 with BOLD; 03 has two sessions
    short = _t1w_only_entry(cache, "05", "sub-05_task-rest_bold.nii.gz: the BOLD run has 5 volumes")
    extra = _t1w_only_entry(cache, "03", "no BOLD run matches the selection", session="3")
    assert short.names == ["mask", "smri"] and short.meta.modalities == ("smri",)
    assert entries[0].meta.modalities == ("fmri", "smri")
    usable, lacking = split_by_fmri([*entries, short, extra])
    assert usable == entries and lacking == [short, extra]

    kept, refused = refuse_lacking([*entries, short, extra], ["fmri"], "the model m2m@abc")
    assert kept == entries and list(refused) == ["05"]  # sub-03 keeps its sessions with BOLD
    error = refused["05"]
    assert error.code == ExitCode.DATA_ERROR == 65
    assert "sub-05 has no usable BOLD" in error.message and "5 volumes" in error.message
    assert "the model m2m@abc needs fmri" in error.message and "--modalities smri tabular" in error.hint
    assert refuse_lacking([short], [], "an sMRI model") == ([short], {})

    assert needs_fmri(tiny_config(tmp_path)) and not needs_fmri(
        tiny_config(tmp_path).model_copy(update={"model": ModelCfg(modalities=["smri", "tabular"])}))
    assert needs_fmri(tiny_config(tmp_path).model_copy(update={"model": ModelCfg(arch="connectome-logreg",
                                                                                 modalities=["smri"])}))


def test_smri_tabular_model_trains_on_and_predicts_for_t1w_only_participants(tmp_path: Path) -> None:
    from m2m_bids.interpret.api import apply_model
    from m2m_bids.training.api import train_group

    cache = TensorCache(tmp_path / "cache")
    entries, phenotype = build_dataset(cache, n_per_class=4, frames=4, effect=4.0)
    t1w_only = [_t1w_only_entry(cache, p, "no BOLD run matches the selection") for p in ("09", "10")]
    phenotype.loc["09"] = {"diagnosis": "CN", "age": 70.0, "sex": "F"}
    phenotype.loc["10"] = {"diagnosis": "AD", "age": 72.0, "sex": "M"}
    base = tiny_config(tmp_path, folds=2, epochs=2)
    cfg = base.model_copy(update={"model": base.model.model_copy(update={"modalities": ["smri", "tabular"]})})
    result = train_group([*entries, *t1w_only], phenotype, cfg, cfg.execution.output_dir)
    oof = pd.read_csv(cfg.execution.output_dir / "group" / "oof-predictions.tsv", sep="\t")
    assert {"sub-09", "sub-10"} <= set(oof["participant_id"])

    applied = cfg.model_copy(update={"execution": cfg.execution.model_copy(
        update={"analysis_level": "participant", "allow_training_participants": True,
                "output_dir": tmp_path / "applied"})})
    assert apply_model(result.bundle_dir, t1w_only[:1], applied) == {}
    table = pd.read_csv(tmp_path / "applied" / "predictions.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-09"] and list(table["modalities"]) == ["smri+tabular"]
    sidecar = json.loads((tmp_path / "applied" / "predictions.json").read_text())
    assert "modalities" in sidecar


@pytest.mark.slow
def test_missing_and_motion_refused_bold_leave_t1w_only_entries_for_an_smri_model(tmp_path: Path) -> None:
    """Whole preprocessing on realistic participants: sub-01's BOLD is refused by motion QC, sub-03
    has none; with an sMRI + tabular model both are cached T1w-only with the reason, sub-02 whole."""
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import rigid_matrix, tiny_config as preproc_config, write_description, write_participant

    from m2m_bids.preproc.api import preprocess_participants

    bids = tmp_path / "bids"
    write_description(bids)
    motion = np.zeros((12, 6))
    motion[6:, 0] = 2.0  # a 2 mm jump: beyond max_fd_mm = 1
    write_participant(bids, "01", t1_pull=rigid_matrix((3, -2, 2), (3, -2, 2)), n_volumes=12, motion=motion)
    write_participant(bids, "02", t1_pull=np.eye(4), n_volumes=12, rng_seed=2)
    write_participant(bids, "03", t1_pull=np.eye(4), n_volumes=12, rng_seed=3)
    for file in (bids / "sub-03" / "func").iterdir():
        file.unlink()
    cfg = preproc_config(bids, tmp_path / "out", max_fd_mm=1.0, execution={"nipype_plugin": "Linear"})
    cfg = cfg.model_copy(update={"model": ModelCfg(modalities=["smri", "tabular"])})
    participants, problems = collect_participants(cfg.execution, cfg.preproc, scan_voxels=False, anat_only=True)
    assert problems == [] and [p.label for p in participants] == ["01", "02", "03"]

    results = {r.label: r for r in preprocess_participants(participants, cfg, t1w_only_ok=True)}
    assert all(r.error is None and len(r.entries) == 1 for r in results.values()), results
    moved, whole, absent = (results[label].entries[0] for label in ("01", "02", "03"))
    assert "fmri" in whole.names and whole.meta.no_bold is None
    for entry in (moved, absent):
        assert entry.names == ["brain_mask", "gm", "mask", "smri"] and entry.meta.bold is None
        assert entry.meta.qc.template_correlation > 0.5 and entry.meta.qc.bold_t1w_cost is None
    assert "implausible head motion" in moved.meta.no_bold
    assert absent.meta.no_bold == "no BOLD run matches the selection"
    qc_table = pd.read_csv(tmp_path / "out" / "group" / "desc-regqc_table.tsv", sep="\t")
    assert set(qc_table["run"]) == {"anat", "task-rest"} and qc_table["passed"].all()

    kept, refused = refuse_lacking([moved, whole, absent], ["fmri"], "the model")
    assert kept == [whole] and sorted(refused) == ["01", "03"]
    assert "implausible head motion" in refused["01"].message
