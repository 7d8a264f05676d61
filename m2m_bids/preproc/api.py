"""Entry point of the preprocessing stage: :func:`preprocess_participants`.

Plans every run (cache keys from headers and parameters), answers cached runs at once, builds one
nipype graph with a sub-workflow per participant for the rest, runs it (MultiProc by default, so
participants and independent nodes run in parallel under ``--nprocs``/``--mem``), and turns each
participant's outcome into a :class:`ParticipantResult`. One participant's failure never stops
the others; its message names the file and the fix, the traceback stays in the crash file under
``OUTPUT_DIR/sub-<id>/log/<run-id>/``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.bids.inputs import ParticipantInputs
from m2m_bids.config import RunConfig
from m2m_bids.preproc.progress import NodeProgress
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc.cache import CacheEntry, TensorCache
from m2m_bids.preproc.cache_cleanup import remove_stale_temporaries
from m2m_bids.preproc.diskspace import GuardedMultiProcPlugin, check_free_space, estimate_work_bytes
from m2m_bids.preproc.grid import TEMPLATE_NAME
from m2m_bids.preproc.interfaces import ERROR_MARKER
from m2m_bids.preproc.outputs import bold_path
from m2m_bids.preproc.parent_death import MAIN_PID_VARIABLE
from m2m_bids.preproc.plan import RunPlan, plan_participant
from m2m_bids.preproc.qcreport import apply_qc, write_group_qc, write_participant_qc
from m2m_bids.preproc.registration import ants_seed
from m2m_bids.preproc.workflows import build_preproc_wf, crash_dump_dir

log = logging.getLogger(__name__)

#: Modules the MultiProc worker server imports once, so each worker starts in milliseconds.
FORKSERVER_PRELOAD = ("m2m_bids.preproc.parent_death", "m2m_bids.preproc.worker_logging", "nipype.pipeline.engine", "m2m_bids.preproc.interfaces", "m2m_bids.preproc.steps",
                      "m2m_bids.preproc.sink", "m2m_bids.preproc.resample", "ants", "matplotlib.pyplot")


@dataclass
class ParticipantResult:
    """Outcome for one participant: its cache entries (one per BOLD run) or the error that stopped it."""

    label: str
    entries: list[CacheEntry] = field(default_factory=list)
    error: AppError | None = None
    cached: bool = False


def preprocess_participants(participants: list[ParticipantInputs], cfg: RunConfig,
                            t1w_only_ok: bool = False) -> list[ParticipantResult]:
    """Preprocess (or take from the cache) every participant; one result per participant, in order.

    ``t1w_only_ok``: the model reads no BOLD (:func:`m2m_bids.backends.needs_fmri` is False), so a
    participant refused because of one BOLD run is preprocessed again without it, T1w-only."""
    cache = TensorCache(cfg.execution.resolved_cache_dir)
    remove_stale_temporaries(cache.root)
    results: dict[str, ParticipantResult] = {}
    todo: dict[str, list[RunPlan]] = {}
    for participant in participants:
        try:
            plans = plan_participant(participant, cfg)
        except AppError as err:
            log.error("sub-%s: %s", participant.label, err.render())
            results[participant.label] = ParticipantResult(participant.label, error=err)
            continue
        hits = [cache.get(plan.key) for plan in plans]
        if all(hit is not None for hit in hits) and all(_derivatives_present(plan, cfg) for plan in plans):
            log.info("sub-%s: all %d run(s) found in the tensor cache %s: no preprocessing needed",
                     participant.label, len(plans), cache.root)
            results[participant.label] = ParticipantResult(participant.label, entries=list(hits), cached=True)
        else:
            todo[participant.label] = plans
    while todo:
        _run_workflow(todo, cfg)
        for label, plans in todo.items():
            results[label] = _collect(label, plans, cache, cfg)
        todo = _retry_t1w_only(participants, results, cfg) if t1w_only_ok else {}
    ordered = [results[p.label] for p in participants]
    _quality_control(ordered, cfg)
    return ordered


def _retry_t1w_only(participants: list[ParticipantInputs], results: dict[str, ParticipantResult],
                    cfg: RunConfig) -> dict[str, list[RunPlan]]:
    """Plans of the participants refused because of one BOLD run (motion QC, slice timing, ...),
    without that run, for a model that needs no fMRI: a session left without runs is cached T1w-only
    with the refusal as its reason. The nipype work directory keeps the finished T1w steps."""
    todo: dict[str, list[RunPlan]] = {}
    for participant in participants:
        error = results[participant.label].error
        if error is None or error.code is not ExitCode.DATA_ERROR or not error.path:
            continue
        sessions = []
        for session in participant.sessions:
            runs = tuple(run for run in session.bold_runs if str(run.path) != error.path)
            if len(runs) < len(session.bold_runs):
                log.warning("sub-%s: BOLD run %s left out (the model needs no fMRI): %s", participant.label,
                            error.path, error.message)
                session = replace(session, bold_runs=runs, no_bold=session.no_bold if runs else error.message)
            sessions.append(session)
        if tuple(sessions) != participant.sessions:
            todo[participant.label] = plan_participant(replace(participant, sessions=tuple(sessions)), cfg)
    return todo


def _quality_control(results: list[ParticipantResult], cfg: RunConfig) -> None:
    """QC tables and figures of every preprocessed participant; refuse those below the thresholds
    (their result gets the error, exit 65) unless ``--qc-override``."""
    writer = DerivativesWriter(cfg.execution.output_dir)
    checked = [r for r in results if r.error is None and r.entries]
    for result in checked:
        write_participant_qc(writer, result.label, result.entries)
        refusal = apply_qc(result.label, result.entries, cfg.execution.qc_override)
        if refusal is not None:
            result.error, result.entries = refusal, []
    if checked:
        write_group_qc(writer)


def _derivatives_present(plan: RunPlan, cfg: RunConfig) -> bool:
    """True without ``--save-preproc`` or for a T1w-only plan (no BOLD derivative to write), else
    whether the run's smoothed BOLD derivative exists."""
    if not cfg.execution.save_preproc or plan.bold is None:
        return True
    writer = DerivativesWriter(cfg.execution.output_dir)
    return bold_path(writer, plan.bold.entities, TEMPLATE_NAME, cfg.preproc.resolution_mm).is_file()


def _collect(label: str, plans: list[RunPlan], cache: TensorCache, cfg: RunConfig) -> ParticipantResult:
    entries = [cache.get(plan.key) for plan in plans]
    if all(e is not None for e in entries):
        for entry in entries:
            _log_run_warnings(label, entry, cfg.preproc.flag_mean_fd_mm)
        return ParticipantResult(label, entries=list(entries))
    crash_dir = crash_dump_dir(cfg, label)
    error = _error_from_crashes(crash_dir) or AppError(
        f"preprocessing of sub-{label} failed", ExitCode.FAILURE, path=str(crash_dir),
        hint="read the crash file(s) in that folder; rerun to resume from the nipype work directory")
    if f"sub-{label}" not in error.message:  # errors raised inside nodes do not know the participant
        error = AppError(f"sub-{label}: {error.message}", error.code, path=error.path, hint=error.hint)
    log.error("%s", error.render())
    return ParticipantResult(label, error=error)


def _log_run_warnings(label: str, entry: CacheEntry, flag_mean_fd_mm: float) -> None:
    """Log what the worker recorded with the run and what QC flags, so the run log has it.

    Workers cannot write the run log; what changed the processing (a slice-timing correction
    skipped because of the sidecar) and high but plausible head motion are logged here.
    """
    bold = entry.meta.bold
    if bold is None:
        return
    if bold.slice_timing is not None and bold.slice_timing.warning:
        log.warning("sub-%s: %s", label, bold.slice_timing.warning)
    if bold.motion is not None and bold.motion.mean_fd > flag_mean_fd_mm:
        log.warning("sub-%s: high head motion in %s: mean framewise displacement %.2f mm (above "
                    "preproc.flag_mean_fd_mm = %g); check the motion QC before using this run", label,
                    entry.meta.provenance.source_bold, bold.motion.mean_fd, flag_mean_fd_mm)


def _error_from_crashes(crash_dir: Path) -> AppError | None:
    """The first user-facing error recorded in the participant's crash files, if any."""
    if not crash_dir.is_dir():
        return None
    crashes = sorted(crash_dir.glob("crash-*"), key=lambda p: p.stat().st_mtime)
    for crash in crashes:
        text = crash.read_text(errors="replace")
        idx = text.find(ERROR_MARKER)
        if idx >= 0:
            line = text[idx + len(ERROR_MARKER):].splitlines()[0]
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                continue
            hint = "; ".join(filter(None, [payload.get("hint"), f"details: {crash}"]))
            return AppError(payload["message"], ExitCode(payload["code"]), path=payload.get("path"), hint=hint)
    if crashes:
        last = crashes[0].read_text(errors="replace").strip().splitlines()
        reason = next((ln for ln in reversed(last) if ln.strip() and not ln.startswith(" ")), "unknown error")
        return AppError(f"a preprocessing step failed: {reason.strip()}", ExitCode.FAILURE, path=str(crashes[0]),
                        hint="see the crash file for the full traceback; report it if the input looks valid")
    return None


def _run_workflow(todo: dict[str, list[RunPlan]], cfg: RunConfig) -> None:
    """Build one graph for all participants to process and run it with the configured plugin."""
    ex = cfg.execution
    os.environ.setdefault("NIPYPE_NO_ET", "1")
    # before the workers start: torch threads; ANTs single-threaded and seeded (reproducible, registration.py)
    os.environ["OMP_NUM_THREADS"] = str(ex.threads)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    os.environ["ANTS_RANDOM_SEED"] = str(ants_seed(ex.random_seed))
    work = ex.resolved_work_dir / "nipype"
    work.mkdir(parents=True, exist_ok=True)
    plans = [plan for runs in todo.values() for plan in runs]
    check_free_space([work, ex.resolved_cache_dir], estimate_work_bytes(
        {path for plan in plans for path in (plan.bold.path if plan.bold else None, plan.t1w,
                                                plan.pet.path if plan.pet else None) if path}))
    wf = build_preproc_wf(todo, cfg, base_dir=work)
    plugin_args: dict[str, Any] = {}
    if ex.nipype_plugin == "MultiProc":
        # forkserver: forked workers of a parent that already ran torch/OpenMP code can deadlock
        plugin_args = {"n_procs": ex.nprocs, "poll_sleep_duration": 0.05, "raise_insufficient": False,
                       "mp_context": "forkserver"}
        if ex.mem_gb:
            plugin_args["memory_gb"] = ex.mem_gb
    plugin_args.update(ex.nipype_plugin_args)
    progress = NodeProgress(sum(1 for _ in wf._get_all_nodes()))
    if ex.nipype_plugin in {"MultiProc", "Linear", "LegacyMultiProc"}:
        plugin_args.setdefault("status_callback", progress)
    if plugin_args.get("mp_context") == "forkserver":
        # workers fork from a server that has imported these once (not yet run: no OpenMP pools)
        multiprocessing.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        os.environ[MAIN_PID_VARIABLE] = str(os.getpid())  # the server and its workers die with us
    start = time.monotonic()
    log.info("preprocessing %d participant(s), %d run(s) with nipype %s (work dir %s)", len(todo),
             sum(len(p) for p in todo.values()), ex.nipype_plugin, work)
    runner = GuardedMultiProcPlugin(work, plugin_args) if ex.nipype_plugin == "MultiProc" else None
    try:
        wf.run(plugin=runner or ex.nipype_plugin, plugin_args=plugin_args)
    except RuntimeError as err:  # some node failed; MultiProc finished the others first
        log.debug("nipype reported failures: %s", err)
    finally:
        progress.close()
    if runner is not None and runner.disk_full is not None:
        runner.pool.shutdown(wait=False, cancel_futures=True)
        raise runner.disk_full
    log.info("preprocessing finished in %.1f s", time.monotonic() - start)
