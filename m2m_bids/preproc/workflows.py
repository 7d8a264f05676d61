"""Nipype workflow factories (``init_*_wf``): keyword-only parameters, ``inputnode``/``outputnode``.

No factory reads the run configuration: :func:`init_preproc_wf` alone turns plans and a
:class:`~m2m_bids.config.RunConfig` into keyword arguments (docs/style-anchors.md section 3).

Per participant: one anatomical workflow per session (shared by its runs and its PET), one PET
workflow per session that has a PET, and one BOLD workflow per run, ending in the cache/derivatives
sink::

    T1w -> prepare (RAS, N4) -> register to MNI (ANTs) -> resample to grid + mask + z-score ─┐
    BOLD -> prepare (dummies) -> slice timing ─────────────────────────────┐                 │
                              └> motion (6 params, FD, boldref) -> coregister to T1w (ANTs) │
                                    resample once (motion o BOLD->T1w o T1w->MNI) -> smooth ─┴> maps -> cache
    PET -> frame average -> coregister to T1w (ANTs) -> resample once (PET->T1w o T1w->MNI) ──> cache

``maps``: GM probability of the grid T1w, mALFF/fALFF and the mean image of the smoothed BOLD
(before the store node z-scores it); see :mod:`m2m_bids.preproc.maps`. A session without usable
BOLD (T1w-only plan) runs the anatomical workflow (and its PET) into :func:`init_ds_anat_wf`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from m2m_bids.config import RunConfig
from m2m_bids.preproc import entrymeta
from m2m_bids.preproc import interfaces as ifc
from m2m_bids.preproc.entrymeta import EntryMeta
from m2m_bids.preproc.grid import TEMPLATE_NAME
from m2m_bids.preproc.plan import RunPlan


def init_anat_wf(*, resolution_mm: float, grid_shape: list[int], method: str, omp_nthreads: int, seed: int,
                 name: str = "anat_wf") -> pe.Workflow:
    """T1w: reorient, brain extraction, N4, ANTs registration of the brain to the template, grid
    resampling, mask, z-score, QC figures.

    Inputs: ``t1w``. Outputs: ``t1w_prepared`` (bias-corrected, registration resolution),
    ``brain_prepared`` (its brain mask), ``transform`` (template -> T1w), ``t1w_grid``/``mask_grid``/
    ``brain_grid`` (``.npy`` on the output grid), ``qc_anat`` (JSON).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["t1w_prepared", "brain_prepared", "transform", "t1w_grid",
                                                   "mask_grid", "brain_grid", "qc_anat"]),
                         name="outputnode")
    prepare = pe.Node(ifc.T1wPrepare(resolution_mm=resolution_mm, threads=omp_nthreads), name="prepare_t1w",
                      n_procs=omp_nthreads, mem_gb=2.0)
    register = pe.Node(ifc.T1wRegister(method=method, resolution_mm=resolution_mm, grid_shape=list(grid_shape),
                                       seed=seed),
                       name="register_t1w", mem_gb=1.5)  # single-threaded ANTs: reproducible
    to_grid = pe.Node(ifc.T1wToGrid(resolution_mm=resolution_mm, grid_shape=list(grid_shape)),
                      name="resample_t1w", mem_gb=0.5)
    wf.connect([
        (inputnode, prepare, [("t1w", "in_file")]),
        (prepare, register, [("out_file", "in_file"), ("brain", "brain")]),
        (prepare, to_grid, [("out_file", "in_file"), ("brain", "brain"), ("brain_record", "brain_record")]),
        (register, to_grid, [("transform", "transform")]),
        (prepare, outputnode, [("out_file", "t1w_prepared"), ("brain", "brain_prepared")]),
        (register, outputnode, [("transform", "transform")]),
        (to_grid, outputnode, [("t1w", "t1w_grid"), ("mask", "mask_grid"), ("brain", "brain_grid"),
                               ("qc", "qc_anat")]),
    ])
    return wf


def init_pet_wf(*, resolution_mm: float, grid_shape: list[int], seed: int,
                name: str = "pet_wf") -> pe.Workflow:
    """PET: frame average, rigid PET -> T1w (ANTs MI), one resampling to the grid, normalisation.

    Inputs: ``pet``, ``frame_durations`` (list, may be empty), ``t1w_prepared``, ``brain_prepared``,
    ``transform``, ``mask_grid``. Outputs: ``pet_grid`` (``.npy``, Arco et al. normalised, zero outside the mask).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["pet", "frame_durations", "t1w_prepared", "brain_prepared",
                                                  "transform", "mask_grid"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["pet_grid"]), name="outputnode")
    prepare = pe.Node(ifc.PetPrepare(), name="prepare_pet", mem_gb=0.5)
    coreg = pe.Node(ifc.Coregister(seed=seed), name="coregister_pet", mem_gb=0.5)
    to_grid = pe.Node(ifc.PetToGrid(resolution_mm=resolution_mm, grid_shape=list(grid_shape)),
                      name="resample_pet", mem_gb=0.5)
    wf.connect([
        (inputnode, prepare, [("pet", "in_file"), ("frame_durations", "frame_durations")]),
        (prepare, coreg, [("out_file", "moving")]),
        (inputnode, coreg, [("t1w_prepared", "t1w"), ("brain_prepared", "brain")]),
        (prepare, to_grid, [("out_file", "in_file")]),
        (coreg, to_grid, [("transform", "coreg")]),
        (inputnode, to_grid, [("transform", "transform"), ("mask_grid", "mask")]),
        (to_grid, outputnode, [("out_file", "pet_grid")]),
    ])
    return wf


def init_bold_wf(*, resolution_mm: float, grid_shape: list[int], fwhm_mm: float, dummy_scans: int,
                 min_volumes: int, slice_timing: bool, slice_time_ref: float, motion_correction: bool,
                 omp_nthreads: int, seed: int, bold_gb: float, n_volumes: int,
                 max_fd_mm: float = float("inf"), max_rotation_deg: float = float("inf"),
                 name: str = "bold_wf") -> pe.Workflow:
    """BOLD: dummies, slice timing, motion, coregistration, one resampling to the grid, smoothing.

    Inputs: ``bold``, ``metadata`` (sidecar JSON), ``t1w_prepared``, ``brain_prepared``, ``transform``.
    Outputs: ``bold_smoothed`` (``.npy``), ``motion`` (TSV), ``stc_record`` (JSON), ``qc_bold``
    (coregistration cost, JSON).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(IdentityInterface(fields=["bold", "metadata", "t1w_prepared", "brain_prepared", "transform"]),
                        name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["bold_smoothed", "motion", "stc_record", "qc_bold"]),
                         name="outputnode")
    out_gb = 4.0 * grid_shape[0] * grid_shape[1] * grid_shape[2] * n_volumes / 1e9  # float32 series on the grid
    prepare = pe.Node(ifc.BoldPrepare(dummy_scans=dummy_scans, min_volumes=min_volumes), name="prepare_bold",
                      mem_gb=2 * bold_gb + 0.2)
    stc = pe.Node(ifc.SliceTiming(ref_fraction=slice_time_ref, enabled=slice_timing), name="slice_timing",
                  mem_gb=3 * bold_gb + 0.2)
    motion = pe.Node(ifc.Motion(enabled=motion_correction, max_fd_mm=max_fd_mm, max_rotation_deg=max_rotation_deg),
                     name="estimate_motion", n_procs=omp_nthreads,
                     mem_gb=3 * bold_gb + 0.3)
    coreg = pe.Node(ifc.Coregister(seed=seed), name="coregister_bold", mem_gb=0.5)
    resample = pe.Node(ifc.BoldToGrid(resolution_mm=resolution_mm, grid_shape=list(grid_shape)),
                       name="resample_bold", n_procs=omp_nthreads, mem_gb=bold_gb + out_gb + 0.3)
    smooth = pe.Node(ifc.Smooth(fwhm_mm=fwhm_mm, resolution_mm=resolution_mm), name="smooth_bold",
                     mem_gb=3 * out_gb + 0.3)
    wf.connect([
        (inputnode, prepare, [("bold", "in_file")]),
        (inputnode, stc, [("bold", "source_file"), ("metadata", "metadata")]),
        (inputnode, motion, [("bold", "source_file")]),
        (prepare, stc, [("out_file", "in_file")]),
        (prepare, motion, [("out_file", "in_file")]),
        (motion, coreg, [("boldref", "moving")]),
        (inputnode, coreg, [("t1w_prepared", "t1w"), ("brain_prepared", "brain")]),
        (stc, resample, [("out_file", "in_file")]),
        (motion, resample, [("motion", "motion")]),
        (coreg, resample, [("transform", "coreg")]),
        (inputnode, resample, [("transform", "transform")]),
        (resample, smooth, [("out_file", "in_file")]),
        (smooth, outputnode, [("out_file", "bold_smoothed")]),
        (motion, outputnode, [("motion", "motion")]),
        (stc, outputnode, [("record", "stc_record")]),
        (coreg, outputnode, [("qc", "qc_bold")]),
    ])
    return wf


def init_fmriprep_bold_wf(*, resolution_mm: float, grid_shape: list[int], fwhm_mm: float, dummy_scans: int,
                          min_volumes: int, bold_gb: float, name: str = "fmriprep_bold_wf") -> pe.Workflow:
    """fMRIPrep input: resample the MNI-space BOLD/T1w/mask to the grid, then smooth.

    Inputs: ``bold``, ``t1w``, ``mask``, ``t1w_mask``, ``confounds``. Outputs: ``t1w_grid``,
    ``mask_grid``, ``bold_smoothed``, ``motion``, ``stc_record``.
    """
    wf = pe.Workflow(name=name)
    fields = ["bold", "t1w", "mask", "t1w_mask", "confounds"]
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["t1w_grid", "mask_grid", "bold_smoothed", "motion",
                                                   "stc_record"]), name="outputnode")
    to_grid = pe.Node(ifc.FmriprepToGrid(resolution_mm=resolution_mm, grid_shape=list(grid_shape),
                                         dummy_scans=dummy_scans, min_volumes=min_volumes),
                      name="resample_fmriprep", mem_gb=3 * bold_gb + 0.5)
    smooth = pe.Node(ifc.Smooth(fwhm_mm=fwhm_mm, resolution_mm=resolution_mm), name="smooth_bold",
                     mem_gb=3 * bold_gb + 0.3)
    wf.connect([
        (inputnode, to_grid, [(f, f) for f in fields]),
        (to_grid, smooth, [("bold", "in_file")]),
        (smooth, outputnode, [("out_file", "bold_smoothed")]),
        (to_grid, outputnode, [("t1w", "t1w_grid"), ("mask", "mask_grid"), ("motion", "motion"),
                               ("stc_record", "stc_record")]),
    ])
    return wf


def init_ds_run_wf(*, key: str, cache_dir: str, meta: EntryMeta, standardize: bool,
                   derivatives: dict[str, Any] | None, resolution_mm: float, repetition_time: float,
                   alff_band_hz: list[float], with_pet: bool = False, raw: bool = True,
                   name: str = "ds_run_wf") -> pe.Workflow:
    """Outputs of one run: the per-run maps (GM probability, mALFF, fALFF, mean BOLD), the
    tensor-cache entry and, with ``derivatives`` info, NIfTIs + figures.

    The maps are computed here, from the grid tensors, so raw and fMRIPrep inputs get the same
    maps, and from the smoothed series before the store node z-scores it (z-scoring erases ALFF).

    Inputs: ``t1w_grid``, ``mask_grid``, ``bold_smoothed``, ``motion``, ``stc_record`` (and
    ``pet_grid`` ``with_pet``: the session's PET, stored with every run of the session; and
    ``brain_grid``, ``qc_anat``, ``qc_bold`` for ``raw`` input, which brings its own brain mask and
    QC figures). Outputs: ``entry_dir``.
    """
    wf = pe.Workflow(name=name)
    qc_mapping = [("brain_grid", "brain"), ("qc_anat", "qc_anat"), ("qc_bold", "qc_bold")] if raw else []
    fields = (["t1w_grid", "mask_grid", "bold_smoothed", "motion", "stc_record"] + (["pet_grid"] if with_pet else [])
              + [source for source, _ in qc_mapping])
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["entry_dir"]), name="outputnode")
    grey = pe.Node(ifc.GreyMatter(resolution_mm=resolution_mm), name="grey_matter", mem_gb=0.5)
    bold_maps = pe.Node(ifc.BoldMaps(repetition_time=repetition_time, band_hz=list(alff_band_hz)),
                        name="bold_maps", mem_gb=1.0)
    store = pe.Node(ifc.StoreRun(key=key, cache_dir=cache_dir, meta=entrymeta.dumps(meta),
                                 standardize=standardize), name="store_cache", mem_gb=1.0)
    store.overwrite = True  # cheap, and the cache (not nipype) decides whether work is needed
    mapping = [("t1w_grid", "t1w"), ("mask_grid", "mask"), ("bold_smoothed", "bold"), ("motion", "motion"),
               ("stc_record", "stc_record")] + ([("pet_grid", "pet")] if with_pet else [])
    wf.connect([
        (inputnode, grey, [("t1w_grid", "t1w"), ("mask_grid", "mask")] + ([("brain_grid", "brain")] if raw else [])),
        (inputnode, bold_maps, [("bold_smoothed", "bold"), ("mask_grid", "mask")]),
        (inputnode, store, mapping + qc_mapping),
        (grey, store, [("gm", "gm")]),
        (bold_maps, store, [("alff", "alff"), ("falff", "falff"), ("bold_mean", "bold_mean")]),
        (store, outputnode, [("entry_dir", "entry_dir")]),
    ])
    if derivatives is not None:
        save = pe.Node(ifc.SaveDerivatives(info=json.dumps(derivatives, sort_keys=True, default=str)),
                       name="save_derivatives", mem_gb=1.0)
        save.overwrite = True
        wf.connect([(inputnode, save, mapping), (store, save, [("entry_dir", "entry_dir")])])
    return wf


def init_ds_anat_wf(*, key: str, cache_dir: str, meta: EntryMeta, resolution_mm: float, with_pet: bool = False,
                    name: str = "ds_anat_wf") -> pe.Workflow:
    """Outputs of a session without usable BOLD: the GM map and a T1w-only tensor-cache entry.

    Inputs: ``t1w_grid``, ``mask_grid``, ``brain_grid``, ``qc_anat`` (and ``pet_grid`` ``with_pet``).
    Outputs: ``entry_dir``.
    """
    wf = pe.Workflow(name=name)
    fields = ["t1w_grid", "mask_grid", "brain_grid", "qc_anat"] + (["pet_grid"] if with_pet else [])
    inputnode = pe.Node(IdentityInterface(fields=fields), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["entry_dir"]), name="outputnode")
    grey = pe.Node(ifc.GreyMatter(resolution_mm=resolution_mm), name="grey_matter", mem_gb=0.5)
    store = pe.Node(ifc.StoreAnat(key=key, cache_dir=cache_dir, meta=entrymeta.dumps(meta)), name="store_cache",
                    mem_gb=0.5)
    store.overwrite = True  # cheap, and the cache (not nipype) decides whether work is needed
    wf.connect([
        (inputnode, grey, [("t1w_grid", "t1w"), ("mask_grid", "mask"), ("brain_grid", "brain")]),
        (inputnode, store, [("t1w_grid", "t1w"), ("mask_grid", "mask"), ("brain_grid", "brain"), ("qc_anat", "qc_anat")]
         + ([("pet_grid", "pet")] if with_pet else [])),
        (grey, store, [("gm", "gm")]),
        (store, outputnode, [("entry_dir", "entry_dir")]),
    ])
    return wf


def set_crashdump_dir(wf: pe.Workflow, crashdump_dir: Path) -> None:
    """Crash files of every node of ``wf`` (text, readable) go to ``crashdump_dir``."""
    for node_name in wf.list_node_names():
        node = wf.get_node(node_name)
        node.config = {"execution": {"crashdump_dir": str(crashdump_dir), "crashfile_format": "txt"}}


def init_participant_wf(*, plans: list, cfg: Any, name: str) -> pe.Workflow:
    """All runs of one participant: an anatomical workflow per session, a BOLD workflow per run.

    ``plans`` are :class:`~m2m_bids.preproc.plan.RunPlan`; this and :func:`build_preproc_wf` are the
    only places that read the run configuration.
    """
    ex, pp = cfg.execution, cfg.preproc
    grid = dict(resolution_mm=pp.resolution_mm, grid_shape=list(pp.grid_shape))
    wf = pe.Workflow(name=name)
    anat_wfs: dict[str, pe.Workflow] = {}
    pet_wfs: dict[str, pe.Workflow] = {}

    def session_anat_wf(plan: Any) -> pe.Workflow:
        """The session's raw-T1w workflow (shared by its runs and its PET), built once."""
        session_key = f"anat_{_safe(plan.session or 'nosession')}_wf"
        if session_key not in anat_wfs:
            anat_wfs[session_key] = init_anat_wf(method=pp.registration, omp_nthreads=ex.threads,
                                                 seed=ex.random_seed, name=session_key, **grid)
            anat_wfs[session_key].inputs.inputnode.t1w = str(plan.t1w)
        return anat_wfs[session_key]

    def session_pet_wf(plan: Any) -> pe.Workflow:
        """The session's PET workflow (shared by its runs), built once on its raw-T1w workflow."""
        pet_key = f"pet_{_safe(plan.session or 'nosession')}_wf"
        if pet_key not in pet_wfs:
            anat = session_anat_wf(plan)
            pet_wfs[pet_key] = init_pet_wf(seed=ex.random_seed, name=pet_key, **grid)
            pet_wfs[pet_key].inputs.inputnode.pet = str(plan.pet.path)
            pet_wfs[pet_key].inputs.inputnode.frame_durations = plan.pet.frame_durations or []
            wf.connect([(anat, pet_wfs[pet_key], [("outputnode.t1w_prepared", "inputnode.t1w_prepared"),
                                                  ("outputnode.brain_prepared", "inputnode.brain_prepared"),
                                                  ("outputnode.transform", "inputnode.transform"),
                                                  ("outputnode.mask_grid", "inputnode.mask_grid")])])
        return pet_wfs[pet_key]

    for plan in plans:
        run_name = f"{_safe(plan.session or 'nosession')}_{_safe(plan.name)}"
        if plan.bold is None:  # T1w only: the session's anatomical workflow into a T1w-only entry
            ds_anat = init_ds_anat_wf(key=plan.key, cache_dir=str(ex.resolved_cache_dir), meta=plan.meta,
                                      resolution_mm=pp.resolution_mm, with_pet=plan.pet is not None,
                                      name=f"ds_{run_name}_wf")
            wf.connect([(session_anat_wf(plan), ds_anat, [(f"outputnode.{n}", f"inputnode.{n}") for n in
                                                          ("t1w_grid", "mask_grid", "brain_grid", "qc_anat")])])
            if plan.pet is not None:
                wf.connect([(session_pet_wf(plan), ds_anat, [("outputnode.pet_grid", "inputnode.pet_grid")])])
            continue
        ds = init_ds_run_wf(key=plan.key, cache_dir=str(ex.resolved_cache_dir), meta=plan.meta,
                            standardize=pp.standardize_bold,
                            derivatives=derivatives_info(plan, cfg) if ex.save_preproc else None,
                            resolution_mm=pp.resolution_mm, repetition_time=plan.bold.repetition_time,
                            alff_band_hz=list(pp.alff_band_hz), with_pet=plan.pet is not None,
                            raw=plan.fmriprep is None, name=f"ds_{run_name}_wf")
        if plan.pet is not None:  # PET always goes through the session's raw T1w (also with fMRIPrep BOLD)
            wf.connect([(session_pet_wf(plan), ds, [("outputnode.pet_grid", "inputnode.pet_grid")])])
        gb = bold_size_gb(plan.bold.path)
        if plan.fmriprep is not None:
            fp = plan.fmriprep
            bold_wf = init_fmriprep_bold_wf(fwhm_mm=pp.fwhm_mm, dummy_scans=pp.dummy_scans,
                                            min_volumes=pp.min_volumes, bold_gb=gb, name=f"fmriprep_{run_name}_wf",
                                            **grid)
            for field_name, value in (("bold", fp.bold), ("t1w", fp.t1w), ("mask", fp.mask),
                                      ("t1w_mask", fp.t1w_mask), ("confounds", fp.confounds)):
                setattr(bold_wf.inputs.inputnode, field_name, str(value) if value else None)
            wf.connect([(bold_wf, ds, [("outputnode.t1w_grid", "inputnode.t1w_grid"),
                                       ("outputnode.mask_grid", "inputnode.mask_grid")])])
        else:
            anat_wf = session_anat_wf(plan)
            bold_wf = init_bold_wf(fwhm_mm=pp.fwhm_mm, dummy_scans=pp.dummy_scans, min_volumes=pp.min_volumes,
                                   slice_timing=pp.slice_timing, slice_time_ref=pp.slice_time_ref,
                                   motion_correction=pp.motion_correction, omp_nthreads=ex.threads,
                                   seed=ex.random_seed, bold_gb=gb, n_volumes=plan.bold.n_volumes,
                                   max_fd_mm=pp.max_fd_mm, max_rotation_deg=pp.max_rotation_deg,
                                   name=f"bold_{run_name}_wf", **grid)
            bold_wf.inputs.inputnode.bold = str(plan.bold.path)
            bold_wf.inputs.inputnode.metadata = json.dumps(
                {**plan.bold.metadata, "RepetitionTime": plan.bold.repetition_time}, sort_keys=True, default=str)
            wf.connect([
                (anat_wf, bold_wf, [("outputnode.t1w_prepared", "inputnode.t1w_prepared"),
                                    ("outputnode.brain_prepared", "inputnode.brain_prepared"),
                                    ("outputnode.transform", "inputnode.transform")]),
                (anat_wf, ds, [("outputnode.t1w_grid", "inputnode.t1w_grid"),
                               ("outputnode.mask_grid", "inputnode.mask_grid"),
                               ("outputnode.brain_grid", "inputnode.brain_grid"),
                               ("outputnode.qc_anat", "inputnode.qc_anat")]),
                (bold_wf, ds, [("outputnode.qc_bold", "inputnode.qc_bold")]),
            ])
        wf.connect([(bold_wf, ds, [("outputnode.bold_smoothed", "inputnode.bold_smoothed"),
                                   ("outputnode.motion", "inputnode.motion"),
                                   ("outputnode.stc_record", "inputnode.stc_record")])])
    return wf


def build_preproc_wf(todo: dict[str, list], cfg: Any, base_dir: Path) -> pe.Workflow:
    """The top graph: one participant workflow each, crash files under ``sub-<id>/log/<run-id>/``."""
    wf = pe.Workflow(name="m2m_preproc_wf", base_dir=str(base_dir))
    wf.config["execution"].update({"crashfile_format": "txt", "stop_on_first_crash": cfg.execution.stop_on_first_crash,
                                   "remove_unnecessary_outputs": False, "poll_sleep_duration": 0.05})
    for label, plans in todo.items():
        sub_wf = init_participant_wf(plans=plans, cfg=cfg, name=f"sub_{_safe(label)}_wf")
        wf.add_nodes([sub_wf])
        crash_dir = crash_dump_dir(cfg, label)
        crash_dir.mkdir(parents=True, exist_ok=True)
        set_crashdump_dir(sub_wf, crash_dir)
    return wf


def crash_dump_dir(cfg: RunConfig, label: str) -> Path:
    """``OUTPUT_DIR/sub-<id>/log/<run-id>/``."""
    return cfg.execution.output_dir / f"sub-{label}" / "log" / cfg.run_id


def derivatives_info(plan: RunPlan, cfg: RunConfig) -> dict[str, Any]:
    """What the ``--save-preproc`` node needs to name and describe its files."""
    info = {"output_dir": str(cfg.execution.output_dir), "bids_dir": str(cfg.execution.bids_dir),
            "entities": dict(plan.bold.entities), "t1w_entities": dict(plan.t1w_entities),
            "template": TEMPLATE_NAME, "resolution_mm": cfg.preproc.resolution_mm,
            "grid_shape": list(cfg.preproc.grid_shape), "repetition_time": plan.bold.repetition_time,
            "fwhm_mm": cfg.preproc.fwhm_mm, "bold": str(plan.bold.path), "t1w": str(plan.t1w)}
    if plan.pet is not None:
        info.update({"pet": str(plan.pet.path), "pet_entities": dict(plan.pet.entities),
                     "pet_sidecar": dict(plan.pet.metadata)})
    return info


def bold_size_gb(path: Path) -> float:
    """In-memory float32 size of a BOLD run (from its header) in GB: sizes nodes for MultiProc."""
    shape = nib.load(str(path)).shape
    return 4.0 * float(np.prod(shape)) / 1e9


def _safe(text: str) -> str:
    """A nipype node name fragment (letters, digits, underscores)."""
    return "".join(c if c.isalnum() else "_" for c in str(text))
