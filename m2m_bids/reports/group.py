"""``OUTPUT_DIR/group.html``: cross-validated performance, group attention per class, t-SNE.

Reads what the group level wrote (``group/metrics.tsv``, ``group/figures/{roc,pr,training-curves}.svg``,
``group/oof-predictions.tsv``) and what :mod:`m2m_bids.interpret.group` passes in (class maps, top
regions, t-SNE figure). Missing pieces are said, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.reports.html import esc, figure, page, table

TRAINING_FIGURES = (("roc.svg", "ROC curves of the out-of-fold predictions (thin: folds, thick: pooled)"),
                    ("pr.svg", "precision-recall curves of the out-of-fold predictions"),
                    ("training-curves.svg", "training cross-entropy and weighted alignment, validation loss "
                                            "(kept epoch marked) per epoch"))

IN_SAMPLE = ("These maps come from the final model applied to the participants it was trained on "
             "(in-sample): they describe what the model learned, not a validated group difference.")


@dataclass
class GroupMap:
    """One class-mean map."""

    title: str
    figure: Path
    volume: np.ndarray


def _metrics_section(output_dir: Path) -> str:
    path = output_dir / "group" / "metrics.tsv"
    if not path.is_file():
        return "<h2>Cross-validation</h2><p>No group/metrics.tsv: run the group level to train and evaluate.</p>"
    metrics = pd.read_csv(path, sep="\t", na_values=["n/a"])
    parts = ["<h2>Cross-validation</h2>", table(metrics)]
    for name, caption in TRAINING_FIGURES:
        fig = output_dir / "group" / "figures" / name
        if fig.is_file():
            parts.append(figure(fig, caption))
    return "".join(parts)


def _maps_section(maps: list[GroupMap], top: pd.DataFrame) -> str:
    if not maps:
        return ""
    parts = ["<h2>Where the model looked, per class</h2>", f'<p class="note">{esc(IN_SAMPLE)}</p>']
    parts += [figure(m.figure, m.title) for m in maps]
    if len(top):
        parts.append("<h3>Top regions per class and modality</h3>" + table(top))
    return "".join(parts)


def render_group(output_dir: Path, model_id: str, maps: list[GroupMap], top: pd.DataFrame,
                 tsne_figure: Path | None) -> Path:
    """Write ``OUTPUT_DIR/group.html`` and return its path."""
    sections = [_metrics_section(output_dir), _maps_section(maps, top)]
    if tsne_figure is not None:
        sections.append("<h2>Latent space</h2>" + figure(
            tsne_figure, "t-SNE of the fMRI and sMRI latents: aligned modalities interleave by class"))
    html = page("m2m-bids group report", f"model {model_id}", sections)
    writer = DerivativesWriter(output_dir)
    return writer.save_text(html, writer.output_path("group.html"))
