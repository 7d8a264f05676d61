"""Building blocks of the M2M-AlignNet fusion (paper section III-C, Eq. 1-3) and the tabular encoder.

The attention here is small (64 latent queries over ~130 tokens) and its weights are needed for
interpretation, so it is computed explicitly (softmax of a matmul) rather than with fused SDPA.
"""

from __future__ import annotations

import torch
from torch import nn


class CoAttention(nn.Module):
    """``softmax(W_Q q (W_K kv)^T / sqrt(d_head)) W_V kv`` followed by an output projection.

    Used both as the latent-as-query fusion of Eq. 1 (``q`` = learnable latents, no query norm)
    and as the modality refinement of Eq. 2 (``q`` = a modality's tokens, ``kv`` = the fused latent).
    Works on any leading dims: ``q (..., Nq, C)``, ``kv (..., Nk, C)``. Returns the output and the
    attention weights per head ``(..., heads, Nq, Nk)`` (rows sum to 1), the very tensor the output
    is computed from, so that a gradient with respect to it exists (gradient-weighted attention).
    """

    def __init__(self, dim: int, num_heads: int = 1, norm_query: bool = True,
                 residual: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion channels {dim} not divisible by fusion_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm_q = nn.LayerNorm(dim) if norm_query else nn.Identity()
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.residual = residual

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        *lead, n, c = x.shape
        return x.view(*lead, n, self.num_heads, c // self.num_heads).transpose(-2, -3)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv_n = self.norm_kv(kv)
        qh = self._heads(self.q(self.norm_q(q)))
        kh, vh = self._heads(self.k(kv_n)), self._heads(self.v(kv_n))
        attn = torch.softmax((qh * self.scale) @ kh.transpose(-1, -2), dim=-1)  # (..., h, Nq, Nk)
        out = (attn @ vh).transpose(-2, -3).flatten(-2)
        out = self.out(out)
        if self.residual:
            out = out + q
        return out, attn


class BottleneckRefinement(nn.Module):
    """Modality refinement (Eq. 3): ``H + P_up(GELU(P_down(MLP(LN(H)))))`` with ``C -> C/4 -> C``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim)
        self.down = nn.Linear(dim, max(dim // 4, 1))
        self.up = nn.Linear(max(dim // 4, 1), dim)
        self.act = nn.GELU()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(self.mlp(self.norm(h)))))


class TabularEncoder(nn.Module):
    """MLP from ``K`` tabular features to ``l`` tokens of ``C`` channels (the paper's ``L_t``).

    ``tokens="single"``: one token, ``Linear(K,C) -> GELU -> Linear(C,C)``. ``"per_feature"``: one
    token per column (value x learned vector + learned bias, then a shared GELU MLP), which lets the
    co-attention weigh individual columns.
    """

    def __init__(self, n_features: int, dim: int, tokens: str = "single") -> None:
        super().__init__()
        self.tokens = tokens
        if tokens == "single":
            self.embed = nn.Linear(n_features, dim)
        else:
            self.weight = nn.Parameter(torch.randn(n_features, dim) * 0.02)
            self.bias = nn.Parameter(torch.zeros(n_features, dim))
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.n_features = n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"tabular input has shape {tuple(x.shape)}; expected (B, {self.n_features})")
        if self.tokens == "single":
            h = self.embed(x).unsqueeze(1)
        else:
            h = x.unsqueeze(-1) * self.weight + self.bias
        return self.mlp(h)


class ClassifierHead(nn.Module):
    """LayerNorm -> (Linear(C, hidden*C) -> GELU ->) Linear(-> classes); ``hidden=0`` is linear."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(dim)]
        if hidden:
            layers += [nn.Linear(dim, hidden * dim), nn.GELU(), nn.Linear(hidden * dim, num_classes)]
        else:
            layers.append(nn.Linear(dim, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
