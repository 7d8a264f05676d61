"""SwiFT-style 4D Swin Transformer encoder (x, y, z, t), written for speed.

Design (SwiFT, Kim et al. 2023; see docs/models.md): non-overlapping p^3 x 1 patches projected by one
Linear; stages of pre-norm Swin blocks in 4D windows, every odd block shifted by window//2 on all
four axes with an additive mask so that tokens never attend across the wrapped border; patch merging
over space only; learnable absolute spatial + temporal embeddings added before every stage.

Speed choices: tensors stay channels-last ``(B, X, Y, Z, T, C)`` so every Linear is one GEMM;
windows are cut by ``view``/``permute`` only; the shift mask is computed once per block at build
time (a non-persistent buffer, cast once to the compute dtype); attention is
``F.scaled_dot_product_attention`` with windows in the "heads" axis so the mask broadcasts without
copies, chunked to respect the CUDA grid limit. Small windows (SwiFT's 16-token stage-1 windows)
fill little of a fused kernel's 64-128-query tile, so explicit batched matmul can win there
(:func:`attention_kernel` picks per device from the measurements of ``benchmarks/attention.py``,
docs/performance.md). The choice is logged once per encoder.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from m2m_bids.models.config import ModelConfig, stage_grids

Grid4 = tuple[int, int, int, int]

log = logging.getLogger(__name__)

#: SDPA kernels allowed on CUDA. cuDNN is left out: its backward failed with a broadcast additive
#: mask in the SwiFT probe (docs/models.md); memory-efficient attention handles the float mask.
#: MATH is left out too: an input no fused kernel takes runs :func:`matmul_attention` (the same
#: computation) with a warning, rather than silently falling back.
_CUDA_SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION]

#: Windows of at most this many tokens use :func:`matmul_attention` (per device type; 0: never).
#: CPU: SDPA's flash kernel beat batched matmul even on 16-token windows (1.8x at 96^3 x 20, paper
#: preset; benchmarks/attention.py, docs/performance.md). CUDA: SDPA until the GPU suite
#: (benchmarks/gpu_suite.py, which runs benchmarks/attention.py) measures batched matmul faster.
MATMUL_MAX_TOKENS = {"cpu": 0, "cuda": 0}


def attention_kernel(tokens: int, device_type: str) -> str:
    """``"matmul"`` for windows small enough that explicit batched matmul beats SDPA, else ``"sdpa"``."""
    return "matmul" if tokens <= MATMUL_MAX_TOKENS.get(device_type, 0) else "sdpa"


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     dropout: float) -> torch.Tensor:
    """Softmax attention as two batched matmuls (softmax in fp32); what SDPA computes, with the
    ``(.., M, M)`` scores materialised -- cheap for small windows, where it avoids tile waste."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    attn = scores.float().softmax(-1).to(q.dtype)
    if dropout:
        attn = F.dropout(attn, dropout)
    return attn @ v


def clamp_window(grid: Grid4, window: Grid4, shift: Grid4) -> tuple[Grid4, Grid4]:
    """Window and shift actually used on a grid: an axis not larger than its window is covered whole.

    Where ``grid <= window`` the window becomes the axis length and the shift 0 (SwiFT's rule), so a
    single-frame input makes the block a 3D Swin block and a 4^3 grid gets global attention.
    """
    win = tuple(g if g <= w else w for g, w in zip(grid, window))
    sft = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
    return win, sft  # type: ignore[return-value]


def window_partition(x: torch.Tensor, win: Grid4) -> torch.Tensor:
    """``(B, D, H, W, T, C)`` -> ``(B, nW, M, C)`` with ``M = prod(win)`` (one copy, no gathers)."""
    b, d, h, w, t, c = x.shape
    x = x.view(b, d // win[0], win[0], h // win[1], win[1], w // win[2], win[2], t // win[3], win[3], c)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6, 8, 9)
    return x.reshape(b, -1, win[0] * win[1] * win[2] * win[3], c)


def window_reverse(windows: torch.Tensor, win: Grid4, grid: Grid4) -> torch.Tensor:
    """Inverse of :func:`window_partition` for a ``grid`` of ``(D, H, W, T)`` tokens."""
    b, c = windows.shape[0], windows.shape[-1]
    n = [g // w for g, w in zip(grid, win)]
    x = windows.view(b, n[0], n[1], n[2], n[3], win[0], win[1], win[2], win[3], c)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4, 8, 9)
    return x.reshape(b, grid[0], grid[1], grid[2], grid[3], c)


def shift_region_ids(grid: Grid4, win: Grid4, shift: Grid4) -> torch.Tensor:
    """Region label of every token of the rolled grid: tokens that wrapped around get other labels."""
    ids = torch.zeros(grid, dtype=torch.long)
    for axis, (g, w, s) in enumerate(zip(grid, win, shift)):
        if s == 0:
            continue
        lab = torch.zeros(g, dtype=torch.long)
        lab[g - w:g - s] = 1
        lab[g - s:] = 2
        shape = [1, 1, 1, 1]
        shape[axis] = g
        ids = ids * 3 + lab.view(shape)
    return ids


def shift_mask(grid: Grid4, win: Grid4, shift: Grid4) -> torch.Tensor | None:
    """Additive float mask ``(nW, M, M)``: 0 inside a region, -inf across regions; None if no shift."""
    if not any(shift):
        return None
    ids = shift_region_ids(grid, win, shift)
    ids = window_partition(ids[None, ..., None], win)[0, :, :, 0]  # (nW, M)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape).masked_fill(~same, float("-inf"))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the attention's queries: the autocast dtype when autocast is on, else ``x``'s."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):  # not on meta
        return torch.get_autocast_dtype(device)
    return x.dtype


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at inference or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Sequential):
    """Linear -> GELU -> Linear, ratio 4 (the Swin/SwiFT MLP)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim),
                         nn.Dropout(drop))


class WindowAttention4D(nn.Module):
    """Multi-head self-attention inside each window via fused SDPA.

    Layout: queries ``(B*heads, nW, M, hd)`` -- windows take SDPA's "heads" axis so that a
    ``(1, nW, M, M)`` mask broadcasts over the batch at no cost. CUDA kernels limit the grid to
    ``sdpa_max_batch`` (65,535) along the batch and head axes, so both are chunked.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 sdpa_max_batch: int = 65535) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"channels {dim} not divisible by heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.attn_drop = attn_drop
        self.sdpa_max_batch = sdpa_max_batch

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, nw, m, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(b, nw, m, 3, h, c // h).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv.reshape(3, b * h, nw, m, c // h).unbind(0)
        if mask is not None:
            mask = mask.to(q.dtype).unsqueeze(0)  # no-op: the block keeps it in the compute dtype
        if attention_kernel(m, q.device.type) == "matmul":
            out = matmul_attention(q, k, v, mask, self.attn_drop if self.training else 0.0)
        else:
            out = self._sdpa(q, k, v, mask)
        out = out.view(b, h, nw, m, c // h).permute(0, 2, 3, 1, 4).reshape(b, nw, m, c)
        return self.proj_drop(self.proj(out))

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None) -> torch.Tensor:
        if not q.is_cuda:
            return self._sdpa_chunked(q, k, v, mask)
        try:
            with sdpa_kernel(_CUDA_SDPA_BACKENDS):
                return self._sdpa_chunked(q, k, v, mask)
        except RuntimeError as err:
            if "No available kernel" not in str(err):
                raise
            log.warning("no fused attention kernel takes %s windows %s (head dim %d): using batched matmul",
                        q.dtype, tuple(q.shape[1:3]), q.shape[-1])
            return matmul_attention(q, k, v, mask, self.attn_drop if self.training else 0.0)

    def _sdpa_chunked(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      mask: torch.Tensor | None) -> torch.Tensor:
        drop = self.attn_drop if self.training else 0.0
        lim = self.sdpa_max_batch
        if q.shape[0] <= lim and q.shape[1] <= lim:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        rows = []
        for i in range(0, q.shape[0], lim):
            cols = []
            for j in range(0, q.shape[1], lim):
                mj = None if mask is None else mask[:, j:j + lim]
                cols.append(F.scaled_dot_product_attention(
                    q[i:i + lim, j:j + lim], k[i:i + lim, j:j + lim], v[i:i + lim, j:j + lim],
                    attn_mask=mj, dropout_p=drop))
            rows.append(torch.cat(cols, 1))
        return torch.cat(rows, 0)


class SwinBlock4D(nn.Module):
    """Pre-norm Swin block: LN -> (shifted) window MSA -> residual -> LN -> MLP -> residual."""

    def __init__(self, dim: int, num_heads: int, grid: Grid4, window: Grid4, shifted: bool, *,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, sdpa_max_batch: int = 65535) -> None:
        super().__init__()
        self.window = window
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention4D(dim, num_heads, attn_drop, drop, sdpa_max_batch)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.built_grid = self._padded(grid)
        mask = shift_mask(self.built_grid, *self.plan(grid))
        self.register_buffer("attn_mask", mask if mask is not None else torch.empty(0), persistent=False)

    def plan(self, grid: Grid4) -> tuple[Grid4, Grid4]:
        """(window, shift) used on a grid of this size."""
        shift = tuple(w // 2 for w in self.window) if self.shifted else (0, 0, 0, 0)
        return clamp_window(grid, self.window, shift)  # type: ignore[arg-type]

    def _padded(self, grid: Grid4) -> Grid4:
        win, _ = self.plan(grid)
        return tuple(math.ceil(g / w) * w for g, w in zip(grid, win))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _mask_in(self, dtype: torch.dtype) -> torch.Tensor:
        """The shift mask in the attention's dtype, cast once (eager) rather than every forward."""
        if self.attn_mask.dtype == dtype:
            return self.attn_mask
        if torch.compiler.is_compiling():  # a compiled graph fuses the cast; no buffer swap inside it
            return self.attn_mask.to(dtype)
        self.attn_mask = self.attn_mask.to(dtype)
        return self.attn_mask

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention of ``(B, D, H, W, T, C)`` tokens, returned in the same layout."""
        grid: Grid4 = tuple(x.shape[1:5])  # type: ignore[assignment]
        win, shift = self.plan(grid)
        padded = self._padded(grid)
        if padded != grid:  # time axis only (space is checked to be divisible at build time)
            pads = [0, 0]
            for g, p in zip(reversed(grid), reversed(padded)):
                pads += [0, p - g]
            x = F.pad(x, pads)
        if any(shift):
            x = torch.roll(x, shifts=[-s for s in shift], dims=(1, 2, 3, 4))
        if not any(shift):
            mask = None
        elif padded == self.built_grid:
            mask = self._mask_in(_compute_dtype(x))
        else:
            mask = shift_mask(padded, win, shift).to(x.device, _compute_dtype(x))  # type: ignore[union-attr]
        out = window_reverse(self.attn(window_partition(x, win), mask), win, padded)
        if any(shift):
            out = torch.roll(out, shifts=list(shift), dims=(1, 2, 3, 4))
        if padded != grid:
            out = out[:, :grid[0], :grid[1], :grid[2], :grid[3]]
        return out


class PatchMerging4D(nn.Module):
    """Concatenate 2x2x2 spatial neighbours (8C) -> LN -> Linear(8C -> C_out, no bias); time kept."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8 * dim)
        self.reduction = nn.Linear(8 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, t, c = x.shape
        x = x.view(b, d // 2, 2, h // 2, 2, w // 2, 2, t, c).permute(0, 1, 3, 5, 7, 2, 4, 6, 8)
        return self.reduction(self.norm(x.reshape(b, d // 2, h // 2, w // 2, t, 8 * c)))


class SwinStage4D(nn.Module):
    """Absolute spatial + temporal embeddings, ``depth`` Swin blocks, optional patch merging."""

    def __init__(self, cfg: ModelConfig, index: int, dim: int, grid: tuple[int, int, int],
                 frames: int, out_dim: int | None, drop_paths: list[float]) -> None:
        super().__init__()
        self.grad_checkpointing = cfg.grad_checkpointing
        self.pos_embed = nn.Parameter(torch.empty(1, *grid, 1, dim))
        self.time_embed = nn.Parameter(torch.empty(1, 1, 1, 1, frames, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        full = cfg.last_layer_full_msa and index == cfg.num_stages - 1
        window = cfg.first_window_size if index == 0 else cfg.window_size
        if full:
            window = (*grid, window[3])
        grid4: Grid4 = (*grid, frames)
        self.blocks = nn.ModuleList(
            SwinBlock4D(dim, cfg.num_heads[index], grid4, window, shifted=(i % 2 == 1 and not full),
                        mlp_ratio=cfg.mlp_ratio, drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate,
                        drop_path=drop_paths[i], sdpa_max_batch=cfg.sdpa_max_batch)
            for i in range(cfg.depths[index]))
        self.merge = PatchMerging4D(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[4]
        x = x + self.pos_embed + self.time_embed[:, :, :, :, :t]
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.merge(x) if self.merge is not None else x


class SwinEncoder4D(nn.Module):
    """SwiFT encoder: ``(B, C_in, X, Y, Z, T)`` -> channels-last latent ``(B, h, w, d, T, C_out)``.

    The final LayerNorm (instantiated but unused in SwiFT) is applied here: the fusion and the
    alignment loss both read these latents, and normalised tokens keep their dot products bounded.
    """

    def __init__(self, cfg: ModelConfig, in_chans: int = 1, frames: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_chans = in_chans
        self.frames = cfg.frames if frames is None else frames
        p = cfg.patch_size
        self.patch_embed = nn.Linear(p ** 3 * in_chans, cfg.embed_dim)
        grids = stage_grids(cfg)
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        dim = cfg.embed_dim
        for i, grid in enumerate(grids):
            last = i == cfg.num_stages - 1
            out_dim = None if last else dim * cfg.c_multiplier
            start = sum(cfg.depths[:i])
            self.stages.append(SwinStage4D(cfg, i, dim, grid, self.frames, out_dim,
                                           rates[start:start + cfg.depths[i]]))
            dim = dim if last else out_dim  # type: ignore[assignment]
        self.out_dim = dim
        self.norm = nn.LayerNorm(dim)
        self.kernels_logged = False

    def check_input(self, x: torch.Tensor, name: str = "input") -> None:
        """Raise a ValueError naming expected and actual sizes (before any reshape fails cryptically)."""
        want = (self.in_chans, *self.cfg.img_size)
        if x.ndim != 6 or tuple(x.shape[1:5]) != want or not 1 <= x.shape[5] <= self.frames:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (B, {want[0]}, {want[1]}, {want[2]}, "
                f"{want[3]}, T) with 1 <= T <= frames={self.frames} (img_size {self.cfg.img_size} must "
                f"be divisible by patch_size {self.cfg.patch_size} x 2^(stages-1) x window)")

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z, T)`` -> ``(B, X/p, Y/p, Z/p, T, p^3*C)`` with C innermost (as SwiFT)."""
        b, c, xs, ys, zs, t = x.shape
        p = self.cfg.patch_size
        x = x.reshape(b, c, xs // p, p, ys // p, p, zs // p, p, t)
        return x.permute(0, 2, 4, 6, 8, 3, 5, 7, 1).reshape(b, xs // p, ys // p, zs // p, t, p ** 3 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not self.kernels_logged and not torch.compiler.is_compiling():
            log.info("%s", self.kernel_summary(x.device.type, _compute_dtype(x)))
            self.kernels_logged = True
        x = self.patch_embed(self.patchify(x))
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def kernel_summary(self, device_type: str, dtype: torch.dtype) -> str:
        """Which attention kernel each stage runs on ``device_type`` (logged at the first forward)."""
        parts = []
        for i, stage in enumerate(self.stages):
            blk = stage.blocks[0]
            tokens = math.prod(blk.plan(blk.built_grid)[0])
            kernel = attention_kernel(tokens, device_type)
            name = "batched matmul" if kernel == "matmul" else (
                "SDPA (memory-efficient/flash)" if device_type == "cuda" else "SDPA")
            parts.append(f"stage {i + 1}: {tokens}-token windows, head dim "
                         f"{blk.attn.qkv.in_features // blk.attn.num_heads} -> {name}")
        return f"4D Swin attention on {device_type} ({str(dtype).replace('torch.', '')}): " + "; ".join(parts)
