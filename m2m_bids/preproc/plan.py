"""Planning: one :class:`RunPlan` per BOLD run, with its cache key, before any workflow is built.

A session without usable BOLD (:attr:`~m2m_bids.bids.inputs.SessionInputs.no_bold`, kept only when
the model needs no fMRI) gets one T1w-only plan (``bold`` is ``None``): its entry holds the sMRI
tensor, the masks, the GM map and QC, no fMRI.

Planning is cheap (headers and sidecars only), so a participant whose runs are all cached never
builds or runs a nipype graph, and problems that can be seen from the headers (3D BOLD, too few
volumes, no TR) are reported at once with the file and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib

from m2m_bids import __version__
from m2m_bids.bids.inputs import BoldRun, ParticipantInputs, PetImage, SessionInputs
from m2m_bids.config import ACCEPTANCE_ONLY, RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.content_hash import ContentHashes
from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance
from m2m_bids.preproc.fmriprep import FmriprepRun, find_fmriprep_dir, match_run
from m2m_bids.preproc.grid import TEMPLATE_NAME, make_grid

log = logging.getLogger(__name__)

#: Sidecar fields that change the preprocessing (part of the cache key).
KEY_METADATA = ("RepetitionTime", "SliceTiming", "SliceEncodingDirection")


@dataclass(frozen=True)
class RunPlan:
    """Everything a run's workflow needs, computed up front."""

    participant: str
    session: str | None
    bold: BoldRun | None  # None: a T1w-only plan
    t1w: Path
    t1w_entities: dict[str, str]
    key: str
    meta: EntryMeta
    fmriprep: FmriprepRun | None = None
    params: dict[str, Any] = field(default_factory=dict)
    pet: PetImage | None = None  # the session's PET, stored with each of its runs

    @property
    def name(self) -> str:
        """A node-name-safe identifier of the run (task/acq/run entities; ``anat`` T1w-only)."""
        if self.bold is None:
            return "anat"
        ents = self.bold.entities
        parts = [f"{k}_{ents[k]}" for k in ("task", "acquisition", "direction", "run", "echo") if ents.get(k)]
        return "_".join(parts).replace("-", "") or "bold"


def preproc_params(cfg: RunConfig) -> dict[str, Any]:
    """Every setting that changes the tensors (cache key, entry metadata, model-bundle checks)."""
    return cfg.preproc.model_dump(mode="json", exclude=set(ACCEPTANCE_ONLY))


def reproducibility_inputs(cfg: RunConfig) -> dict[str, int]:
    """Run settings outside ``preproc`` that change the tensors' bytes (cache-key inputs): the seed
    (ANTs metric sampling) and the torch thread count (float sums in another order)."""
    return {"random_seed": cfg.execution.random_seed, "threads": cfg.execution.threads}


def _check_bold_header(run: BoldRun, min_volumes: int, dummy_scans: int) -> None:
    try:
        shape = nib.load(str(run.path)).shape
    except Exception as err:  # noqa: BLE001 - nibabel raises many types
        raise AppError(f"cannot read the BOLD run: {err}", ExitCode.DATA_ERROR, path=str(run.path),
                       hint="re-export or remove the file") from err
    if len(shape) != 4:
        raise AppError(f"the BOLD run is {len(shape)}D {shape}, not 4D", ExitCode.DATA_ERROR, path=str(run.path),
                       hint="a BOLD run must be a 4D NIfTI (x, y, z, time)")
    if shape[3] - dummy_scans < min_volumes:
        raise AppError(f"the BOLD run has only {shape[3]} volumes ({shape[3] - dummy_scans} after dropping "
                       f"{dummy_scans} dummy scans); preprocessing needs at least {min_volumes}",
                       ExitCode.DATA_ERROR, path=str(run.path),
                       hint="exclude the run (--bids-filter-file / -t) or lower preproc.min_volumes in the config")
    if not run.repetition_time or run.repetition_time <= 0:
        raise AppError("the BOLD run has no RepetitionTime", ExitCode.DATA_ERROR, path=str(run.path),
                       hint="add RepetitionTime (seconds) to the run's JSON sidecar")


def plan_participant(participant: ParticipantInputs, cfg: RunConfig) -> list[RunPlan]:
    """The run plans of one participant; raises :class:`AppError` for a problem seen in headers."""
    ex, pp = cfg.execution, cfg.preproc
    fmriprep_dir = find_fmriprep_dir(ex.bids_dir, ex.derivatives)
    params = preproc_params(cfg)
    grid = make_grid(pp.resolution_mm, pp.grid_shape)
    hashes = TensorCache(ex.resolved_cache_dir).content_hashes()
    plans: list[RunPlan] = []
    sessions: tuple[SessionInputs, ...] = participant.sessions
    if not any(s.bold_runs or s.no_bold for s in sessions):
        raise AppError(f"sub-{participant.label} has no BOLD run to preprocess", ExitCode.NO_INPUT,
                       path=str(ex.bids_dir / f"sub-{participant.label}"), hint="check -t/--task and the filters")
    for session in sessions:
        if session.fmri_absent:
            plans.append(_anat_plan(participant.label, session, cfg, params, hashes))
        for run in session.bold_runs:
            _check_bold_header(run, pp.min_volumes, pp.dummy_scans)
            prep = match_run(fmriprep_dir, run.path, run.entities) if fmriprep_dir else None
            metadata = {k: run.metadata.get(k) for k in KEY_METADATA}
            metadata["RepetitionTime"] = run.repetition_time
            inputs: dict[str, Any] = {"t1w": session.t1w, "bold": run.path, "metadata": metadata,
                                      "execution": reproducibility_inputs(cfg)}
            if prep is not None:
                inputs["fmriprep"] = [prep.bold, prep.t1w, prep.mask, prep.t1w_mask, prep.confounds]
            if session.pet is not None:
                inputs["pet"] = session.pet.path
                inputs["pet_frame_durations"] = session.pet.frame_durations
            key = TensorCache.make_key(inputs, params, hashes)
            meta = EntryMeta(
                participant=participant.label, session=session.session,
                geometry=Geometry(affine=grid.affine.tolist(), grid_shape=list(grid.shape), space=TEMPLATE_NAME,
                                  resolution_mm=pp.resolution_mm),
                provenance=Provenance(source_t1w=str(session.t1w), source_bold=str(run.path),
                                      source_pet=str(session.pet.path) if session.pet is not None else None,
                                      input="fmriprep" if prep else "raw", fmriprep_space=prep.space if prep else None,
                                      preproc=params, params_hash=TensorCache.make_key({}, params),
                                      version=__version__),
                bold=BoldRecord(task=run.entities.get("task"), run=run.entities.get("run"),
                                entities=dict(run.entities), repetition_time=run.repetition_time))
            plans.append(RunPlan(participant=participant.label, session=session.session, bold=run, t1w=session.t1w,
                                 t1w_entities=dict(session.t1w_entities) or _t1w_entities(run, session),
                                 key=key, meta=meta, fmriprep=prep, params=params, pet=session.pet))
    return plans


def _anat_plan(label: str, session: SessionInputs, cfg: RunConfig, params: dict[str, Any],
               hashes: ContentHashes) -> RunPlan:
    """The T1w-only plan of a session without usable BOLD."""
    pp = cfg.preproc
    grid = make_grid(pp.resolution_mm, pp.grid_shape)
    inputs: dict[str, Any] = {"t1w": session.t1w, "anat_only": True, "execution": reproducibility_inputs(cfg)}
    if session.pet is not None:
        inputs["pet"] = session.pet.path
        inputs["pet_frame_durations"] = session.pet.frame_durations
    meta = EntryMeta(
        participant=label, session=session.session, no_bold=session.no_bold,
        geometry=Geometry(affine=grid.affine.tolist(), grid_shape=list(grid.shape), space=TEMPLATE_NAME,
                          resolution_mm=pp.resolution_mm),
        provenance=Provenance(source_t1w=str(session.t1w),
                              source_pet=str(session.pet.path) if session.pet is not None else None,
                              preproc=params, params_hash=TensorCache.make_key({}, params), version=__version__))
    entities = dict(session.t1w_entities) or {"subject": label,
                                              **({"session": session.session} if session.session else {})}
    return RunPlan(participant=label, session=session.session, bold=None, t1w=session.t1w, t1w_entities=entities,
                   key=TensorCache.make_key(inputs, params, hashes), meta=meta, params=params, pet=session.pet)


def _t1w_entities(run: BoldRun, session: SessionInputs) -> dict[str, str]:
    ents = {"subject": run.entities["subject"]}
    if session.session:
        ents["session"] = session.session
    return ents
