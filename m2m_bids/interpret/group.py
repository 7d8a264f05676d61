"""Group-level explanations after training: mean maps per class, top regions per class (Fig. 3), t-SNE (Fig. 5).

``write_group_interpretation(bundle_dir, entries, cfg)`` runs the final model over every cached
sample, averages the relative-to-uniform attention, class-discriminative attention (``gradrollout``)
and saliency maps (each inside the sample's brain mask) within each true class, ranks
atlas regions per class and modality, embeds the modality latents with t-SNE, and writes
``group/`` files plus ``group.html``.

Caveat, stated in the outputs: the final model was trained on these participants, so the maps
show what it learned from them (in-sample), not a validated finding about new participants.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter, clean_label
from m2m_bids.bids.participants import read_participants
from m2m_bids.config import RunConfig
from m2m_bids.interpret.api import build_context, tabular_features
from m2m_bids.interpret.application import session_of
from m2m_bids.interpret.atlas_tables import parcellate
from m2m_bids.interpret.brainmask import brain_mask
from m2m_bids.interpret.bundle import load_bundle
from m2m_bids.interpret.inference import RunScores, score_run
from m2m_bids.interpret.maps import relative_to_uniform, saliency_fwhm, smooth, to_nifti, upsample_tokens, voxel_size
from m2m_bids.interpret.participant import MODALITY_DESC, SCALE_NOTE
from m2m_bids.interpret.predictions import write_tsv
from m2m_bids.interpret.tsne import embed_latents
from m2m_bids.model_inputs.windows import participant_of
from m2m_bids.reports import figures as figs
from m2m_bids.reports.group import GroupMap, render_group
from m2m_bids.runtime import resolve_device
from m2m_bids.training.labels import derive_labels

log = logging.getLogger(__name__)


def true_labels(bids_dir: Path, card: dict[str, Any], participants: list[str]) -> dict[str, str]:
    """Class names from participants.tsv (read as training read it), derived with the card's label
    column/rule (unlabelled left out)."""
    if not (bids_dir / "participants.tsv").is_file():
        return {}
    labels = derive_labels(read_participants(bids_dir), participants,
                           label_column=str(card.get("label_column", "diagnosis")),
                           classes=[str(c) for c in card["classes"]], label_rule=card.get("label_rule"))
    return {p: labels.classes[int(i)] for p, i in labels.y.items()}


def _sample_maps(scores: list[RunScores], entry: Any, shape: tuple[int, int, int],
                 affine: np.ndarray) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Relative-to-uniform maps of one sample inside its brain masks: ``(stat, modality) -> (volume, mask)``."""
    out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    vox = voxel_size(affine)
    for modality in MODALITY_DESC:
        mask = None
        for stat, found in (("attention", [s.spatial_attention for s in scores]),
                            ("gradrollout", [s.rollout for s in scores]), ("saliency", [s.saliency for s in scores])):
            vols = [f[modality] for f in found if modality in f]
            if not vols:
                continue
            mask = brain_mask(entry, modality, shape, affine) if mask is None else mask
            mean = np.mean(vols, axis=0)
            vol = smooth(mean, saliency_fwhm(vox), vox) if stat == "saliency" else upsample_tokens(mean, shape)
            out[(stat, modality)] = relative_to_uniform(np.where(mask, vol, 0.0), mask), mask
    return out


def _latent_rows(pid: str, sid: str, label: str, scores: list[RunScores]) -> list[dict[str, Any]]:
    rows = []
    for modality in scores[0].latents:
        vec = np.mean([s.latents[modality] for s in scores if modality in s.latents], axis=0)
        rows.append({"participant_id": pid, "session_id": sid, "modality": modality, "label": label, "vector": vec})
    return rows


def write_group_interpretation(bundle_dir: Path, entries: list[Any], cfg: RunConfig) -> Path:
    """Write the group explanations under ``OUTPUT_DIR/group/`` and ``OUTPUT_DIR/group.html``."""
    device = resolve_device(cfg.execution.device)
    bundle = load_bundle(Path(bundle_dir), device)
    ctx = build_context(bundle, entries, cfg)
    writer = DerivativesWriter(cfg.execution.output_dir)
    samples: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
    for entry in entries:
        samples[(participant_of(entry), session_of(entry))].append(entry)
    participants = sorted({p for p, _ in samples})
    labels = true_labels(cfg.execution.bids_dir, bundle.card, participants)
    features = tabular_features(bundle, cfg.execution.bids_dir, participants)
    affine = np.asarray(entries[0].meta.affine, dtype=float)
    shape = ctx.atlas.grid.shape
    sums: dict[tuple[str, str, str], list[np.ndarray]] = defaultdict(list)
    inside: dict[tuple[str, str, str], np.ndarray] = {}
    latent_rows: list[dict[str, Any]] = []
    for (p, s), members in sorted(samples.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        scores = [score_run(bundle.model, e, tabular=features[p], saliency=cfg.interpret.saliency,
                            max_saliency_windows=1, device=device) for e in members]
        label = labels.get(p, "unlabelled")
        if p in labels:
            for (stat, modality), (vol, mask) in _sample_maps(scores, members[0], shape, affine).items():
                sums[(label, stat, modality)].append(vol)
                inside[(label, stat, modality)] = inside.get((label, stat, modality), False) | mask
        latent_rows += _latent_rows(f"sub-{p}", f"ses-{s}" if s else "n/a", label, scores)
    maps, top_rows = [], []
    for (label, stat, modality), vols in sorted(sums.items()):
        maps.append(_write_class_map(ctx, writer, label, stat, modality, np.mean(vols, axis=0), affine, len(vols)))
        in_brain = np.where(inside[(label, stat, modality)], ctx.atlas.grid, 0)  # union of the members' masks
        table = parcellate(maps[-1].volume, in_brain, ctx.atlas.labels, ctx.top_k)
        best = table[table["top"]].assign(**{"class": label, "modality": MODALITY_DESC[modality][0], "stat": stat})
        top_rows.append(best[["class", "modality", "stat", "rank", "index", "name", "mean", "n_voxels"]])
    top = pd.concat(top_rows, ignore_index=True) if top_rows else pd.DataFrame()
    top_path = writer.group_path({"atlas": clean_label(ctx.atlas.name), "desc": "topregions"}, "table", ".tsv")
    write_tsv(writer, top_path, top, {
        "Description": f"top {ctx.top_k} atlas regions per true class, modality and method (mean of each "
                       "participant's relative-to-uniform map); in-sample: the final model was trained on them",
        "Atlas": ctx.atlas.name, "AtlasLicense": ctx.atlas.licence, "AtlasCitation": ctx.atlas.citation,
        "Scale": SCALE_NOTE, "ModelID": bundle.model_id})
    tsne_fig = _write_tsne(writer, latent_rows, cfg.execution.random_seed)
    render_group(cfg.execution.output_dir, bundle.model_id, maps, top, tsne_fig)
    return writer.output_path("group")


def _write_class_map(ctx: Any, writer: DerivativesWriter, label: str, stat: str, modality: str, volume: np.ndarray,
                     affine: np.ndarray, n: int) -> GroupMap:
    desc = MODALITY_DESC[modality][0]
    ents = {"space": ctx.template, "res": ctx.res, "stat": stat, "class": clean_label(label), "desc": desc}
    img = to_nifti(volume, affine, f"group {stat} {desc} {label}")
    writer.save_nifti(img, writer.group_path(ents, "statmap", ".nii.gz"),
                      {"Description": f"mean {stat} map of the {n} participant(s) of class {label} ({desc})",
                       "Scale": SCALE_NOTE, "N": n, "ModelID": ctx.bundle.model_id})
    title = f"{label} · {stat} · {desc} (n={n})"
    fig = writer.save_figure(figs.stat_map_figure(img, title), writer.group_path(ents, "statmap", ".png", figure=True),
                             dpi=figs.DPI)
    return GroupMap(title=title, figure=fig, volume=volume)


def _write_tsne(writer: DerivativesWriter, rows: list[dict[str, Any]], seed: int) -> Path | None:
    if not rows:
        return None
    coords, perplexity = embed_latents(pd.DataFrame(rows), seed=seed)
    write_tsv(writer, writer.group_path({"desc": "tsne"}, "latents", ".tsv"), coords, {
        "Description": "2-D t-SNE of the pooled modality latents (one point per sample and modality)",
        "Perplexity": perplexity, "RandomSeed": seed,
        "Columns": {"modality": "which encoder's latent", "label": "true class (unlabelled if none)"}})
    if coords["tsne_1"].isna().all():
        return None
    target = writer.group_path({"desc": "tsne"}, "latents", ".png", figure=True)
    return writer.save_figure(figs.tsne_figure(coords), target, dpi=figs.DPI)
