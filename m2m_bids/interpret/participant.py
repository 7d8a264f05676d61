"""Apply a loaded bundle to one participant: predictions, maps, atlas tables, brain states, figures.

Called by :func:`m2m_bids.interpret.api.apply_model` once per participant (all of its cached runs).
Everything is aggregated per session (the unit a prediction is about); fMRI maps are per task, the
temporal scores and brain states per run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.interpret.atlas_tables import parcellate, top_regions
from m2m_bids.interpret.brainmask import brain_mask
from m2m_bids.interpret.brain_states import brain_states, states_table, stitch_frame_scores
from m2m_bids.interpret.bundle import Bundle
from m2m_bids.interpret.inference import RunScores
from m2m_bids.interpret.maps import relative_to_uniform, saliency_fwhm, smooth, to_nifti, upsample_tokens, voxel_size
from m2m_bids.interpret.naming import Namer
from m2m_bids.interpret.predictions import write_tsv
from m2m_bids.reports import figures as figs
from m2m_bids.reports.participant import MapView, SessionView, StateView

log = logging.getLogger(__name__)

#: What each stored modality is called in file names (``desc-``) and datatype folders.
MODALITY_DESC = {"smri": ("T1w", "anat"), "fmri": ("bold", "func"), "pet": ("pet", "pet")}
SCALE_NOTE = "relative to uniform: 1 = the score of every voxel if the model weighed all voxels equally"


@dataclass
class AtlasGrid:
    """An atlas resampled onto the model grid, with what its sidecars must say about it."""

    name: str
    labels: pd.DataFrame  # index, name
    grid: np.ndarray  # (X, Y, Z) int labels
    licence: str = ""
    citation: str = ""


@dataclass
class Context:
    """What every participant's application shares."""

    bundle: Bundle
    atlas: AtlasGrid
    output_dir: Path
    template: str
    res: str
    top_k: int
    n_states: int
    in_training: set[str] = field(default_factory=set)
    writer: DerivativesWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = DerivativesWriter(self.output_dir)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def prediction_rows(label: str, session: str | None, runs: list[tuple[Any, RunScores]], ctx: Context) -> pd.DataFrame:
    """Session row (mean logits over every window of every run: the prediction to use) + one row per run."""
    classes = ctx.bundle.classes
    rows = []

    def row(scope: str, task: Any, run: Any, logits: np.ndarray, n_windows: int) -> dict[str, Any]:
        prob = softmax(logits)
        out = {"participant_id": f"sub-{label}", "session_id": f"ses-{session}" if session else "n/a",
               "scope": scope, "task": task or "n/a", "run": run if run is not None else "n/a",
               "n_windows": n_windows, "predicted_label": classes[int(prob.argmax())]}
        out.update({f"prob_{c}": float(prob[i]) for i, c in enumerate(classes)})
        out.update({"model_id": ctx.bundle.model_id, "in_training_set": label in ctx.in_training})
        return out

    all_windows = np.concatenate([s.window_logits for _, s in runs])
    rows.append(row("session", None, None, all_windows.mean(0), len(all_windows)))
    for entry, scores in runs:
        rows.append(row("run", entry.meta.task, entry.meta.run, scores.logits, scores.n_windows))
    return pd.DataFrame(rows)


def _weighted_mean(items: list[tuple[np.ndarray, int]]) -> np.ndarray:
    total = sum(w for _, w in items)
    return sum(a * w for a, w in items) / max(total, 1)


#: What each ``stat-`` map is (its sidecar's Description); see docs/interpreting.md.
METHOD_DESCRIPTIONS = {
    "attention": "raw spatial co-attention of the fusion latents over this modality's tokens (the same for every "
                 "class: where the model reads, not what favours its prediction), upsampled from the token grid",
    "gradrollout": "class-discriminative attention: gradient-weighted attention rollout (Chefer et al. 2021) of the "
                   "predicted class from the classifier's readout tokens through the Eq. 2 residual and the latent "
                   "queries, upsampled from the token grid",
    "saliency": "|gradient| of the predicted class logit w.r.t. the input, smoothed with a Gaussian of FWHM "
                "max(6 mm, 2 voxels)",
}


def _map_sidecar(ctx: Context, method: str, modality: str, sources: list[str]) -> dict[str, Any]:
    return {"Description": f"{METHOD_DESCRIPTIONS[method]} ({MODALITY_DESC[modality][0]})", "Scale": SCALE_NOTE,
            "Resolution": f"{ctx.res.replace('p', '.')} mm isotropic MNI grid of the model", "Method": method,
            "ModelID": ctx.bundle.model_id, "Space": ctx.template, "Sources": sources,
            "Mask": "zero outside the brain mask (T1w or run brain mask of the cache entry, else the template's); "
                    "scale and atlas table computed inside it"}


def write_map(ctx: Context, namer: Namer, volume: np.ndarray, affine: np.ndarray, method: str, modality: str,
              task: str | None, sources: list[str], mask: np.ndarray,
              extra: dict[str, Any] | None = None) -> MapView:
    """NIfTI + sidecar, atlas table + sidecar, and the figure of one map (regions scored inside ``mask``)."""
    desc, datatype = MODALITY_DESC[modality]
    ents = {"task": task, "space": ctx.template, "res": ctx.res, "stat": method, "desc": desc}
    nii = namer.path(datatype, "statmap", ".nii.gz", **ents)
    img = to_nifti(volume, affine, f"m2m {method} {desc}")
    ctx.writer.save_nifti(img, nii, {**_map_sidecar(ctx, method, modality, sources), **(extra or {})})
    table = parcellate(volume, np.where(mask, ctx.atlas.grid, 0), ctx.atlas.labels, ctx.top_k)
    tsv = namer.path(datatype, "table", ".tsv", task=task, space=ctx.template, atlas=ctx.atlas.name,
                     res=ctx.res, stat=method, desc=desc)
    write_tsv(ctx.writer, tsv, table, {
        "Description": f"mean {method} score per atlas region ({desc}); rank 1 = highest mean",
        "Atlas": ctx.atlas.name, "AtlasLicense": ctx.atlas.licence, "AtlasCitation": ctx.atlas.citation,
        "Scale": SCALE_NOTE, "TopK": ctx.top_k, "TopRegions": top_regions(table, ctx.top_k),
        "ModelID": ctx.bundle.model_id, "Sources": [nii.name],
        "Columns": {"index": "atlas label value", "name": "region name",
                    "n_voxels": "model-grid voxels of the region inside the brain mask",
                    "mean": "mean score in the region", "max": "highest voxel score", "rank": "1 = highest mean",
                    "top": f"true for the {ctx.top_k} best-ranked regions"}})
    title = f"{method} · {desc}" + (f" · task-{task}" if task else "")
    fig_path = namer.figure("statmap", task=task, stat=method, desc=desc)
    ctx.writer.save_figure(figs.stat_map_figure(img, title), fig_path, dpi=figs.DPI)
    return MapView(title=title, figure=fig_path, table=table[table["top"]].copy(), nifti=nii, tsv=tsv)


def session_maps(ctx: Context, namer: Namer, runs: list[tuple[Any, RunScores]]) -> list[MapView]:
    """Attention, class-discriminative attention and saliency maps, per modality (fMRI per task), in the brain."""
    affine = np.asarray(runs[0][0].meta.affine, dtype=float)
    shape = ctx.atlas.grid.shape
    views = []
    groups: dict[tuple[str, str | None], list[tuple[Any, RunScores]]] = defaultdict(list)
    for entry, scores in runs:
        for modality in MODALITY_DESC:
            if modality in scores.spatial_attention or modality in scores.saliency:
                groups[(modality, entry.meta.task if modality == "fmri" else None)].append((entry, scores))
    for (modality, task), members in sorted(groups.items(), key=lambda kv: (kv[0][0] != "smri", str(kv[0][1]))):
        sources = sorted({Path(str(getattr(e, "path", ""))).name for e, _ in members})
        mask = brain_mask(members[0][0], modality, shape, affine)

        def emit(volume: np.ndarray, method: str, extra: dict[str, Any] | None = None) -> None:
            vol = relative_to_uniform(np.where(mask, volume, 0.0), mask)
            views.append(write_map(ctx, namer, vol, affine, method, modality, task, sources, mask, extra))

        if all(modality in s.spatial_attention for _, s in members):
            tokens = _weighted_mean([(s.spatial_attention[modality], s.n_windows) for _, s in members])
            emit(upsample_tokens(tokens, shape), "attention")
        if all(modality in s.rollout for _, s in members):
            tokens = _weighted_mean([(s.rollout[modality], 1) for _, s in members])
            routed = float(np.mean([s.rollout_routed[modality] for _, s in members]))
            emit(upsample_tokens(tokens, shape), "gradrollout", {
                "RoutedThroughCoattention": round(routed, 4),
                "RoutedThroughCoattentionDescription": "share of the map that reached the tokens through the latent "
                "queries' co-attention; the rest came through the Eq. 2 residual (the token's own readout)"})
        if all(modality in s.saliency for _, s in members):
            raw = _weighted_mean([(s.saliency[modality], 1) for _, s in members])
            emit(smooth(raw, saliency_fwhm(voxel_size(affine)), voxel_size(affine)), "saliency")
    return views


def frame_scores(scores: RunScores) -> tuple[np.ndarray, str] | None:
    """Per-frame temporal score of a run and its source: co-attention, else fMRI saliency over time."""
    if scores.temporal_attention:
        return stitch_frame_scores(scores.n_frames, scores.starts, scores.temporal_attention), "attention"
    if scores.saliency_temporal:
        starts = [s for s, _ in scores.saliency_temporal]
        norm = [v / v.sum() if v.sum() > 0 else np.full_like(v, 1 / len(v)) for _, v in scores.saliency_temporal]
        return stitch_frame_scores(scores.n_frames, starts, norm), "saliency"
    return None


def run_states(ctx: Context, namer: Namer, entry: Any, scores: RunScores) -> StateView | None:
    """Temporal scores TSV, brain-state table, connectivity matrices and figures of one run."""
    found = frame_scores(scores)
    if found is None:
        return None
    per_frame, source = found
    task, run = entry.meta.task, entry.meta.run
    run = None if run is None else str(run)
    tr = entry.meta.repetition_time
    tr = float(tr) if tr else None
    frames = pd.DataFrame({"frame": np.arange(scores.n_frames),
                           "onset": np.arange(scores.n_frames) * tr if tr else np.nan, "score": per_frame})
    ts = namer.path("func", "timeseries", ".tsv", task=task, run=run, stat=source, desc="temporal")
    write_tsv(ctx.writer, ts, frames, {
        "Description": f"per-frame temporal {source} score; 1 = the average of the model window it fell in",
        "RepetitionTime": tr, "WindowStarts": scores.starts, "WindowFrames": int(ctx.bundle.model.config.frames),
        "Source": source, "ModelID": ctx.bundle.model_id})
    bold = np.asarray(entry.load("fmri"), dtype=np.float32)
    states = brain_states(per_frame, bold, ctx.atlas.grid, ctx.atlas.labels, n_states=ctx.n_states,
                          segment_frames=int(ctx.bundle.model.config.frames))
    table = states_table(states, tr)
    st = namer.path("func", "table", ".tsv", task=task, run=run, space=ctx.template, atlas=ctx.atlas.name, stat=source,
                    desc="brainstates")
    write_tsv(ctx.writer, st, table, {
        "Description": "top temporal-score moments (brain states) and the frames their connectivity uses",
        "Atlas": ctx.atlas.name, "AtlasLicense": ctx.atlas.licence, "ModelID": ctx.bundle.model_id})
    figures = []
    for s in states:
        rel = namer.path("func", "relmat", ".tsv", task=task, run=run, space=ctx.template, atlas=ctx.atlas.name,
                         stat="pearsoncorrelation", desc=f"state{s.state}")
        ctx.writer.save_tsv(s.connectivity, rel, float_format="%.4f", index=True, index_label="region")
        title = f"state {s.state}: frames {s.start_frame}-{s.stop_frame - 1} (peak {s.peak_frame})"
        fig = namer.figure("relmat", task=task, run=run, desc=f"state{s.state}")
        saved = ctx.writer.save_figure(figs.connectivity_figure(s.connectivity, title), fig, dpi=figs.DPI)
        figures.append((title, saved))
    tfig = namer.figure("timeseries", task=task, run=run, desc="temporal")
    temporal = figs.temporal_figure(per_frame, tr, [s.peak_frame for s in states], f"temporal {source}")
    ctx.writer.save_figure(temporal, tfig, dpi=figs.DPI)
    label = f"task-{task}" + (f" run-{run}" if run else "")
    return StateView(title=label, source=source, temporal_figure=tfig, table=table, connectivity=figures)


def apply_session(ctx: Context, label: str, session: str | None, runs: list[tuple[Any, RunScores]]) -> SessionView:
    """Every output of one session; returns what the HTML report shows."""
    namer = Namer(ctx.writer, label, session)
    preds = prediction_rows(label, session, runs, ctx)
    path = namer.path(None, "predictions", ".tsv", desc=ctx.bundle.arch)
    classes = ctx.bundle.classes
    tab = [s.saliency_tabular for _, s in runs if s.saliency_tabular is not None]
    names = (ctx.bundle.card.get("tabular") or {}).get("feature_names") or []
    write_tsv(ctx.writer, path, preds, {
        "Description": "predicted class and class probabilities; the 'session' row averages the logits of "
                       "every window of every run and is the prediction to use",
        "ModelID": ctx.bundle.model_id, "Arch": ctx.bundle.arch, "Classes": classes,
        "PreprocessingParameters": ctx.bundle.preproc, "CacheKeys": [str(getattr(e, "key", "")) for e, _ in runs],
        "InTrainingSet": label in ctx.in_training,
        "TabularSaliency": dict(zip(names, np.mean(tab, axis=0).round(6).tolist())) if tab and names else None})
    session_row = preds.iloc[0].to_dict()
    probs = {c: float(session_row[f"prob_{c}"]) for c in classes}
    prob_fig = ctx.writer.save_figure(figs.probability_figure(probs, str(session_row["predicted_label"])),
                                      namer.figure("predictions", desc=ctx.bundle.arch), dpi=figs.DPI)
    maps = session_maps(ctx, namer, runs)
    states = [v for e, s in runs if (v := run_states(ctx, namer, e, s)) is not None]
    return SessionView(session=session, prediction=session_row, probabilities=probs, probability_figure=prob_fig,
                       maps=maps, states=states, predictions_tsv=path)
