"""The glue between stages: one function per analysis level, each returning an exit code.

``run(cfg)`` prepares the output directory and the process (logging, caches, seeds), validates
and selects the input, then runs the level:

* participant: preprocess every selected participant into the tensor cache (optionally writing
  preprocessed derivatives) and, when a model bundle is given or present, apply it.
* group: make sure every participant is preprocessed (cache hits are free), then train and
  cross-validate the model.

One participant's failure is reported and logged in ``sub-<id>/log/<run-id>/`` and the others go
on; the exit code is non-zero at the end (``--stop-on-first-crash`` stops at once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from m2m_bids import __version__
from m2m_bids.backends import backend_of_arch, backend_of_bundle, needs_fmri
from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.bids.inputs import ParticipantInputs
from m2m_bids.bids.layout import collect_participants
from m2m_bids.bids.participants import read_participants
from m2m_bids.bids.validator import validate_bids_dir
from m2m_bids.config import AnalysisLevel, RunConfig, seed_everything
from m2m_bids.exitcodes import FULL_ERRNOS, AppError, ExitCode
from m2m_bids.preflight import resolve_bundle
from m2m_bids.preproc.availability import refuse_lacking
from m2m_bids.runtime import configure_caches, configure_threads, is_main_process, setup_logging
from m2m_bids.training.labels import check_rule_columns

log = logging.getLogger("m2m_bids")


@dataclass
class Outcome:
    """What happened to each participant, for the closing summary and the exit code.

    With ``writer`` set (the run's derivatives sink), every failure is also written to
    ``sub-<id>/log/<run-id>/errors.log`` beside the crash files of that participant, which is
    where the closing message sends the user.
    """

    done: list[str] = field(default_factory=list)
    failed: dict[str, list[AppError]] = field(default_factory=dict)
    writer: DerivativesWriter | None = None

    def fail(self, label: str, error: AppError, stop: bool) -> None:
        self.failed.setdefault(label, []).append(error)
        log.error("sub-%s: %s", label, error.render())
        if self.writer is not None:
            _append_error_log(self.writer, label, error)
        if stop:
            raise error

    @property
    def exit_code(self) -> ExitCode:
        if not self.failed:
            return ExitCode.OK
        codes = {err.code for errors in self.failed.values() for err in errors}
        return codes.pop() if len(codes) == 1 else ExitCode.FAILURE


def _append_error_log(writer: DerivativesWriter, label: str, error: AppError) -> None:
    """Add ``error`` to ``sub-<label>/log/<run-id>/errors.log``."""
    path = writer.output_path(f"sub-{label}", "log", writer.run_id, "errors.log")
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        writer.append_text(path, f"{stamp} exit code {int(error.code)} ({error.code.name})\n{error.render()}\n\n")
    except OSError as err:  # the console and the run log still have the message
        log.warning("could not write %s: %s", path, err)


def _remove_empty_log_dirs(output_dir: Path, run_id: str) -> None:
    """Participants that did nothing in this run leave no empty ``sub-<id>/log/<run-id>/`` behind."""
    for run_dir in output_dir.glob(f"sub-*/log/{run_id}"):
        for folder in (run_dir, run_dir.parent, run_dir.parent.parent):
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                break


def run(cfg: RunConfig) -> ExitCode:
    """Run one BIDS-App invocation; never raises for user-facing problems (returns the code)."""
    ex = cfg.execution
    try:
        _prepare_output(ex.output_dir)
    except AppError as err:
        logging.getLogger("m2m_bids").error(err.render())
        return err.code
    setup_logging(ex.verbosity, ex.output_dir / "logs" / cfg.run_id / "m2m.log")
    started = time.monotonic()
    log.info("m2m-bids %s, run %s, %s level", __version__, cfg.run_id, ex.analysis_level.value)
    try:
        configure_caches(ex.resolved_work_dir)
        configure_threads(ex.threads)
        seed_everything(ex.random_seed)
        if is_main_process():
            log.info("configuration saved to %s", save_snapshot(cfg))
        code = _run_level(cfg)
    except AppError as err:
        log.error(err.render())
        code = err.code
    except OSError as err:
        if err.errno in FULL_ERRNOS:
            log.error(AppError(f"the disk is full: {err.strerror}", ExitCode.IO_ERROR, path=err.filename,
                               hint="free some space or choose another OUTPUT_DIR / --work-dir, then re-run").render())
            code = ExitCode.IO_ERROR
        else:
            code = _unexpected(cfg, err)
    except MemoryError:
        log.error("out of memory; lower --nprocs/--batch-size or raise the job's memory, then re-run "
                  "(finished work is cached and will not be redone)")
        code = ExitCode.TEMP_FAIL
    except Exception as err:  # CUDA OOM surfaces as RuntimeError subclasses
        if "out of memory" in str(err).lower():
            log.error("GPU out of memory (%s); lower --batch-size or --window-frames and re-run", err)
            code = ExitCode.TEMP_FAIL
        else:
            code = _unexpected(cfg, err)
    finally:
        _finalise_outputs(cfg)
    log.info("finished in %.1f s with exit code %d", time.monotonic() - started, int(code))
    return code


def _unexpected(cfg: RunConfig, err: Exception) -> ExitCode:
    """A bug, not a user error: one line on the console, the traceback in the run log; exit 1."""
    log.debug("unexpected error", exc_info=err)
    reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    log.error("unexpected error %s: %s\n  file: %s (holds the traceback)\n  fix:  please report it with that log",
              type(err).__name__, reason, cfg.execution.output_dir / "logs" / cfg.run_id / "m2m.log")
    return ExitCode.FAILURE


def save_snapshot(cfg: RunConfig) -> Path:
    """Save ``OUTPUT_DIR/logs/<run-id>/config.toml``: the provenance record of this run."""
    writer = DerivativesWriter(cfg.execution.output_dir, run_id=cfg.run_id)
    return writer.save_text(cfg.to_toml(), writer.output_path("logs", cfg.run_id, "config.toml"))


def _prepare_output(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        writer = DerivativesWriter(output_dir)
        writer.save_text("", writer.output_path(".m2m-write-test")).unlink()
    except OSError as err:
        raise AppError(f"cannot create or write the output directory: {err.strerror}", ExitCode.CANT_CREATE,
                       path=str(output_dir), hint="check permissions and that the volume is mounted writable") from err


def _finalise_outputs(cfg: RunConfig) -> None:
    """Always leave a valid derivatives root behind, even after a failure."""
    if not is_main_process():
        return
    _remove_empty_log_dirs(cfg.execution.output_dir, cfg.run_id)
    try:
        writer = DerivativesWriter(cfg.execution.output_dir, bids_dir=cfg.execution.bids_dir, run_id=cfg.run_id)
        writer.write_dataset_description()
        writer.update_bidsignore([])
    except OSError as err:
        log.error("could not write dataset_description.json: %s", err)


def _run_level(cfg: RunConfig) -> ExitCode:
    ex = cfg.execution
    if ex.skip_bids_validation:
        log.info("BIDS validation skipped (--skip-bids-validation)")
    else:
        report = validate_bids_dir(ex.bids_dir, ex.participant_label or None, tmp_dir=ex.resolved_work_dir)
        for warning in report.warnings[:20]:
            log.debug("bids-validator warning: %s", warning)
        report.raise_for_errors()
        log.info("bids-validator: no errors (%d warnings)", len(report.warnings))
    participants, problems = collect_participants(ex, cfg.preproc, anat_only=not needs_fmri(cfg))
    outcome = Outcome(writer=DerivativesWriter(ex.output_dir, run_id=cfg.run_id) if is_main_process() else None)
    for problem in problems:
        outcome.fail(problem.label, AppError(problem.message, problem.code, path=problem.path, hint=problem.hint),
                     ex.stop_on_first_crash)
    refused = f" ({len(problems)} more refused: {', '.join(f'sub-{p.label}' for p in problems)})" if problems else ""
    log.info("%d participant(s) selected: %s%s", len(participants),
             ", ".join(f"sub-{p.label}" for p in participants) or "none usable", refused)
    if ex.dry_run:
        _print_plan(participants)
        return outcome.exit_code
    if ex.analysis_level is AnalysisLevel.participant:
        _participant_level(cfg, participants, outcome)
    else:
        _group_level(cfg, participants, outcome)
    if outcome.failed:
        log.error("%d participant(s) failed: %s (see sub-<id>/log/%s/)", len(outcome.failed),
                  ", ".join(f"sub-{k}" for k in sorted(outcome.failed)), cfg.run_id)
    return outcome.exit_code


def _print_plan(participants: list[ParticipantInputs]) -> None:
    """``--dry-run``: one line per participant, session and BOLD run that would be processed."""
    for participant in participants:
        for session in participant.sessions:
            runs = ", ".join(f"{run.path.name} ({run.n_volumes} vols, TR {run.repetition_time:g} s)"
                             for run in session.bold_runs) or f"none, T1w only ({session.no_bold})"
            where = f" ses-{session.session}" if session.session else ""
            pet = f"; PET {session.pet.path.name}" if session.pet else ""
            print(f"sub-{participant.label}{where}: T1w {session.t1w.name}; BOLD {runs}{pet}")


def _preprocess(cfg: RunConfig, participants: list[ParticipantInputs], outcome: Outcome) -> list:
    """Preprocess (or fetch from the cache) every participant; return the cache entries of those that worked."""
    from m2m_bids.preproc.api import preprocess_participants

    entries = []
    for result in preprocess_participants(participants, cfg, t1w_only_ok=not needs_fmri(cfg)):
        if result.error is not None:
            outcome.fail(result.label, result.error, cfg.execution.stop_on_first_crash)
            continue
        outcome.done.append(result.label)
        entries.extend(result.entries)
    return entries


def _participant_level(cfg: RunConfig, participants: list[ParticipantInputs], outcome: Outcome) -> None:
    if cfg.execution.model is not None:
        log.info("model bundle %s: preprocessing settings taken from its card", cfg.execution.model)
    entries = _preprocess(cfg, participants, outcome)
    log.info("%d preprocessed sample(s) in the tensor cache %s", len(entries), cfg.execution.resolved_cache_dir)
    bundle = _model_bundle(cfg)
    if bundle is None:
        log.info("no model bundle given (--model) or found in %s: preprocessing only",
                 cfg.execution.output_dir / "models")
        return
    backend = backend_of_bundle(bundle)
    assert backend is not None  # resolve_bundle returns folders that hold a card
    for label, error in backend.apply(bundle, entries, cfg).items():
        outcome.fail(label, error, cfg.execution.stop_on_first_crash)


def _model_bundle(cfg: RunConfig) -> Path | None:
    """The bundle resolved when the configuration was built (:func:`m2m_bids.preflight.resolve_bundle`):
    ``--model PATH``, else the group model of this arch already in OUTPUT_DIR, else none."""
    return resolve_bundle(cfg)


def _group_level(cfg: RunConfig, participants: list[ParticipantInputs], outcome: Outcome) -> None:
    phenotype = read_participants(cfg.execution.bids_dir)
    check_rule_columns(cfg.train.label_rule, phenotype)  # before hours of preprocessing, not after
    entries = _preprocess(cfg, participants, outcome)
    if needs_fmri(cfg):  # T1w-only entries serve sMRI + tabular models only
        entries, refused = refuse_lacking(entries, ["fmri"], f"--arch {cfg.model.arch} with --modalities "
                                          + " ".join(cfg.model.modalities))
        for label, error in refused.items():
            outcome.fail(label, error, cfg.execution.stop_on_first_crash)
    if not entries:
        raise AppError("no participant could be preprocessed, so there is nothing to train on",
                       ExitCode.DATA_ERROR, hint="see the errors above and sub-<id>/log/")
    backend = backend_of_arch(cfg.model.arch)
    result = backend.train(entries, phenotype, cfg, cfg.execution.output_dir)
    log.info("group model written to %s", result.bundle_dir)
    if is_main_process() and cfg.interpret.reports and backend.explain_group is not None:
        report = backend.explain_group(result.bundle_dir, entries, cfg)
        log.info("group explanations and report written (%s)", report)
