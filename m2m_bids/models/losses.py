"""Multi-patch-to-multi-patch (M2M) contrastive alignment loss (paper section III-D, Eq. 4-7).

At every fMRI frame t the last-stage tokens of fMRI (``N`` patches) and sMRI (the same ``N``
patches of the same MNI grid) give a similarity matrix ``S_t[i, k] = f_t^(i) . s^(k) / tau`` (Eq. 4;
on L2-normalised tokens by default). Same-location pairs (the diagonal) are positives; the other
patches of the same participant are negatives, each scaled by a self-weight
``w_t[i, k] = T(D(f_t^(i), s^(k)))`` (Eq. 7) that *down-weights* negatives which already look alike,
so one fMRI patch may correspond to many sMRI patches:

    l_t^(i) = -log( exp(S_t[i,i]) / sum_{k != i} w_t[i,k] exp(S_t[i,k]) )        (Eq. 5-6)

``T`` is ``(N-1) softmax_k(-D / gamma)`` for similarity-type D (dot, cosine) and
``(N-1) softmax_k(+D / gamma)`` for divergence-type D (KL, JSD, MMD); "none" is ``w = 1``.

The weights are computed on the tokens *as given* (the encoder latents, or their projections),
never on the L2-normalised copies the similarity uses: after normalisation every token has norm 1,
so ``dot`` and ``cosine`` would coincide, and the channel softmax of a unit vector is almost flat,
so KL/JSD weights would all be ~1. Each D therefore measures something of its own (see
:func:`pairwise_discrepancy`). The weights are detached (a weight, not a target) and everything runs
in fp32, even under autocast, because ``exp(S / tau)`` with tau = 0.1 overflows bf16 quickly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIMILARITY_WEIGHTINGS = ("dot", "cosine")
DIVERGENCE_WEIGHTINGS = ("kl", "jsd", "mmd")


def channel_distribution(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities over channels of each token: ``log softmax(standardise(z) / temperature)``.

    Standardising each token over its channels (zero mean, unit variance) makes the distribution
    independent of the token's scale, so ``temperature`` alone sets how peaked it is (1: logits of
    unit spread; smaller: sharper distributions, larger KL/JSD between different tokens).
    """
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True, unbiased=False).clamp_min(1e-6)
    return F.log_softmax((z - mean) / std / temperature, dim=-1)


def pairwise_discrepancy(f: torch.Tensor, s: torch.Tensor, kind: str,
                         divergence_temperature: float = 1.0) -> torch.Tensor:
    """``D`` or similarity between every fMRI patch and every sMRI patch: ``(..., N, C)`` -> ``(..., N, N)``.

    * ``dot``: ``f . s / sqrt(C)``, the scaled dot product of attention. It grows with both
      tokens' norms (a strong token counts as more alike), and on layer-normalised latents (norm
      ~ sqrt(C)) it is ~ ``sqrt(C) cos``: a sharper, norm-sensitive relative of ``cosine``.
    * ``cosine``: the angle only, norm-free.
    * ``kl`` / ``jsd``: divergence of the tokens' channel distributions
      (:func:`channel_distribution` at ``divergence_temperature``).
    * ``mmd``: kernel distance between the two point masses, ``2 - 2 k(f, s)``, RBF kernel whose
      bandwidth is the mean squared distance of the frame's pairs (scale-free, and non-linear in
      the distance: near pairs are told apart more finely than far ones).
    """
    if kind == "dot":
        return f @ s.transpose(-1, -2) / math.sqrt(f.shape[-1])
    if kind == "cosine":
        return F.normalize(f, dim=-1) @ F.normalize(s, dim=-1).transpose(-1, -2)
    if kind in ("kl", "jsd"):
        lp = channel_distribution(f, divergence_temperature).unsqueeze(-2)  # (..., N, 1, C)
        lq = channel_distribution(s, divergence_temperature).unsqueeze(-3)  # (..., 1, N, C)
        if kind == "kl":
            return (lp.exp() * (lp - lq)).sum(-1)
        lm = torch.logaddexp(lp, lq) - math.log(2.0)
        return 0.5 * ((lp.exp() * (lp - lm)).sum(-1) + (lq.exp() * (lq - lm)).sum(-1))
    if kind == "mmd":
        d2 = torch.cdist(f, s).pow(2)
        bandwidth = d2.mean(dim=(-1, -2), keepdim=True).clamp_min(1e-6)
        return 2.0 - 2.0 * torch.exp(-d2 / bandwidth)
    raise ValueError(f"unknown discrepancy {kind!r}; choose from dot, cosine, kl, jsd, mmd")


def self_weights(f: torch.Tensor, s: torch.Tensor, weighting: str, gamma: float,
                 divergence_temperature: float = 1.0) -> torch.Tensor:
    """Detached negative weights ``w[..., i, k]`` (mean 1 over ``k != i``; diagonal set to 1) (Eq. 7)."""
    n = f.shape[-2]
    if weighting == "none":
        return torch.ones(f.shape[:-1] + (n,), dtype=f.dtype, device=f.device)
    with torch.no_grad():
        d = pairwise_discrepancy(f.detach(), s.detach(), weighting, divergence_temperature)
        score = -d / gamma if weighting in SIMILARITY_WEIGHTINGS else d / gamma
        eye = torch.eye(n, dtype=torch.bool, device=f.device)
        w = torch.softmax(score.masked_fill(eye, float("-inf")), dim=-1) * (n - 1)
        return w.masked_fill(eye, 1.0)


def m2m_contrastive_loss(
    f: torch.Tensor, s: torch.Tensor, *, temperature: float = 0.1, weighting: str = "dot",
    gamma: float = 0.5, divergence_temperature: float = 1.0, normalize: bool = True,
    include_positive: bool = False, symmetric: bool = False, time_reduction: str = "mean",
) -> torch.Tensor:
    """M2M loss between fMRI tokens ``f (B, T, N, C)`` and sMRI tokens ``s (B, N, C)`` or ``(B, T, N, C)``.

    ``normalize`` L2-normalises the tokens of the similarity ``S`` (cosines; the paper's Eq. 4 is a
    plain dot product, kept with ``normalize=False``); the self-weights always see the tokens as
    given. ``include_positive`` adds the positive to the denominator (standard InfoNCE / CLIP)
    instead of Eq. 5's ``k != i``. ``symmetric`` averages the fMRI->sMRI rows with the sMRI->fMRI
    columns. Returns a scalar: mean over patches and batch, mean or sum (``time_reduction``) over frames.
    """
    if f.ndim != 4:
        raise ValueError(f"fMRI tokens must be (B, T, N, C), got {tuple(f.shape)}")
    if s.ndim == 3:
        s = s.unsqueeze(1)
    if s.shape[0] != f.shape[0] or s.shape[2:] != f.shape[2:]:
        raise ValueError(f"sMRI tokens {tuple(s.shape)} do not match fMRI tokens {tuple(f.shape)} "
                         "(both modalities must share one token grid and channel count)")
    device_type = f.device.type if f.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        f32, s32 = f.float(), s.float().expand(-1, f.shape[1], -1, -1)
        fs, ss = (F.normalize(f32, dim=-1), F.normalize(s32, dim=-1)) if normalize else (f32, s32)
        weights = self_weights(f32, s32, weighting, gamma, divergence_temperature)
        per_t = _directional(fs, ss, temperature, weights, include_positive)
        if symmetric:
            back = self_weights(s32, f32, weighting, gamma, divergence_temperature)
            per_t = 0.5 * (per_t + _directional(ss, fs, temperature, back, include_positive))
        per_t = per_t.mean(dim=0)  # (T,)
        return per_t.sum() if time_reduction == "sum" else per_t.mean()


def _directional(a: torch.Tensor, b: torch.Tensor, tau: float, weights: torch.Tensor,
                 include_positive: bool) -> torch.Tensor:
    """Per-(batch, frame) loss ``(B, T)`` with rows of ``a`` as anchors, columns of ``b``, ``weights`` (Eq. 6)."""
    n = a.shape[-2]
    logits = a @ b.transpose(-1, -2) / tau  # (B, T, N, N)
    eye = torch.eye(n, dtype=torch.bool, device=a.device)
    denom_terms = logits + torch.log(weights)
    if not include_positive:
        denom_terms = denom_terms.masked_fill(eye, float("-inf"))
    positive = logits.diagonal(dim1=-2, dim2=-1)  # (B, T, N)
    loss = torch.logsumexp(denom_terms, dim=-1) - positive
    return loss.mean(dim=-1)
