"""Class-discriminative attention: gradient-weighted attention rollout through the latent queries.

The raw spatial co-attention (``stat-attention``) says where the fusion latents *read*; it is the
same for every class and, in practice, close to uniform. This map follows Chefer, Gur & Wolf,
"Generic attention-model explainability for interpreting bi-modal and encoder-decoder
transformers" (ICCV 2021) on the M2M-AlignNet fusion:

1. both attention layers (the latents' co-attention of Eq. 1, the tokens' attention over the fused
   latents of Eq. 2) are replaced by their gradient-weighted, head-averaged version
   ``Â = E_heads[max(0, A * dy_c/dA)]`` (rows renormalised to sum to 1): the reads that push the
   class logit ``y_c`` up;
2. relevance is rolled out from the tokens the classifier reads (Eq. 2's output
   ``h_n = z_n + o_n``, one per patch and modality, mean-pooled into the classifier) back to the
   input tokens. There is no class token whose row rollout could start from, so each readout token
   starts with ``w_n = max(0, dy_c/dh_n . (h_n - mean_n h))``: the first-order contribution of its
   deviation from the participant's average token. (The gradient alone is nearly the same for
   every token after mean pooling, and gradient x token is dominated by what all tokens share.)
3. ``w_n`` flows back along the token's two paths in proportion to their norms (Kobayashi et al.,
   EMNLP 2021: the residual usually dominates, and plain rollout ignores it): the share
   ``|z_n| / (|z_n| + |o_n|)`` to the token itself through Eq. 2's residual (rollout's identity
   term), the rest through the latent queries, ``(w (1 - share)) @ Â_cross @ Â_spatial``.

What the map can and cannot say: it is built from attention and gradients of this model only;
the share that travelled through the co-attention (rather than the residual) is returned
alongside (``routed``), so a map dominated by the residual is not mistaken for attention.
Written as ``stat-gradrollout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from m2m_bids.models.registry import AttentionGraph


@dataclass
class Rollout:
    """Per-class relevance maps of one batch: ``maps[m]`` is ``(B, classes, h, w, d)`` (each map sums to 1).

    ``routed[m]`` ``(B, classes)``: the fraction of the map that reached the tokens through the
    latent queries (the rest came through the Eq. 2 residual).
    """

    maps: dict[str, np.ndarray]
    routed: dict[str, np.ndarray]


def _gradient_weighted(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``E_heads[(grad * A)^+]`` with rows renormalised (zero rows stay zero); heads on axis -3."""
    rel = (grad.float() * attn.detach().float()).clamp_min(0).mean(dim=-3)
    total = rel.sum(-1, keepdim=True)
    return torch.where(total > 0, rel / total.clamp_min(1e-30), torch.zeros_like(rel))


def _rollout(graph: AttentionGraph, grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity (residual) and routed relevance over the key tokens, each ``(B, Nk)``."""
    spatial = _gradient_weighted(graph.spatial, grads["spatial"])  # (B, Tp, Nq, Nk)
    nk = spatial.shape[-1]
    b = spatial.shape[0]
    identity = torch.zeros(b, nk, device=spatial.device)
    routed = torch.zeros(b, nk, device=spatial.device)
    for m, cross_attn in graph.cross.items():
        h = graph.readout[m].detach().float()
        w = (grads[f"readout.{m}"].float() * (h - h.mean(dim=-2, keepdim=True))).sum(-1).clamp_min(0)
        own = graph.residual[m].detach().float()
        through = (graph.readout[m].detach().float() - own).norm(dim=-1)
        share = own.norm(dim=-1) / (own.norm(dim=-1) + through).clamp_min(1e-12)
        cross = _gradient_weighted(cross_attn, grads[f"cross.{m}"])  # (B, [Tp,] N_m, Nq)
        kept, passed = w * share, w * (1 - share)
        if w.ndim == 3:  # fMRI: one readout per frame, routed through that frame's co-attention
            routed += torch.einsum("btn,btnq,btqk->bk", passed, cross, spatial)
            kept = kept.sum(1)
        else:  # read from the frame-mean of the fused latents
            routed += torch.einsum("bn,bnq,bqk->bk", passed, cross, spatial.mean(1))
        if m in graph.keys:
            identity[:, graph.keys[m]] += kept
    return identity, routed


def gradient_weighted_rollout(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> Rollout | None:
    """Relevance of every image token for every class for one batch of windows, or None.

    ``inputs`` are the forward's keyword arguments. None for models without latent-query
    co-attention (baselines, ``spatial_fusion=False``). Parameter ``.grad`` is left untouched; the
    model runs in eval mode and is restored to the mode it was in.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(**inputs)
            graph = out.attention_graph
            if graph is None or not graph.keys:
                return None
            named = {"spatial": graph.spatial, **{f"cross.{m}": a for m, a in graph.cross.items()},
                     **{f"readout.{m}": h for m, h in graph.readout.items()}}
            n_classes = out.logits.shape[1]
            per_class = []
            for c in range(n_classes):
                grads = torch.autograd.grad(out.logits[:, c].float().sum(), list(named.values()),
                                            retain_graph=c < n_classes - 1, allow_unused=True)
                grads_by_name = {k: g if g is not None else torch.zeros_like(v)
                                 for (k, v), g in zip(named.items(), grads)}
                per_class.append(_rollout(graph, grads_by_name))
    finally:
        model.train(was_training)
    identity = torch.stack([i for i, _ in per_class], dim=1)  # (B, classes, Nk)
    routed = torch.stack([r for _, r in per_class], dim=1)
    maps, shares = {}, {}
    for m, keys in graph.keys.items():
        total = identity[..., keys] + routed[..., keys]
        mass = total.sum(-1, keepdim=True)
        grid = tuple(out.spatial_attention[m].shape[1:])
        maps[m] = (total / mass.clamp_min(1e-30)).reshape(*total.shape[:2], *grid).cpu().numpy()
        shares[m] = (routed[..., keys].sum(-1) / mass[..., 0].clamp_min(1e-30)).cpu().numpy()
    return Rollout(maps=maps, routed=shares)
