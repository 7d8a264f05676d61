"""Participant level with a model: ``apply_model(bundle_dir, entries, cfg)`` (called by the runner).

For each participant with cached tensors: check the bundle fits the data (preprocessing, grid) and
that the participant was not in the training set, run the model over every window, and write the
predictions, attention/saliency maps, atlas tables, brain states, figures and ``sub-<id>.html``.
The dataset-level ``predictions.tsv`` is updated under a file lock, so SLURM array tasks writing at
once never lose each other's rows. One participant's failure is returned, not raised. A classical
bundle (``classical-model.json``) is applied by :func:`m2m_bids.classical.apply.apply_classical`,
which reuses these checks and writers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.interpret.bundle import Bundle, TrainedOn, check_entry, load_bundle
from m2m_bids.interpret.inference import score_run
from m2m_bids.interpret.naming import res_label
from m2m_bids.interpret.participant import AtlasGrid, Context, apply_session
from m2m_bids.interpret.predictions import update_predictions
from m2m_bids.reports.participant import render_participant
from m2m_bids.runtime import resolve_device

log = logging.getLogger(__name__)

def participant_of(entry: Any) -> str:
    value = str(entry.meta.participant)
    return value[4:] if value.startswith("sub-") else value


def session_of(entry: Any) -> str | None:
    value = entry.meta.session
    if value in (None, "", "n/a"):
        return None
    value = str(value)
    return value[4:] if value.startswith("ses-") else value


def load_atlas_grid(spec: str, shape: tuple[int, int, int], affine: np.ndarray) -> AtlasGrid:
    """The atlas of ``--atlas`` (a bundled name, or ``NAME=path/to/..._dseg.nii.gz``) on the model grid."""
    import nibabel as nib

    from m2m_bids import atlases
    from m2m_bids.interpret.atlas_tables import atlas_on_grid

    reference = nib.Nifti1Image(np.zeros(shape, np.uint8), affine)
    if "=" in spec:
        name, path = spec.split("=", 1)
        dseg = Path(path)
        labels_tsv = dseg.with_name(dseg.name.replace(".nii.gz", ".tsv").replace(".nii", ".tsv"))
        atlas = atlases.load_atlas_file(dseg, labels_tsv)
        name = "".join(ch for ch in name if ch.isalnum()) or atlas.name
    else:
        atlas = atlases.load_atlas(spec, reference)
        name = atlas.name
    labels = atlas.labels.reset_index() if "index" not in atlas.labels.columns else atlas.labels
    labels = labels[["index", "name"]].astype({"index": int, "name": str})
    return AtlasGrid(name=str(name), labels=labels, grid=atlas_on_grid(atlas.image, shape, affine),
                     licence=str(getattr(atlas, "licence", "")), citation=str(getattr(atlas, "citation", "")))


def tabular_features(bundle: Bundle, bids_dir: Path, labels: list[str]) -> dict[str, np.ndarray | None]:
    """The card's tabular encoding of each participant's participants.tsv row (None without tabular),
    read and encoded as training did (:func:`~m2m_bids.model_inputs.tabular.feature_rows`)."""
    if "tabular" not in bundle.model.config.modalities:  # type: ignore[attr-defined]
        return {p: None for p in labels}
    from m2m_bids.bids.participants import read_participants
    from m2m_bids.model_inputs.tabular import TabularEncoder, feature_rows

    encoder = TabularEncoder.from_dict(bundle.card.get("tabular") or {})
    phenotype = read_participants(bids_dir)
    missing = [p for p in labels if p not in phenotype.index]
    if missing:
        log.warning("no participants.tsv row for %s: tabular features are imputed (marked missing)",
                    ", ".join(f"sub-{p}" for p in missing))
    return dict(feature_rows(encoder, phenotype, labels))


def check_leakage(bundle: TrainedOn, label: str, allow: bool) -> bool:
    """True if ``label`` trained the model; refuses (exit 65) unless ``allow``."""
    if label not in bundle.training_participants:
        return False
    if not allow:
        raise AppError(f"sub-{label} was in the training set of this model; its prediction would be optimistic "
                       "(data leakage)", ExitCode.DATA_ERROR, path=str(bundle.card_path),
                       hint="apply the model to participants it was not trained on, or pass "
                            "--allow-training-participants to do it anyway (outputs are then flagged)")
    log.warning("sub-%s was in the training set of this model: its outputs are flagged in_training_set", label)
    return True


def apply_participant(ctx: Context, label: str, entries: list[Any], tabular: np.ndarray | None, cfg: RunConfig,
                      device: torch.device) -> pd.DataFrame:
    """All outputs of one participant; returns its session-level prediction rows."""
    if check_leakage(ctx.bundle, label, cfg.execution.allow_training_participants):
        ctx.in_training.add(label)
    run_preproc = cfg.preproc.model_dump(mode="json")
    for entry in entries:
        check_entry(ctx.bundle, entry, run_preproc)
    by_session: dict[str | None, list[tuple[Any, Any]]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: (str(session_of(e)), str(e.meta.task), str(e.meta.run))):
        scores = score_run(ctx.bundle.model, entry, tabular=tabular, saliency=cfg.interpret.saliency, device=device)
        by_session[session_of(entry)].append((entry, scores))
    views = [apply_session(ctx, label, ses, runs) for ses, runs in sorted(by_session.items(), key=lambda kv: str(kv[0]))]
    if cfg.interpret.reports:
        render_participant(ctx.output_dir, label, views, ctx.bundle.model_id, label in ctx.in_training)
    rows = [pd.DataFrame([v.prediction]) for v in views]
    return pd.concat(rows, ignore_index=True).drop(columns=["scope", "task", "run"])


def build_context(bundle: Bundle, entries: list[Any], cfg: RunConfig) -> Context:
    """Atlas on the grid of the cached tensors, names and settings shared by all participants."""
    first = entries[0]
    affine = np.asarray(first.meta.affine, dtype=float)
    shape = tuple(int(s) for s in np.shape(first.load("smri" if "smri" in bundle.model.config.modalities else "fmri"))[:3])  # type: ignore[attr-defined]
    atlas = load_atlas_grid(cfg.interpret.atlas, shape, affine)  # type: ignore[arg-type]
    template = str(first.meta.space or bundle.preproc.get("template") or cfg.preproc.template)
    resolution = bundle.preproc.get("resolution_mm", cfg.preproc.resolution_mm)
    return Context(bundle=bundle, atlas=atlas, output_dir=cfg.execution.output_dir, template=template,
                   res=res_label(resolution), top_k=cfg.interpret.top_k, n_states=cfg.interpret.n_states)


def apply_model(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> dict[str, AppError]:
    """Apply the bundle to every participant of ``entries``; return the failures by participant label.

    Problems with the bundle itself (missing, corrupt) raise :class:`AppError`: they concern every
    participant. Per-participant problems (preprocessing mismatch, training participant, I/O) are
    returned so the runner can report them and go on.
    """
    if not entries:
        log.info("no cached sample to apply the model to")
        return {}
    from m2m_bids.classical import is_classical_bundle

    if is_classical_bundle(Path(bundle_dir)):  # scikit-learn baseline: no torch model, same outputs
        from m2m_bids.classical.apply import apply_classical

        return apply_classical(Path(bundle_dir), entries, cfg)
    device = resolve_device(cfg.execution.device)
    bundle = load_bundle(Path(bundle_dir), device)
    ctx = build_context(bundle, entries, cfg)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        grouped[participant_of(entry)].append(entry)
    features = tabular_features(bundle, cfg.execution.bids_dir, sorted(grouped))
    return apply_each(grouped, lambda label, runs: apply_participant(ctx, label, runs, features[label], cfg, device),
                      cfg, bundle.classes)


def apply_each(grouped: dict[str, list[Any]], apply_one: Callable[[str, list[Any]], pd.DataFrame],
               cfg: RunConfig, classes: list[str]) -> dict[str, AppError]:
    """Apply ``apply_one(label, entries)`` to every participant, keep going past per-participant
    failures (unless ``--stop-on-first-crash``), then update the dataset-level predictions table
    once and the .bidsignore. Shared by the torch and the classical bundles."""
    failures: dict[str, AppError] = {}
    rows = []
    for label in sorted(grouped):
        try:
            rows.append(apply_one(label, grouped[label]))
            log.info("sub-%s: predicted %s", label, ", ".join(rows[-1]["predicted_label"].astype(str)))
        except AppError as err:
            failures[label] = err
        except OSError as err:
            failures[label] = AppError(f"could not write the outputs of sub-{label}: {err}", ExitCode.IO_ERROR,
                                       path=str(getattr(err, "filename", "") or cfg.execution.output_dir))
        if failures.get(label) is not None and cfg.execution.stop_on_first_crash:
            break
    if rows:
        update_predictions(cfg.execution.output_dir, pd.concat(rows, ignore_index=True), classes)
    bidsignore(cfg)
    return failures


def bidsignore(cfg: RunConfig) -> None:
    """List the explanation outputs in ``.bidsignore`` (the derivatives writer owns the file)."""
    try:
        from m2m_bids.bids.derivatives import DerivativesWriter
    except ImportError:  # pragma: no cover - the writer is part of the package
        return
    writer = DerivativesWriter(cfg.execution.output_dir, bids_dir=cfg.execution.bids_dir, run_id=cfg.run_id)
    writer.update_bidsignore()
