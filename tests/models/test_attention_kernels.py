"""Window-attention kernel choice: batched matmul computes what SDPA does; the choice is logged once."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from m2m_bids.models import swin4d
from m2m_bids.models.config import build_config
from m2m_bids.models.swin4d import SwinEncoder4D, attention_kernel, matmul_attention, shift_mask


def test_matmul_attention_matches_sdpa_with_the_shift_mask():
    torch.manual_seed(0)
    mask = shift_mask((4, 4, 4, 4), (2, 2, 2, 2), (1, 1, 1, 1)).unsqueeze(0)  # (1, nW, 16, 16)
    q, k, v = (torch.randn(6, mask.shape[1], 16, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(matmul_attention(q, k, v, mask, 0.0), expected, rtol=1e-5, atol=1e-5)


def test_encoder_output_is_the_same_with_either_kernel_and_the_choice_is_logged(monkeypatch, caplog):
    cfg = build_config("m2m", {"preset": "tiny", "img_size": (16, 16, 16), "frames": 4})
    torch.manual_seed(1)
    encoder = SwinEncoder4D(cfg, 1, 4).eval()
    x = torch.randn(2, 1, 16, 16, 16, 4)
    with caplog.at_level(logging.INFO, logger="m2m_bids.models.swin4d"), torch.no_grad():
        fused = encoder(x)
        encoder(x)
    lines = [r.getMessage() for r in caplog.records if "4D Swin attention" in r.getMessage()]
    assert len(lines) == 1 and "stage 1:" in lines[0] and "-> SDPA" in lines[0]  # once, with every stage
    monkeypatch.setitem(swin4d.MATMUL_MAX_TOKENS, "cpu", 10**6)
    assert attention_kernel(16, "cpu") == "matmul" and attention_kernel(16, "mps") == "sdpa"
    encoder.kernels_logged = False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="m2m_bids.models.swin4d"), torch.no_grad():
        explicit = encoder(x)
    assert "-> batched matmul" in caplog.text
    torch.testing.assert_close(explicit, fused, rtol=1e-4, atol=1e-4)
