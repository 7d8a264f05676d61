"""``m2m-synth OUT_DIR``: write a synthetic BIDS dataset from the command line.

Parsing and a one-screen summary only; the work is :func:`m2m_bids.synth.dataset.generate_dataset`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.synth.dataset import GROUND_TRUTH, generate_dataset
from m2m_bids.synth.spec import PRESETS, SynthSpec

app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


def _floats(text: Optional[str]) -> Optional[tuple[float, ...]]:
    """'1,1,2' -> (1.0, 1.0, 2.0)."""
    return None if text is None else tuple(float(v) for v in text.split(",") if v.strip())


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the BIDS dataset into.")],
    preset: Annotated[str, typer.Option(help=f"Size preset: {', '.join(PRESETS)}.")] = "tiny",
    n_participants: Annotated[Optional[int], typer.Option(
        "--n-participants", "-n", min=1, help="Participants (default: 8).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated subset of CN,MCI,AD.")] = None,
    proportions: Annotated[Optional[str], typer.Option(help="Comma-separated weights, one per class.")] = None,
    effect_size: Annotated[Optional[float], typer.Option(min=0.0, help="0 = no planted signal.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (datasets are deterministic under it).")] = 0,
    sessions: Annotated[int, typer.Option(min=1, help="Sessions per participant.")] = 1,
    task: Annotated[str, typer.Option(help="Task label of the BOLD runs.")] = "rest",
    n_volumes: Annotated[Optional[int], typer.Option(
        "--n-volumes", min=4, help="BOLD volumes (default: from the preset).")] = None,
    fmriprep_derivatives: Annotated[bool, typer.Option(
        "--fmriprep-derivatives", help="Also write fMRIPrep-like MNI derivatives.")] = False,
    pet: Annotated[bool, typer.Option(
        "--pet", help="Also write a static FDG PET per session (hypometabolism planted in the AD regions).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT_DIR.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Write a synthetic T1w + resting BOLD (+ FDG PET) + clinical-table BIDS dataset with planted effects."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        spec = SynthSpec.preset(
            preset, n_participants=n_participants,
            classes=tuple(c.strip() for c in classes.split(",")) if classes else None,
            proportions=_floats(proportions), effect_size=effect_size, seed=seed, sessions=sessions,
            task=task, n_volumes=n_volumes, fmriprep_derivatives=fmriprep_derivatives, pet=pet)
        root = generate_dataset(out_dir, spec, force=force)
    except AppError as err:
        typer.echo(f"m2m-synth: {err.render()}", err=True)
        raise typer.Exit(int(err.code)) from None
    truth = json.loads((root / GROUND_TRUTH).read_text())
    counts = ", ".join(f"{c}={truth['class_counts'][c]}" for c in spec.classes)
    typer.echo(f"wrote {root} in {time.perf_counter() - started:.1f} s")
    typer.echo(f"  preset {spec.preset_name}: {spec.n_participants} participants ({counts}), "
               f"{spec.sessions} session(s), task-{spec.task}, {spec.n_volumes} volumes, TR {spec.repetition_time} s")
    typer.echo(f"  effect size {spec.effect_size}; seed {spec.seed}; ground truth: {root / GROUND_TRUTH}")
    if spec.pet:
        typer.echo(f"  FDG PET: {spec.pet_frames} frames x {spec.pet_frame_duration:g} s per session "
                   "(pet/*_trc-FDG_pet)")
    if spec.fmriprep_derivatives:
        typer.echo(f"  fMRIPrep-like derivatives: {root / 'derivatives' / 'fmriprep'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status instead of raising SystemExit."""
    try:
        app(args=list(argv) if argv is not None else sys.argv[1:], prog_name="m2m-synth",
            standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else int(ExitCode.USAGE))
        if argv is None:
            raise
        return code
    return 0
