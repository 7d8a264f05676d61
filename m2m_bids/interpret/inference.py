"""Run a trained model over every window of one cached run and collect what the explanations need.

A run is scored window by window exactly as the group-level evaluation does, through the same
:mod:`m2m_bids.model_inputs` (:meth:`~m2m_bids.model_inputs.batch.InputSpec.starts`: back-to-back
windows plus one ending at the last frame; :func:`~m2m_bids.model_inputs.batch.run_inputs`: the
batch the training loader would build), so a participant applied later gets the same prediction
as in cross-validation. Logits,
attention and latents are averaged over windows; per-window temporal attention is kept for the
brain states. The gradient explanations (saliency, and for co-attention models the gradient-weighted
attention rollout of :mod:`m2m_bids.interpret.relevance`) need a backward pass per window, so they
run on at most ``max_saliency_windows`` windows spread over the run, for the run's predicted class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from m2m_bids.interpret.relevance import gradient_weighted_rollout
from m2m_bids.interpret.saliency import input_gradient
from m2m_bids.model_inputs.batch import InputSpec, run_inputs

log = logging.getLogger(__name__)


@dataclass
class RunScores:
    """Everything one run produced; arrays are on the model grid / token grid."""

    logits: np.ndarray  # (C,) mean over windows
    window_logits: np.ndarray  # (W, C)
    starts: list[int]
    n_frames: int
    spatial_attention: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (h,w,d) or (l,)
    temporal_attention: list[np.ndarray] = field(default_factory=list)  # per window (T,)
    latents: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (C,)
    saliency: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (X,Y,Z)
    saliency_temporal: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (start, (T,))
    saliency_tabular: np.ndarray | None = None
    rollout: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (h,w,d), predicted class
    rollout_routed: dict[str, float] = field(default_factory=dict)  # m -> share through the co-attention

    @property
    def n_windows(self) -> int:
        return len(self.starts)


def score_run(model: nn.Module, entry: Any, *, tabular: np.ndarray | None = None, batch_size: int = 4,
              saliency: bool = True, max_saliency_windows: int = 4, saliency_method: str = "gradient",
              device: torch.device | str = "cpu") -> RunScores:
    """Predict, and collect attention, latents and saliency for one cache entry (one run)."""
    device = torch.device(device)
    spec = InputSpec.of(model)  # what training fed it
    n_frames = int(entry.frames().shape[0]) if spec.windowed else 1
    starts = spec.starts(n_frames)
    model.eval()
    logits, spatial, temporal, latents = [], {}, [], {}
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            out = model(**run_inputs(entry, chunk, tabular, spec, device))
            logits.append(out.logits.float().cpu().numpy())
            for m, a in out.spatial_attention.items():
                spatial.setdefault(m, []).append(a.float().cpu().numpy())
            if out.temporal_attention is not None:
                temporal.extend(out.temporal_attention.float().cpu().numpy())
            for m, z in out.latents.items():
                latents.setdefault(m, []).append(z.float().cpu().numpy())
    window_logits = np.concatenate(logits)
    scores = RunScores(logits=window_logits.mean(0), window_logits=window_logits, starts=starts, n_frames=n_frames,
                       spatial_attention={m: np.concatenate(v).mean(0) for m, v in spatial.items()},
                       temporal_attention=temporal,
                       latents={m: np.concatenate(v).mean(0) for m, v in latents.items()})
    if saliency:
        chosen = _spread(scores.starts, max_saliency_windows)
        _add_saliency(model, entry, scores, spec, tabular, batch_size, chosen, saliency_method, device)
        _add_rollout(model, entry, scores, spec, tabular, batch_size, chosen, device)
    return scores


def _spread(starts: list[int], n: int) -> list[int]:
    """At most ``n`` of the window starts, evenly spread over the run."""
    pick = np.unique(np.linspace(0, len(starts) - 1, min(n, len(starts))).round().astype(int))
    return [starts[i] for i in pick]


def _add_rollout(model: nn.Module, entry: Any, scores: RunScores, spec: InputSpec, tabular: np.ndarray | None,
                 batch_size: int, chosen: list[int], device: torch.device) -> None:
    """Gradient-weighted attention rollout of the run's predicted class, averaged over ``chosen`` windows."""
    target = int(np.argmax(scores.logits))
    sums: dict[str, np.ndarray] = {}
    routed: dict[str, float] = {}
    for i in range(0, len(chosen), batch_size):
        chunk = chosen[i:i + batch_size]
        result = gradient_weighted_rollout(model, run_inputs(entry, chunk, tabular, spec, device))
        if result is None:
            return
        for m, volume in result.maps.items():
            sums[m] = sums.get(m, 0) + volume[:, target].sum(0)
            routed[m] = routed.get(m, 0.0) + float(result.routed[m][:, target].sum())
    scores.rollout = {m: v / len(chosen) for m, v in sums.items()}
    scores.rollout_routed = {m: v / len(chosen) for m, v in routed.items()}


def _add_saliency(model: nn.Module, entry: Any, scores: RunScores, spec: InputSpec, tabular: np.ndarray | None,
                  batch_size: int, chosen: list[int], method: str, device: torch.device) -> None:
    """Input x gradient of the run's predicted class, averaged over the ``chosen`` windows."""
    target = int(np.argmax(scores.logits))
    sums: dict[str, np.ndarray] = {}
    tab_sum = None
    for i in range(0, len(chosen), batch_size):
        chunk = chosen[i:i + batch_size]
        res = input_gradient(model, run_inputs(entry, chunk, tabular, spec, device), target, method)
        for m, vol in res.spatial.items():
            sums[m] = sums.get(m, 0) + vol
        if res.temporal is not None:
            scores.saliency_temporal.extend(zip(chunk, res.temporal))
        if res.tabular is not None:
            tab_sum = res.tabular if tab_sum is None else tab_sum + res.tabular
    scores.saliency = {m: v / len(chosen) for m, v in sums.items()}
    scores.saliency_tabular = None if tab_sum is None else tab_sum / len(chosen)
