"""4D Swin pieces: window partitioning, shift masks against a brute-force reference, SDPA chunking."""

from __future__ import annotations

import itertools

import pytest
import torch

from m2m_bids.models.config import build_config
from m2m_bids.models.swin4d import (
    SwinBlock4D,
    SwinEncoder4D,
    WindowAttention4D,
    clamp_window,
    window_partition,
    window_reverse,
)


def test_partition_reverse_roundtrip() -> None:
    x = torch.randn(2, 4, 6, 2, 8, 3)
    win = (2, 3, 2, 4)
    w = window_partition(x, win)
    assert w.shape == (2, 2 * 2 * 1 * 2, 2 * 3 * 2 * 4, 3)
    assert torch.equal(window_reverse(w, win, (4, 6, 2, 8)), x)
    # a window holds exactly the tokens of one contiguous block
    assert torch.equal(w[0, 0].view(2, 3, 2, 4, 3), x[0, :2, :3, :2, :4])


def test_clamp_window_makes_small_axes_global_and_unshifted() -> None:
    win, shift = clamp_window((16, 16, 16, 1), (4, 4, 4, 4), (2, 2, 2, 2))
    assert win == (4, 4, 4, 1) and shift == (2, 2, 2, 0)
    win, shift = clamp_window((4, 4, 4, 20), (4, 4, 4, 4), (2, 2, 2, 2))
    assert win == (4, 4, 4, 4) and shift == (0, 0, 0, 2)


def _allowed_brute_force(grid: tuple[int, ...], win: tuple[int, ...], shift: tuple[int, ...]) -> torch.Tensor:
    """Token i may attend j iff both fall in one (rolled) window AND are within one window span in the
    original grid on every axis, i.e. no pair is joined across the wrapped border."""
    coords = list(itertools.product(*[range(g) for g in grid]))
    n = len(coords)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        for b in range(n):
            ok = True
            for ca, cb, g, w, s in zip(coords[a], coords[b], grid, win, shift):
                same_win = ((ca - s) % g) // w == ((cb - s) % g) // w
                ok &= same_win and abs(ca - cb) < w
            allowed[a, b] = ok
    return allowed


@pytest.mark.parametrize("shifted", [False, True])
def test_block_attention_matches_dense_masked_attention(shifted: bool) -> None:
    torch.manual_seed(0)
    grid, window, dim, heads = (4, 4, 2, 4), (2, 2, 2, 2), 8, 2
    block = SwinBlock4D(dim, heads, grid, window, shifted=shifted)
    win, shift = block.plan(grid)
    assert win == (2, 2, 2, 2) and shift == ((1, 1, 0, 1) if shifted else (0, 0, 0, 0))
    x = torch.randn(2, *grid, dim)
    got = block.attend(x)

    tokens = x.reshape(2, -1, dim)
    qkv = block.attn.qkv(tokens).view(2, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    allowed = _allowed_brute_force(grid, win, shift)
    scores = (q @ k.transpose(-1, -2)) * (dim // heads) ** -0.5
    attn = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    want = block.attn.proj((attn @ v).transpose(1, 2).reshape(2, -1, dim)).view_as(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if shifted:  # the shift really changes who attends whom
        assert not torch.equal(allowed, _allowed_brute_force(grid, win, (0, 0, 0, 0)))


def test_sdpa_chunking_equals_single_call() -> None:
    torch.manual_seed(0)
    attn = WindowAttention4D(8, 2, sdpa_max_batch=65535)
    x = torch.randn(3, 10, 16, 8)
    mask = torch.zeros(10, 16, 16).masked_fill(torch.rand(10, 16, 16) > 0.7, float("-inf"))
    mask.diagonal(dim1=1, dim2=2).zero_()
    ref = attn(x, mask)
    attn.sdpa_max_batch = 4  # forces chunks along both the batch*heads and the window axis
    torch.testing.assert_close(attn(x, mask), ref)


def test_encoder_shapes_time_padding_and_single_frame() -> None:
    cfg = build_config("swift", {"preset": "tiny", "img_size": (16, 16, 16), "frames": 5,
                                 "depths": (2, 2), "modalities": ("fmri",)})
    enc = SwinEncoder4D(cfg, 1, 5)
    assert enc(torch.randn(2, 1, 16, 16, 16, 5)).shape == (2, 2, 2, 2, 5, 16)  # 5 frames pad to 6
    assert enc(torch.randn(1, 1, 16, 16, 16, 3)).shape == (1, 2, 2, 2, 3, 16)  # fewer frames
    enc1 = SwinEncoder4D(cfg, 1, 1)
    assert enc1(torch.randn(2, 1, 16, 16, 16, 1)).shape == (2, 2, 2, 2, 1, 16)
    with pytest.raises(ValueError, match="expected"):
        enc(torch.randn(2, 1, 16, 16, 16, 6))  # more frames than built for


def test_gradient_checkpointing_matches_plain() -> None:
    torch.manual_seed(0)
    cfg = build_config("swift", {"preset": "tiny", "img_size": (16, 16, 16), "frames": 4,
                                 "depths": (2, 2), "modalities": ("fmri",)})
    enc = SwinEncoder4D(cfg).train()
    x = torch.randn(2, 1, 16, 16, 16, 4)
    enc(x).square().mean().backward()
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    for stage in enc.stages:
        stage.grad_checkpointing = True
    enc(x).square().mean().backward()
    for g, p in zip(grads, enc.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


def test_drop_path_is_stochastic_in_training_only() -> None:
    cfg = build_config("swift", {"preset": "tiny", "img_size": (16, 16, 16), "frames": 2,
                                 "drop_path_rate": 0.5, "modalities": ("fmri",)})
    enc = SwinEncoder4D(cfg)
    x = torch.randn(4, 1, 16, 16, 16, 2)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    torch.manual_seed(0)
    a = enc(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, enc(x))
