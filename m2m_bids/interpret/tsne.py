"""t-SNE of the modality latents (the paper's Fig. 5): are fMRI and sMRI embeddings aligned?

Each sample contributes one point per modality (its pooled latent). fMRI and sMRI points are
embedded together, so after M2M alignment the two clouds should interleave by class rather than
separate by modality. t-SNE's perplexity must be below the number of points; with the handful of
participants of a small study it is adapted (``min(30, (n - 1) / 3)``) and recorded.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def perplexity_for(n_points: int, preferred: float = 30.0) -> float:
    """A perplexity t-SNE accepts for ``n_points`` (sklearn needs perplexity < n)."""
    return float(max(1.0, min(preferred, (n_points - 1) / 3.0)))


def embed_latents(latents: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, float]:
    """2-D t-SNE of latent vectors.

    ``latents`` has one row per (sample, modality) with metadata columns ``participant_id``,
    ``session_id``, ``modality``, ``label`` and the vector in a ``vector`` column. Vectors of
    different widths (e.g. a tabular latent) are not mixed: only the most common width is kept.
    Each vector is z-scored across its own features first so the modalities' scales do not decide
    the layout. Returns the metadata with ``tsne_1``, ``tsne_2`` and the perplexity used.
    """
    from sklearn.manifold import TSNE

    widths = latents["vector"].map(len)
    keep = latents[widths == widths.mode().iloc[0]].reset_index(drop=True)
    x = np.stack(keep["vector"].to_numpy()).astype(np.float64)
    x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-8)
    n = len(x)
    out = keep.drop(columns=["vector"]).copy()
    if n < 3:
        log.warning("t-SNE needs at least 3 points, got %d; coordinates left empty", n)
        out["tsne_1"], out["tsne_2"] = np.nan, np.nan
        return out, float("nan")
    perplexity = perplexity_for(n)
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                  max_iter=1000).fit_transform(x)
    out["tsne_1"], out["tsne_2"] = coords[:, 0], coords[:, 1]
    return out, perplexity
