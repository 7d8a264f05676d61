"""The BIDS-App command line: ``m2m BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

Parsing only. Options are turned into a nested dict of what the user actually passed, merged over
the preset and config file by :func:`m2m_bids.preflight.build_config`, and the resulting
:class:`~m2m_bids.config.RunConfig` goes to :func:`m2m_bids.runner.run`, which returns the exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from m2m_bids import __version__
from m2m_bids.cli.argv import (
    canonical_flags,
    expand_multi_value_flags,
    parse_mem_gb,
    parse_name_path,
    read_label_values,
    split_values,
)
from m2m_bids.config import AnalysisLevel, Preset
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preflight import build_config
from m2m_bids.textinput import read_text_input

P_BIDS = "BIDS selection"
P_PERF = "Performance and resources"
P_PRE = "Preprocessing"
P_TRAIN = "Model and training (group level)"
P_APPLY = "Applying a model (participant level)"
P_RUN = "Run control"

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"m2m-bids {__version__}")
        raise typer.Exit(0)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Put ``value`` at ``section.key`` unless it is ``None`` (= option not given)."""
    if value is None or value == [] or value == {}:
        return
    section, key = dotted.split(".")
    tree.setdefault(section, {})[key] = value


def _bids_filters(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    text = read_text_input(path, "BIDS filter file", option="--bids-filter-file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AppError(f"cannot read the BIDS filter file: {err}", ExitCode.USAGE, path=str(path),
                       hint='it must be JSON like {"bold": {"task": "rest"}, "t1w": {"session": "01"}}') from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise AppError("the BIDS filter file must map query names (t1w, bold) to entity filters",
                       ExitCode.USAGE, path=str(path), hint='e.g. {"bold": {"task": "rest"}}')
    return data


@app.command(no_args_is_help=True)
def run_app(  # noqa: PLR0913 - one parameter per documented option is the point of a CLI
    bids_dir: Annotated[Path, typer.Argument(help="Root of the BIDS dataset (read-only).", show_default=False, metavar="BIDS_DIR")],
    output_dir: Annotated[Path, typer.Argument(help="Where derivatives are written.", show_default=False, metavar="OUTPUT_DIR")],
    analysis_level: Annotated[str, typer.Argument(
        help="[b]participant[/b] (map: preprocess, cache, apply) or [b]group[/b] (reduce: train).",
        show_default=False, metavar="ANALYSIS_LEVEL")],
    participant_label: Annotated[Optional[list[str]], typer.Option(
        "--participant-label", rich_help_panel=P_BIDS,
        help="Labels to process, with or without 'sub-', space-separated or repeated, or a file of labels.", metavar="LABEL...")] = None,
    exclude_participant_label: Annotated[Optional[list[str]], typer.Option(
        "--exclude-participant-label", rich_help_panel=P_BIDS,
        help="Labels to leave out (same forms).", metavar="LABEL...")] = None,
    session_label: Annotated[Optional[list[str]], typer.Option(
        "--session-label", rich_help_panel=P_BIDS,
        help="Sessions to use, with or without 'ses-'.", metavar="SES...")] = None,
    task: Annotated[Optional[list[str]], typer.Option(
        "-t", "--task", rich_help_panel=P_BIDS, help="BOLD task(s) to use (default: all).", metavar="TASK...")] = None,
    bids_filter_file: Annotated[Optional[Path], typer.Option(
        "--bids-filter-file", rich_help_panel=P_BIDS,
        help='JSON of PyBIDS filters per query, e.g. {"bold": {"task": "rest"}, "t1w": {"acquisition": null}}.', metavar="FILE")] = None,
    derivatives: Annotated[Optional[list[str]], typer.Option(
        "-d", "--derivatives", rich_help_panel=P_BIDS,
        help="Precomputed derivatives to reuse, e.g. fmriprep=/data/fmriprep.", metavar="NAME=PATH")] = None,
    skip_bids_validation: Annotated[Optional[bool], typer.Option(
        "--skip-bids-validation",
        rich_help_panel=P_BIDS, help="Do not run bids-validator-deno on the input.")] = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        "-w", "--work-dir", rich_help_panel=P_PERF,
        help="Intermediate files, nipype cache and (by default) the tensor cache (default: OUTPUT_DIR/work).", metavar="DIR")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", rich_help_panel=P_PERF, help="Tensor cache location (put it on shared storage on a cluster).", metavar="DIR")] = None,
    nprocs: Annotated[Optional[int], typer.Option(
        "--nprocs", min=1, rich_help_panel=P_PERF,
        help="Processes for participant-level parallelism (default: all CPUs).", metavar="N")] = None,
    omp_nthreads: Annotated[Optional[int], typer.Option(
        "--omp-nthreads", min=1, rich_help_panel=P_PERF,
        help="Threads per process (ANTs/ITK, torch) (default: min(nprocs, 8)).", metavar="N")] = None,
    mem: Annotated[Optional[str], typer.Option(
        "--mem", rich_help_panel=P_PERF,
        help="Memory budget for scheduling, e.g. 16G or 16000MB.", metavar="SIZE")] = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", rich_help_panel=P_PERF, help="auto, cpu, cuda or cuda:N (default: auto).", metavar="DEVICE")] = None,
    fwhm: Annotated[Optional[float], typer.Option(
        "--fwhm", min=0, rich_help_panel=P_PRE, help="Smoothing kernel FWHM in mm (default: 6).", metavar="MM")] = None,
    registration: Annotated[Optional[str], typer.Option(
        "--registration", rich_help_panel=P_PRE, help="T1w -> MNI transform: rigid, affine or syn (default: syn).", metavar="TYPE")] = None,
    dummy_scans: Annotated[Optional[int], typer.Option(
        "--dummy-scans", min=0, rich_help_panel=P_PRE, help="Initial BOLD volumes to drop (default: 0).", metavar="N")] = None,
    slice_time_ref: Annotated[Optional[float], typer.Option(
        "--slice-time-ref", min=0, max=1, rich_help_panel=P_PRE,
        help="Slice-timing reference as a fraction of TR (default: 0.5).", metavar="FRAC")] = None,
    save_preproc: Annotated[Optional[bool], typer.Option(
        "--save-preproc", rich_help_panel=P_PRE, help="Also write preprocessed T1w/BOLD NIfTIs and QC figures.")] = None,
    qc_override: Annotated[Optional[bool], typer.Option(
        "--qc-override", rich_help_panel=P_PRE,
        help="Use participants that fail registration/coverage QC (by default they are refused, exit 65).")] = None,
    arch: Annotated[Optional[str], typer.Option(
        "--arch", rich_help_panel=P_TRAIN, help="Model architecture (default: m2m).", metavar="ARCH")] = None,
    modalities: Annotated[Optional[list[str]], typer.Option(
        "--modalities", rich_help_panel=P_TRAIN, help="Any of fmri, smri, tabular (default: all three).", metavar="MOD...")] = None,
    label_column: Annotated[Optional[str], typer.Option(
        "--label-column", rich_help_panel=P_TRAIN, help="participants.tsv column holding the class (default: diagnosis).", metavar="COLUMN")] = None,
    classes: Annotated[Optional[list[str]], typer.Option(
        "--classes", rich_help_panel=P_TRAIN, help="Classes to use, in order, e.g. CN,AD (default: CN,AD).", metavar="CLASS,...")] = None,
    label_rule: Annotated[Optional[str], typer.Option(
        "--label-rule", rich_help_panel=P_TRAIN, help="Derived binary label, e.g. 'ttau / abeta42 > 0.24'.", metavar="EXPR")] = None,
    tabular_columns: Annotated[Optional[list[str]], typer.Option(
        "--tabular-columns", rich_help_panel=P_TRAIN, help="participants.tsv columns fed to the model.", metavar="COLUMN...")] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", min=2, rich_help_panel=P_TRAIN, help="CV folds (default: 5).", metavar="K")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, rich_help_panel=P_TRAIN, help="Training epochs (default: 100).", metavar="N")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, rich_help_panel=P_TRAIN, help="Participants per batch (default: 8).", metavar="N")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0, rich_help_panel=P_TRAIN, help="Peak learning rate (default: 1e-3).", metavar="LR")] = None,
    align_weight: Annotated[Optional[float], typer.Option(
        "--align-weight", min=0, rich_help_panel=P_TRAIN, metavar="W",
        help="Weight of the M2M alignment loss (default: 0.1, reached by a linear ramp over the first half "
             "of the epochs; train.align_ramp).")] = None,
    window_frames: Annotated[Optional[int], typer.Option(
        "--window-frames", min=1, rich_help_panel=P_TRAIN, help="fMRI frames per sample (default: 20).", metavar="N")] = None,
    augment: Annotated[Optional[bool], typer.Option(
        "--augment", rich_help_panel=P_TRAIN, help="Random affine, intensity, noise and temporal-shift augmentation.")] = None,
    resume: Annotated[Optional[bool], typer.Option(
        "--resume", rich_help_panel=P_TRAIN, help="Continue an interrupted training run from its checkpoints.")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", rich_help_panel=P_APPLY,
        help="Model bundle to apply (default: OUTPUT_DIR/models/model-<arch> when present).", metavar="DIR")] = None,
    allow_training_participants: Annotated[Optional[bool], typer.Option(
        "--allow-training-participants", rich_help_panel=P_APPLY,
        help="Apply to participants the model was trained on (data leakage) without refusing.")] = None,
    atlas: Annotated[Optional[str], typer.Option(
        "--atlas", rich_help_panel=P_APPLY, help="Atlas for region tables: a bundled name or NAME=dseg.nii.gz (default: aal).", metavar="ATLAS")] = None,
    config_file: Annotated[Optional[Path], typer.Option(
        "--config-file", rich_help_panel=P_RUN,
        help="TOML or YAML with any of the settings (command-line flags override it).", metavar="FILE")] = None,
    preset: Annotated[Optional[Preset], typer.Option(
        "--preset", rich_help_panel=P_RUN, help="Named defaults: default, paper, fast, tiny.", metavar="NAME")] = None,
    random_seed: Annotated[Optional[int], typer.Option(
        "--random-seed", rich_help_panel=P_RUN, help="Seeds python, numpy, torch and ANTs (default: 0).", metavar="SEED")] = None,
    stop_on_first_crash: Annotated[Optional[bool], typer.Option(
        "--stop-on-first-crash", rich_help_panel=P_RUN, help="Stop at the first participant that fails.")] = None,
    dry_run: Annotated[Optional[bool], typer.Option(
        "--dry-run", rich_help_panel=P_RUN,
        help="Validate the input, select participants and print what would run; process nothing.")] = None,
    verbose: Annotated[int, typer.Option(
        "-v", "--verbose", count=True, rich_help_panel=P_RUN, help="More log output (repeat for more).", metavar="", show_default=False)] = 0,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version_callback, is_eager=True, rich_help_panel=P_RUN, help="Print the version and exit.")] = None,
) -> None:
    """Run m2m-bids on BIDS_DIR, writing BIDS-Derivatives to OUTPUT_DIR.

    [b]participant[/b]: validate, preprocess (MNI 3 mm, 6 mm FWHM), cache tensors and, with a model, predict and explain. [b]group[/b]: train and cross-validate a model on all selected participants (missing preprocessing runs first).

    Exit codes (BIDS-Apps execution spec): 16 invalid BIDS, 17 unknown level, 18 selection matched nothing, 64 usage, 65 data error, 66 missing input, 73 cannot create output, 74 I/O error, 75 retry (e.g. out of memory).

    Also accepted: underscore spellings (--participant_label, --work_dir, ...) and fMRIPrep's aliases (--session-id, --task-id, --nthreads, --n-cpus, --mem-gb, --mem-mb, --skip-bids-validator, --config, --seed).
    """
    if analysis_level not in {lvl.value for lvl in AnalysisLevel}:
        raise AppError(f"unknown analysis level {analysis_level!r}", ExitCode.UNKNOWN_LEVEL,
                       hint="use 'participant' (preprocess/apply) or 'group' (train)")
    if not bids_dir.is_dir():
        raise AppError("the BIDS directory does not exist", ExitCode.NO_INPUT, path=str(bids_dir),
                       hint="check the path (inside a container, check the -v/-B bind mount)")
    values: dict[str, Any] = {"execution": {
        "bids_dir": str(bids_dir), "output_dir": str(output_dir), "analysis_level": analysis_level}}
    for dotted, value in {
        "execution.participant_label": read_label_values(participant_label),
        "execution.exclude_participant_label": read_label_values(exclude_participant_label,
                                                                   "--exclude-participant-label"),
        "execution.session_label": split_values(session_label),
        "execution.task": split_values(task),
        "execution.bids_filters": _bids_filters(bids_filter_file),
        "execution.derivatives": {k: str(v) for k, v in parse_name_path(derivatives).items()},
        "execution.skip_bids_validation": skip_bids_validation,
        "execution.work_dir": str(work_dir) if work_dir else None,
        "execution.cache_dir": str(cache_dir) if cache_dir else None,
        "execution.nprocs": nprocs,
        "execution.omp_nthreads": omp_nthreads,
        "execution.mem_gb": parse_mem_gb(mem),
        "execution.device": device,
        "execution.random_seed": random_seed,
        "execution.stop_on_first_crash": stop_on_first_crash,
        "execution.dry_run": dry_run,
        "execution.save_preproc": save_preproc,
        "execution.qc_override": qc_override,
        "execution.model": str(model) if model else None,
        "execution.allow_training_participants": allow_training_participants,
        "execution.verbosity": verbose or None,
        "preproc.fwhm_mm": fwhm,
        "preproc.registration": registration,
        "preproc.dummy_scans": dummy_scans,
        "preproc.slice_time_ref": slice_time_ref,
        "model.arch": arch,
        "model.modalities": split_values(modalities),
        "model.window_frames": window_frames,
        "train.label_column": label_column,
        "train.classes": split_values(classes),
        "train.label_rule": label_rule,
        "train.tabular_columns": split_values(tabular_columns),
        "train.folds": folds,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.align_weight": align_weight,
        "train.augment": augment,
        "train.resume": resume,
        "interpret.atlas": atlas,
    }.items():
        _set(values, dotted, value)
    cfg = build_config(values, config_file=config_file, preset=preset)

    from m2m_bids.runner import run  # imported late: `m2m --help` stays fast

    raise typer.Exit(int(run(cfg)))


def _hide_flag_types(command: Any) -> None:
    """Plain flags (``--dry-run``, ``--help``) take no value: show no ``<bool>`` type after them."""
    ctx = command.context_class(command, help_option_names=["-h", "--help"])
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: map every failure to a BIDS-Apps exit code."""
    args = expand_multi_value_flags(canonical_flags(list(sys.argv[1:] if argv is None else argv)))
    command = typer.main.get_command(app)
    _hide_flag_types(command)
    try:
        code = command.main(args=args, prog_name="m2m", standalone_mode=False)
    except typer.Exit as done:
        code = done.exit_code
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        code = ExitCode.FAILURE
    except typer.TyperException as err:  # click's usage errors (typer vendors click)
        err.show()  # type: ignore[attr-defined]
        code = ExitCode.USAGE
    except AppError as err:
        typer.echo(f"m2m: error: {err.render()}", err=True)
        code = err.code
    sys.exit(int(code or 0))
