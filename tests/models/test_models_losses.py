"""M2M contrastive loss against a naive loop of Eq. 5-7, InfoNCE, and its alignment behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from m2m_bids.models.losses import m2m_contrastive_loss, pairwise_discrepancy, self_weights

WEIGHTINGS = ["none", "dot", "cosine", "kl", "jsd", "mmd"]


def _naive_discrepancy(a: torch.Tensor, b: torch.Tensor, kind: str, bandwidth: float, t_d: float) -> float:
    if kind == "dot":
        return float(a @ b) / math.sqrt(len(a))
    if kind == "cosine":
        return float(a @ b / (a.norm() * b.norm()))
    p = torch.softmax((a - a.mean()) / a.std(unbiased=False) / t_d, 0)
    q = torch.softmax((b - b.mean()) / b.std(unbiased=False) / t_d, 0)
    if kind == "kl":
        return float((p * (p / q).log()).sum())
    if kind == "jsd":
        m = (p + q) / 2
        return float(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())
    return 2 - 2 * math.exp(-float(((a - b) ** 2).sum()) / bandwidth)  # mmd


def _naive_loss(f: torch.Tensor, s: torch.Tensor, tau: float, weighting: str, gamma: float,
                t_d: float = 1.0) -> float:
    """Eq. 6 written as loops over batch b, frame t, anchor i, negative k.

    The similarity uses L2-normalised tokens; the self-weights (Eq. 7) the tokens as given.
    """
    raw_f, raw_s = f.double(), s.double()
    f, s = F.normalize(raw_f, dim=-1), F.normalize(raw_s, dim=-1)
    bsz, t_len, n, _ = f.shape
    total = 0.0
    for b in range(bsz):
        for t in range(t_len):
            bw = sum(float(((raw_f[b, t, i] - raw_s[b, k]) ** 2).sum()) for i in range(n) for k in range(n)) / n**2
            for i in range(n):
                pos = math.exp(float(f[b, t, i] @ s[b, i]) / tau)
                if weighting == "none":
                    w = [1.0] * n
                else:
                    d = [_naive_discrepancy(raw_f[b, t, i], raw_s[b, k], weighting, bw, t_d) for k in range(n)]
                    sign = -1 if weighting in ("dot", "cosine") else 1
                    e = [math.exp(sign * d[k] / gamma) if k != i else 0.0 for k in range(n)]
                    w = [(n - 1) * ek / sum(e) for ek in e]
                neg = sum(w[k] * math.exp(float(f[b, t, i] @ s[b, k]) / tau) for k in range(n) if k != i)
                total += -math.log(pos / neg)
    return total / (bsz * t_len * n)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_equals_naive_loop(weighting: str) -> None:
    torch.manual_seed(0)
    f, s = 3 * torch.randn(2, 3, 5, 6), torch.randn(2, 5, 6)
    got = m2m_contrastive_loss(f, s, temperature=0.2, weighting=weighting, gamma=0.5, divergence_temperature=0.7)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_naive_loss(f, s, 0.2, weighting, 0.5, 0.7), rel=1e-4)


def test_none_is_infonce() -> None:
    torch.manual_seed(1)
    f, s = torch.randn(2, 4, 7, 5), torch.randn(2, 7, 5)
    logits = F.normalize(f, dim=-1) @ F.normalize(s, dim=-1).unsqueeze(1).transpose(-1, -2) / 0.1
    target = torch.arange(7).expand(2, 4, 7)
    # standard InfoNCE (positive in the denominator) == cross-entropy with diagonal targets
    ce = F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1))
    got = m2m_contrastive_loss(f, s, weighting="none", include_positive=True)
    torch.testing.assert_close(got, ce)
    # the paper's Eq. 5 (positive excluded from the denominator)
    eye = torch.eye(7, dtype=torch.bool)
    eq5 = (torch.logsumexp(logits.masked_fill(eye, float("-inf")), -1) - logits.diagonal(0, -2, -1)).mean()
    torch.testing.assert_close(m2m_contrastive_loss(f, s, weighting="none"), eq5)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_aligned_embeddings_give_lower_loss_than_shuffled(weighting: str) -> None:
    torch.manual_seed(2)
    s = torch.randn(4, 16, 32)
    f = (s.unsqueeze(1) + 0.3 * torch.randn(4, 3, 16, 32)).contiguous()  # each fMRI patch near its sMRI patch
    shuffled = f[:, :, torch.randperm(16)]
    aligned = m2m_contrastive_loss(f, s, weighting=weighting)
    assert aligned < m2m_contrastive_loss(shuffled, s, weighting=weighting)
    sym = m2m_contrastive_loss(f, s, weighting=weighting, symmetric=True)
    assert sym < m2m_contrastive_loss(shuffled, s, weighting=weighting, symmetric=True)


def test_weights_are_detached_and_fp32_under_autocast() -> None:
    torch.manual_seed(3)
    f = torch.randn(2, 2, 6, 8, requires_grad=True)
    s = torch.randn(2, 6, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m2m_contrastive_loss(f.bfloat16(), s.bfloat16(), weighting="dot")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # gradient through the weights would differ from the gradient with the weights as constants
    loss = m2m_contrastive_loss(f, s, weighting="cosine")
    g_f, g_s = torch.autograd.grad(loss, (f, s))
    assert torch.isfinite(g_f).all() and g_s.abs().sum() > 0
    fn, sn = F.normalize(f, dim=-1), F.normalize(s, dim=-1).unsqueeze(1)
    w = (5 * torch.softmax((-(fn @ sn.transpose(-1, -2)) / 0.5).masked_fill(torch.eye(6, dtype=torch.bool),
                                                                            float("-inf")), -1)).detach()
    logits = fn @ sn.transpose(-1, -2) / 0.1
    denom = torch.logsumexp((logits + w.clamp_min(1e-30).log()).masked_fill(torch.eye(6, dtype=torch.bool),
                                                                             float("-inf")), -1)
    manual = (denom - logits.diagonal(0, -2, -1)).mean()
    torch.testing.assert_close(torch.autograd.grad(manual, f)[0], g_f, atol=1e-5, rtol=1e-4)


def test_shape_errors_and_discrepancy_range() -> None:
    with pytest.raises(ValueError, match="share one token grid"):
        m2m_contrastive_loss(torch.randn(1, 2, 4, 3), torch.randn(1, 5, 3))
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert (pairwise_discrepancy(a, b, "jsd") <= math.log(2) + 1e-6).all()
    assert (pairwise_discrepancy(a, a, "kl").diagonal().abs() < 1e-6).all()


def _encoder_latents(projection: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-stage fMRI and sMRI tokens of a freshly built tiny M2M-AlignNet (what the loss sees)."""
    from m2m_bids.models import create_model
    from m2m_bids.models.m2m import encode_tokens

    torch.manual_seed(0)
    model = create_model("m2m", num_classes=2, img_size=(16, 16, 16), frames=3, modalities=("fmri", "smri"),
                         preset="tiny", patch_size=2, align_projection=projection)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        f = encode_tokens(model.fmri_encoder, torch.randn(2, 1, 16, 16, 16, 3, generator=g), "fmri")
        s = encode_tokens(model.smri_encoder, torch.randn(2, 1, 16, 16, 16, 1, generator=g), "smri")[:, 0]
        if projection:
            f, s = model.align_proj["fmri"](f), model.align_proj["smri"](s)
    return f, s


@pytest.mark.parametrize("projection", [False, True], ids=["encoder-latents", "projected-latents"])
def test_six_weightings_give_pairwise_different_losses_and_weights(projection: bool) -> None:
    """With the default L2-normalised similarity, no two weightings may collapse to one behaviour."""
    f, s = _encoder_latents(projection)
    n = f.shape[2]
    off = ~torch.eye(n, dtype=torch.bool)
    losses, weights = {}, {}
    for w in WEIGHTINGS:
        losses[w] = m2m_contrastive_loss(f, s, weighting=w).item()
        weights[w] = self_weights(f, s.unsqueeze(1).expand_as(f), w, gamma=0.5)[..., off]
    for i, a in enumerate(WEIGHTINGS):
        if a != "none":  # every informative weighting really reweights (the old KL/JSD spread was ~0.002)
            assert weights[a].std() > 0.05, (a, weights[a].std())
        for b in WEIGHTINGS[i + 1:]:
            assert abs(losses[a] - losses[b]) > 1e-5 * abs(losses[a]), (a, b, losses)  # fp32 noise ~1e-7
            assert (weights[a] - weights[b]).abs().max() > 0.05, (a, b)


def test_divergence_temperature_sharpens_kl_and_jsd_weights() -> None:
    f, s = _encoder_latents(False)
    s = s.unsqueeze(1).expand_as(f)
    for kind in ("kl", "jsd"):
        spreads = [self_weights(f, s, kind, 0.5, t_d).std().item() for t_d in (2.0, 1.0, 0.5)]
        assert spreads[0] < spreads[1] < spreads[2], (kind, spreads)


def test_dot_differs_from_cosine_by_the_token_norms() -> None:
    """dot = cosine x |f||s| / sqrt(C): scaling one sMRI token changes dot weights, not cosine weights."""
    torch.manual_seed(4)
    f, s = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    louder = s.clone()
    louder[..., 2, :] *= 3
    torch.testing.assert_close(self_weights(f, s, "cosine", 0.5), self_weights(f, louder, "cosine", 0.5))
    assert not torch.allclose(self_weights(f, s, "dot", 0.5), self_weights(f, louder, "dot", 0.5))
    torch.testing.assert_close(pairwise_discrepancy(f, s, "dot"),
                               pairwise_discrepancy(f, s, "cosine") * f.norm(dim=-1).unsqueeze(-1)
                               * s.norm(dim=-1).unsqueeze(-2) / math.sqrt(8))
