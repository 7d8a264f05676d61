"""Participant level with a classical bundle: predictions and coefficient-based region importance.

The classical backend's apply function (:mod:`m2m_bids.backends`): a bundle holding ``classical-model.json``.
It refuses what the deep path refuses (preprocessing or grid that differ from the training data,
exit 65 naming each difference; training participants unless ``--allow-training-participants``),
and writes the same kinds of files under the same names:

- ``sub-<id>/sub-<id>[_ses-<s>]_desc-<arch>_predictions.tsv/.json``: a ``session`` row (features
  averaged over the session's runs, as training averaged a participant's runs) and one row per run;
  the session rows go into the dataset-level ``predictions.tsv`` under its file lock;
- an atlas table ``..._atlas-<atlas>_res-<r>_stat-importance_desc-<arch>_table.tsv/.json`` on the
  model's own atlas regions, and the same importance painted on the grid as a ``_statmap.nii.gz``;
- the figures and ``sub-<id>.html`` of the deep archs (prediction + the region table).

Importance of a region: the model's |coefficient| of each selected (standardised) feature, summed
onto regions: a regional mean-T1w feature counts for its region, a connectivity edge's value is
split half and half between its two regions. It is a property of the model (the same for every
participant); the table's ``contribution`` column is this participant's: the signed ``w_j z_j``
summed onto regions the same way, towards the positive class (two classes) or the predicted class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.classical.features import Parcellation, grid_affine, parcellation_from_card, run_features
from m2m_bids.classical.model import LinearModel, region_values
from m2m_bids.classical.registry import CARD_FILE
from m2m_bids.config import RunConfig
from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.interpret.application import apply_each, check_leakage, session_of
from m2m_bids.interpret.atlas_tables import parcellate, top_regions
from m2m_bids.interpret.bundle import CardBacked, entry_preproc, preproc_differences, refuse_mismatch
from m2m_bids.interpret.maps import relative_to_uniform, to_nifti
from m2m_bids.interpret.naming import Namer, res_label
from m2m_bids.interpret.predictions import write_tsv
from m2m_bids.model_inputs.windows import participant_of
from m2m_bids.preproc.availability import refuse_lacking
from m2m_bids.reports import figures as figs
from m2m_bids.reports.participant import MapView, SessionView, render_participant

log = logging.getLogger(__name__)

STAT = "importance"
SCALE_NOTE = ("relative to uniform: 1 = the mean importance over the voxels of the model's regions; "
              "the table's 'importance' column has the unscaled sum of |coefficients|")
CAVEATS = ("Region importance comes from the linear model's coefficients on standardised features: a "
           "regional mean-T1w feature counts for its region, a connectivity edge is split half and half "
           "between its two regions. It shows what the model weighs, not where disease is; the table file's "
           "'contribution' column is this participant's signed push towards {towards}.")


@dataclass(frozen=True)
class ClassicalBundle(CardBacked):
    """A loaded ``classical-model.json``."""

    path: Path
    card: dict[str, Any]
    sha256: str
    card_file = CARD_FILE

    @property
    def arch(self) -> str:
        return str(self.card["arch"])

    @property
    def model_id(self) -> str:
        """``<arch>@<first 12 hex of the SHA-256 of classical-model.json>``: names the exact coefficients."""
        return f"{self.arch}@{self.sha256[:12]}"

    @cached_property
    def model(self) -> LinearModel:
        return LinearModel.from_dict(self.card["model"], len(self.classes))

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.card["grid"]["shape"])

    @property
    def grid_affine(self) -> np.ndarray:
        return np.asarray(self.card["grid"]["affine"], float)


def load_classical(bundle_dir: Path) -> ClassicalBundle:
    """Read and check ``classical-model.json`` (exit 65 when it is broken or from an older version)."""
    path = Path(bundle_dir) / CARD_FILE
    raw = path.read_bytes()
    try:
        card = json.loads(raw)
    except json.JSONDecodeError as err:
        raise AppError(f"{CARD_FILE} is not valid JSON ({err})", ExitCode.DATA_ERROR, path=str(path),
                       hint="re-run the group level to rewrite the bundle") from err
    missing = [k for k in ("arch", "classes", "model", "features", "grid", "preproc", "splits") if k not in card]
    if missing:
        raise AppError(f"{CARD_FILE} lacks {missing}", ExitCode.DATA_ERROR, path=str(path),
                       hint="the bundle was written by an older version of m2m-bids; re-run the group level")
    bundle = ClassicalBundle(Path(bundle_dir), card, hashlib.sha256(raw).hexdigest())
    n_features = len(card["features"]["names"])
    if bundle.model.n_features != n_features:
        raise AppError(f"{CARD_FILE} has {bundle.model.n_features} scaler entries for {n_features} features",
                       ExitCode.DATA_ERROR, path=str(path), hint="the file was edited or truncated; re-run the group level")
    log.info("loaded classical model %s from %s", bundle.model_id, bundle_dir)
    return bundle


def check_run(bundle: ClassicalBundle, entry: Any, run_preproc: dict[str, Any]) -> None:
    """Refuse (exit 65) a run preprocessed differently from the training data, or on another grid."""
    diffs = preproc_differences(bundle.preproc, entry_preproc(entry, run_preproc))
    shape = tuple(int(s) for s in np.shape(entry.load("smri"))[:3])
    if shape != bundle.grid_shape:
        diffs.append(f"grid_shape: model={list(bundle.grid_shape)}, data={list(shape)}")
    elif not np.allclose(grid_affine(entry), bundle.grid_affine, atol=1e-3):
        diffs.append("grid affine: the data's voxel-to-MNI affine differs from the model's")
    refuse_mismatch(diffs, entry, CARD_FILE)


@dataclass(frozen=True)
class Context:
    """What every participant's application shares."""

    bundle: ClassicalBundle
    parc: Parcellation
    output_dir: Path
    template: str
    res: str
    top_k: int
    reports: bool
    writer: DerivativesWriter = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "writer", DerivativesWriter(self.output_dir))  # frozen: the documented way


def _prediction_row(ctx: Context, label: str, session: str | None, scope: str, entry: Any | None,
                    prob: np.ndarray, n_runs: int, in_training: bool) -> dict[str, Any]:
    classes = ctx.bundle.classes
    task = entry.meta.task if entry is not None else None
    run = entry.meta.run if entry is not None else None
    row = {"participant_id": f"sub-{label}", "session_id": f"ses-{session}" if session else "n/a", "scope": scope,
           "task": task or "n/a", "run": run if run is not None else "n/a", "n_runs": n_runs,
           "predicted_label": classes[int(prob.argmax())]}
    row.update({f"prob_{c}": float(prob[i]) for i, c in enumerate(classes)})
    row.update({"model_id": ctx.bundle.model_id, "in_training_set": in_training})
    return row


def _explained_class(bundle: ClassicalBundle, prob: np.ndarray) -> int:
    """The class a contribution pushes towards: the positive (last) class of two, else the predicted one."""
    model = bundle.model
    if len(model.fitted_classes) == 2:
        return model.fitted_classes[1]
    return int(prob.argmax()) if int(prob.argmax()) in model.fitted_classes else model.fitted_classes[0]


def region_table(ctx: Context, x: np.ndarray, class_index: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The atlas table of one session (deep-path columns + ``importance``, ``contribution``) and its map."""
    model, parc = ctx.bundle.model, ctx.parc
    importance = region_values(model.importance(), parc.n_regions)
    contribution = region_values(model.contributions(x, class_index), parc.n_regions)
    lookup = np.zeros(int(parc.labels.max()) + 1, np.float32)
    lookup[list(parc.indices)] = importance
    volume = lookup[parc.labels]
    volume = relative_to_uniform(volume, np.isin(parc.labels, parc.indices))
    labels = pd.DataFrame({"index": list(parc.indices), "name": list(parc.names)})
    table = parcellate(volume, parc.labels, labels, ctx.top_k)
    by_index = dict(zip(parc.indices, zip(importance, contribution)))
    table["importance"] = [by_index[int(i)][0] for i in table["index"]]
    table["contribution"] = [by_index[int(i)][1] for i in table["index"]]
    return table, volume


def write_explanation(ctx: Context, namer: Namer, x: np.ndarray, class_index: int, sources: list[str]) -> MapView:
    """Statmap NIfTI + sidecar, atlas table + sidecar and the figure of one session."""
    table, volume = region_table(ctx, x, class_index)
    desc, towards = ctx.bundle.arch, ctx.bundle.classes[class_index]
    nii = namer.path(None, "statmap", ".nii.gz", space=ctx.template, res=ctx.res, stat=STAT, desc=desc)
    img = to_nifti(volume, ctx.parc.affine, f"m2m {STAT} {desc}")
    ctx.writer.save_nifti(img, nii, {
        "Description": "region importance of the linear model (|coefficient| of its standardised features summed "
                       "onto atlas regions; a connectivity edge is split half and half between its two regions), "
                       "painted on every voxel of the region",
        "Scale": SCALE_NOTE, "Method": "coefficients", "ModelID": ctx.bundle.model_id, "Space": ctx.template,
        "Resolution": f"{ctx.res.replace('p', '.')} mm isotropic MNI grid of the model", "Atlas": ctx.parc.atlas,
        "Sources": sources})
    tsv = namer.path(None, "table", ".tsv", space=ctx.template, atlas=ctx.parc.atlas, res=ctx.res, stat=STAT, desc=desc)
    write_tsv(ctx.writer, tsv, table, {
        "Description": "importance of each atlas region to the linear model; rank 1 = most important. A regional "
                       "mean-T1w feature counts for its region; each connectivity edge's value is split half and "
                       "half between its two regions",
        "Atlas": ctx.parc.atlas, "TopK": ctx.top_k, "TopRegions": top_regions(table, ctx.top_k),
        "Scale": SCALE_NOTE, "ContributionTowards": towards, "ModelID": ctx.bundle.model_id,
        "Sources": [nii.name, *sources],
        "Columns": {"index": "atlas label value", "name": "region name", "n_voxels": "model-grid voxels in the region",
                    "mean": "importance relative to uniform (the statmap's value in the region)",
                    "max": "same as mean (the value is constant in a region)", "rank": "1 = highest importance",
                    "top": f"true for the {ctx.top_k} best-ranked regions",
                    "importance": "sum over the region's features of |coefficient| (edges: half)",
                    "contribution": f"sum over the region's features of coefficient x standardised value "
                                    f"(edges: half); > 0 pushes this participant towards {towards}"}})
    title = f"{STAT} · {desc}"
    fig_path = namer.figure("statmap", stat=STAT, desc=desc)
    ctx.writer.save_figure(figs.stat_map_figure(img, title), fig_path, dpi=figs.DPI)
    return MapView(title=title, figure=fig_path, table=table[table["top"]].copy(), nifti=nii, tsv=tsv)


def apply_session(ctx: Context, label: str, session: str | None, runs: list[Any], in_training: bool) -> SessionView:
    """Predictions (session row + run rows), the explanation and the figures of one session."""
    namer = Namer(ctx.writer, label, session)
    features = [run_features(entry, ctx.parc) for entry in runs]
    x = np.mean(features, axis=0)
    probs = ctx.bundle.model.proba(np.vstack([x, *features]))
    rows = [_prediction_row(ctx, label, session, "session", None, probs[0], len(runs), in_training)]
    rows += [_prediction_row(ctx, label, session, "run", e, p, 1, in_training) for e, p in zip(runs, probs[1:])]
    preds = pd.DataFrame(rows)
    path = namer.path(None, "predictions", ".tsv", desc=ctx.bundle.arch)
    classes = ctx.bundle.classes
    write_tsv(ctx.writer, path, preds, {
        "Description": "predicted class and class probabilities; the 'session' row applies the model to the mean "
                       "features of the session's runs and is the prediction to use",
        "ModelID": ctx.bundle.model_id, "Arch": ctx.bundle.arch, "Classes": classes,
        "Probabilities": "Platt-scaled linear SVC decision values" if ctx.bundle.model.link == "platt"
                         else "logistic regression probabilities",
        "PreprocessingParameters": ctx.bundle.preproc, "CacheKeys": [str(getattr(e, "key", "")) for e in runs],
        "InTrainingSet": in_training})
    sources = sorted({Path(str(getattr(e, "path", ""))).name for e in runs})
    towards = _explained_class(ctx.bundle, probs[0])
    view = write_explanation(ctx, namer, x, towards, sources)
    session_row = rows[0]
    prob = {c: float(session_row[f"prob_{c}"]) for c in classes}
    prob_fig = ctx.writer.save_figure(figs.probability_figure(prob, str(session_row["predicted_label"])),
                                      namer.figure("predictions", desc=ctx.bundle.arch), dpi=figs.DPI)
    return SessionView(session=session, prediction=session_row, probabilities=prob, probability_figure=prob_fig,
                       maps=[view], predictions_tsv=path, caveats=CAVEATS.format(towards=classes[towards]))


def apply_participant(ctx: Context, label: str, entries: list[Any], cfg: RunConfig) -> pd.DataFrame:
    """All outputs of one participant; returns its session-level prediction rows."""
    in_training = check_leakage(ctx.bundle, label, cfg.execution.allow_training_participants)
    run_preproc = cfg.preproc.model_dump(mode="json")
    for entry in entries:
        check_run(ctx.bundle, entry, run_preproc)
    by_session: dict[str | None, list[Any]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: (str(session_of(e)), str(e.meta.task), str(e.meta.run))):
        by_session[session_of(entry)].append(entry)
    views = [apply_session(ctx, label, ses, runs, in_training)
             for ses, runs in sorted(by_session.items(), key=lambda kv: str(kv[0]))]
    if ctx.reports:
        render_participant(ctx.output_dir, label, views, ctx.bundle.model_id, in_training)
    rows = pd.DataFrame([v.prediction for v in views])
    return rows.drop(columns=["scope", "task", "run"])


def apply_classical(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> dict[str, AppError]:
    """Apply a classical bundle to every participant of ``entries``; return the failures by participant.

    As the torch backend (:func:`m2m_bids.interpret.api.apply_model`): problems with the bundle raise, per-participant
    problems are returned so the runner reports them and goes on.
    """
    bundle = load_classical(bundle_dir)
    entries, refused = refuse_lacking(entries, ["fmri"], f"the connectome model {Path(bundle_dir).name}")
    if not entries:
        return refused
    parc = parcellation_from_card(bundle.card["features"], bundle.grid_shape, bundle.grid_affine)
    template = str(entries[0].meta.space or bundle.preproc.get("template") or cfg.preproc.template)
    ctx = Context(bundle=bundle, parc=parc, output_dir=cfg.execution.output_dir, template=template,
                  res=res_label(bundle.preproc.get("resolution_mm", cfg.preproc.resolution_mm)),
                  top_k=cfg.interpret.top_k, reports=cfg.interpret.reports)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        grouped[participant_of(entry)].append(entry)
    return {**refused, **apply_each(grouped, lambda label, runs: apply_participant(ctx, label, runs, cfg), cfg,
                                    bundle.classes, ("fmri", "smri"))}
