"""Figures of the explanations: attention on the brain, connectivity of brain states, t-SNE, probabilities.

Every figure is a :class:`matplotlib.figure.Figure` made without pyplot (no global backend, renders
headless in containers), saved as PNG by the derivatives sink under ``sub-<id>/figures/`` or ``group/figures/``;
the HTML reports embed the same bytes as base64 so they open offline.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import nibabel as nib

log = logging.getLogger(__name__)

#: Resolution of the PNG figures (passed to the derivatives sink).
DPI = 96


@lru_cache(maxsize=1)
def _template() -> nib.Nifti1Image:
    """nilearn's MNI152 2009 template at 2 mm (shipped with nilearn, works offline)."""
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


def stat_map_figure(img: nib.Nifti1Image, title: str,
                    cut_coords: tuple[float, float, float] | None = None) -> Figure:
    """Orthogonal views of a relative-to-uniform map on the MNI template, cut at its peak.

    What is drawn is the excess over uniform (``score - 1``, zero and below hidden), coloured from
    0 to its 99.5th percentile: a near-uniform attention map would otherwise be one saturated
    colour, and the reader's question is "where did the model look more than average?".
    """
    import nibabel as nib
    from nilearn import plotting

    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    excess = np.clip(data - 1.0, 0.0, None)
    positive = excess[excess > 0]
    vmax = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    if cut_coords is None and positive.size:
        peak = np.unravel_index(int(np.argmax(excess)), excess.shape)
        cut_coords = tuple(float(c) for c in (img.affine @ np.array([*peak, 1.0]))[:3])
    shown = nib.Nifti1Image(excess, img.affine)
    fig = Figure(figsize=(9, 3.2))
    plotting.plot_stat_map(shown, bg_img=_template(), figure=fig, display_mode="ortho", cut_coords=cut_coords,
                           threshold=vmax * 1e-3, colorbar=True, cmap="hot", symmetric_cbar=False,
                           vmax=vmax, title=f"{title} (above uniform)", draw_cross=False, annotate=True)
    return fig


def probability_figure(probabilities: dict[str, float], predicted: str) -> Figure:
    """Horizontal bars of the class probabilities, the predicted class highlighted."""
    fig = Figure(figsize=(5, 0.5 + 0.45 * len(probabilities)))
    ax = fig.add_subplot(1, 1, 1)
    names = list(probabilities)
    values = [probabilities[n] for n in names]
    colours = ["#c0392b" if n == predicted else "#95a5a6" for n in names]
    ax.barh(names, values, color=colours)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    for y, v in enumerate(values):
        ax.text(min(v + 0.02, 0.9), y, f"{v:.2f}", va="center")
    return fig


def connectivity_figure(matrix: pd.DataFrame, title: str, max_labels: int = 40) -> Figure:
    """Region-by-region Pearson r as a heatmap (diverging, -1..1); names shown when few enough."""
    n = len(matrix)
    size = 4 + min(n, 120) * 0.06
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(matrix.to_numpy(float), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    if n <= max_labels:
        ax.set_xticks(range(n), matrix.columns, rotation=90, fontsize=6)
        ax.set_yticks(range(n), matrix.index, fontsize=6)
    else:
        ax.set_xlabel("atlas region (atlas order)")
        ax.set_ylabel("atlas region (atlas order)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson r")
    return fig


def temporal_figure(scores: np.ndarray, tr: float | None, peaks: list[int], label: str) -> Figure:
    """Per-frame score over the run (1 = window average), brain-state peaks marked."""
    fig = Figure(figsize=(8, 2.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(scores)) * (tr or 1.0)
    ax.plot(x, scores, color="#2c3e50", lw=1)
    ax.axhline(1.0, color="#95a5a6", lw=0.8, ls="--")
    for k, p in enumerate(peaks, start=1):
        ax.axvline(x[p], color="#c0392b", lw=1)
        ax.text(x[p], np.nanmax(scores), f" S{k}", color="#c0392b", va="top")
    ax.set_xlabel("time (s)" if tr else "frame")
    ax.set_ylabel(label)
    return fig


def tsne_figure(coords: pd.DataFrame) -> Figure:
    """t-SNE of latent embeddings: colour = modality, marker = class (the paper's Fig. 5)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    markers = ["o", "^", "s", "D", "v", "P"]
    colours = {"fmri": "#2980b9", "smri": "#d35400", "tabular": "#27ae60"}
    for (modality, label), rows in coords.groupby(["modality", "label"], sort=True):
        classes = sorted(coords["label"].astype(str).unique())
        ax.scatter(rows["tsne_1"], rows["tsne_2"], s=28, alpha=0.8,
                   color=colours.get(str(modality), "#7f8c8d"),
                   marker=markers[classes.index(str(label)) % len(markers)], label=f"{modality} / {label}")
    ax.legend(fontsize=7, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of the latent embeddings")
    return fig
