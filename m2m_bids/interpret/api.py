"""Participant level with a model: ``apply_model(bundle_dir, entries, cfg)`` (called by the runner).

For each participant with cached tensors: check the bundle fits the data (preprocessing, grid) and
that the participant was not in the training set, run the model over every window, and write the
predictions, attention/saliency maps, atlas tables, brain states, figures and ``sub-<id>.html``.
The dataset-level ``predictions.tsv`` is updated under a file lock, so SLURM array tasks writing at
once never lose each other's rows. One participant's failure is returned, not raised. A classical
bundle is applied by :func:`m2m_bids.classical.apply.apply_classical` (the backend table,
:mod:`m2m_bids.backends`, picks one), which shares the steps of :mod:`m2m_bids.interpret.application`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from m2m_bids import atlases
from m2m_bids.bids.participants import read_participants
from m2m_bids.config import RunConfig
from m2m_bids.exitcodes import AppError
from m2m_bids.interpret.application import apply_each, check_leakage, session_of
from m2m_bids.interpret.atlas_tables import atlas_on_grid
from m2m_bids.interpret.bundle import Bundle, check_entry, load_bundle
from m2m_bids.interpret.inference import score_run
from m2m_bids.interpret.naming import res_label
from m2m_bids.interpret.participant import AtlasGrid, Context, apply_session
from m2m_bids.model_inputs.tabular import TabularEncoder, feature_rows
from m2m_bids.model_inputs.windows import participant_of
from m2m_bids.models.registry import input_maps, input_modalities
from m2m_bids.preproc.availability import BOLD_TENSORS, refuse_lacking
from m2m_bids.reports.participant import render_participant
from m2m_bids.runtime import resolve_device

log = logging.getLogger(__name__)


def load_atlas_grid(spec: str, shape: tuple[int, int, int], affine: np.ndarray) -> AtlasGrid:
    """The atlas of ``--atlas`` (a bundled name, or ``NAME=path/to/..._dseg.nii.gz``) on the model grid."""
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
    encoder = TabularEncoder.from_dict(bundle.card.get("tabular") or {})
    phenotype = read_participants(bids_dir)
    missing = [p for p in labels if p not in phenotype.index]
    if missing:
        log.warning("no participants.tsv row for %s: tabular features are imputed (marked missing)",
                    ", ".join(f"sub-{p}" for p in missing))
    return dict(feature_rows(encoder, phenotype, labels))


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
    device = resolve_device(cfg.execution.device)
    bundle = load_bundle(Path(bundle_dir), device)
    used = (*input_modalities(bundle.model), *input_maps(bundle.model))
    entries, refused = refuse_lacking(entries, [m for m in used if m in BOLD_TENSORS], f"the model {bundle.model_id}")
    if not entries:
        return refused
    ctx = build_context(bundle, entries, cfg)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        grouped[participant_of(entry)].append(entry)
    features = tabular_features(bundle, cfg.execution.bids_dir, sorted(grouped))
    return {**refused, **apply_each(grouped, lambda label, runs: apply_participant(ctx, label, runs, features[label],
                                                                                  cfg, device),
                                    cfg, bundle.classes, used)}
