"""M2M-AlignNet (Wei et al. 2025): SwiFT encoders + latent-as-query co-attention + M2M alignment.

Data flow (shapes for the default 3-stage encoder, N = h*w*d last-stage patches, C = 96):

1. fMRI ``(B,1,X,Y,Z,T)`` -> ``L_f (B,T,N,C)``; sMRI ``(B,1,X,Y,Z,1)`` -> ``L_s (B,N,C)`` (separate
   encoders, same hyper-parameters); tabular ``(B,K)`` -> ``L_t (B,l,C)``.
2. Spatial co-attention (Eq. 1): a learnable latent ``J_sp (N,C)`` queries the concatenated tokens of
   all modalities (plus modality-type and shared spatial position embeddings) -> ``H_joint``. By
   default per fMRI frame (``spatial_per_frame``; the paper's FLOP count fits that), else on the
   frame mean. ``spatial_fusion=False`` replaces it by the sum of the aligned tokens (Table II).
3. Refinement (Eq. 2): each modality's tokens query ``H_joint`` (separate weights, residual).
4. Temporal self-fusion: ``L_te = mean_n L_f (B,T,C)`` is fused with a temporal latent ``J_te (T,C)``
   (Eq. 1) and refined (Eq. 2); off -> the raw ``L_te``.
5. Spatio-temporal product ``LN(H_f[b,t,n] * H_te[b,t])``; bottleneck refinement (Eq. 3) per
   modality; mean-pool, concatenate, classify. The M2M loss (``losses.py``) aligns ``L_f`` with ``L_s``.
"""

from __future__ import annotations

import torch
from torch import nn

from m2m_bids.models.config import ModelConfig, stage_grids
from m2m_bids.models.fusion import BottleneckRefinement, ClassifierHead, CoAttention, TabularEncoder
from m2m_bids.models.losses import m2m_contrastive_loss
from m2m_bids.models.registry import AttentionGraph, ModelOutput, register_model
from m2m_bids.models.swin4d import SwinEncoder4D

_TYPE_INDEX = {"fmri": 0, "smri": 1, "tabular": 2}


def encode_tokens(encoder: SwinEncoder4D, x: torch.Tensor, name: str) -> torch.Tensor:
    """Encoder latent as tokens ``(B, T, N, C)`` (patches row-major over the ``(h, w, d)`` grid)."""
    encoder.check_input(x, name)
    z = encoder(x)  # (B, h, w, d, T, C)
    b, h, w, d, t, c = z.shape
    return z.permute(0, 4, 1, 2, 3, 5).reshape(b, t, h * w * d, c)


class M2MAlignNet(nn.Module):
    """The full model; every Table II switch and Table III modality set is a config option."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.modalities = tuple(cfg.modalities)
        c = cfg.out_dim
        self.grid = stage_grids(cfg)[-1]
        n = self.grid[0] * self.grid[1] * self.grid[2]
        if "fmri" in self.modalities:
            self.fmri_encoder = SwinEncoder4D(cfg, 1, cfg.frames)
        if "smri" in self.modalities:
            self.smri_encoder = SwinEncoder4D(cfg, 1, 1)
        if "tabular" in self.modalities:
            self.tabular_encoder = TabularEncoder(cfg.n_tabular, c, cfg.tabular_tokens)
        std = cfg.latent_init_std
        self.spatial_pos = nn.Parameter(torch.randn(n, c) * std)
        self.type_embed = nn.Parameter(torch.randn(len(_TYPE_INDEX), c) * std)
        if cfg.spatial_fusion:
            self.spatial_latent = nn.Parameter(torch.randn(self._joint_tokens(n), c) * std)
            self.spatial_coattn = CoAttention(c, cfg.fusion_heads, norm_query=False)
        self.cross = nn.ModuleDict({m: CoAttention(c, cfg.fusion_heads, residual=True)
                                    for m in self.modalities})
        if "fmri" in self.modalities:
            if cfg.temporal_fusion:
                self.temporal_latent = nn.Parameter(torch.randn(cfg.frames, c) * std)
                self.temporal_coattn = CoAttention(c, cfg.fusion_heads, norm_query=False)
                self.temporal_refine = CoAttention(c, cfg.fusion_heads, residual=True)
            self.st_norm = nn.LayerNorm(c)
        if cfg.refinement:
            self.refine = nn.ModuleDict({m: BottleneckRefinement(c) for m in self.modalities})
        self.head = ClassifierHead(c * len(self.modalities), cfg.num_classes)
        if cfg.alignment and cfg.align_projection and {"fmri", "smri"} <= set(self.modalities):
            self.align_proj = nn.ModuleDict({m: nn.Linear(c, c) for m in ("fmri", "smri")})

    def _joint_tokens(self, n: int) -> int:
        """Number of spatial latents: one per patch, or one per joint token (``spatial_latents``)."""
        if self.config.spatial_latents == "patch":
            return n
        n_tab = 0
        if "tabular" in self.modalities:
            n_tab = 1 if self.config.tabular_tokens == "single" else self.config.n_tabular
        return n * len({"fmri", "smri"} & set(self.modalities)) + n_tab

    def _tokens(self, fmri: torch.Tensor | None, smri: torch.Tensor | None,
                tabular: torch.Tensor | None) -> dict[str, torch.Tensor]:
        given = {"fmri": fmri, "smri": smri, "tabular": tabular}
        missing = [m for m in self.modalities if given[m] is None]
        if missing:
            raise ValueError(f"model was built for modalities {list(self.modalities)} but "
                             f"{missing} were not given")
        tokens: dict[str, torch.Tensor] = {}
        if "fmri" in self.modalities:
            tokens["fmri"] = encode_tokens(self.fmri_encoder, fmri, "fmri")  # type: ignore[arg-type]
        if "smri" in self.modalities:
            tokens["smri"] = encode_tokens(self.smri_encoder, smri, "smri")[:, 0]  # type: ignore[arg-type]
        if "tabular" in self.modalities:
            tokens["tabular"] = self.tabular_encoder(tabular)
        return tokens

    def _spatial(self, tok: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        """Fused spatial latent ``H_joint (B, Tp, N, C)`` (Tp = T per-frame, else 1)."""
        if "fmri" in tok:
            f = tok["fmri"] if self.config.spatial_per_frame else tok["fmri"].mean(1, keepdim=True)
        tp = f.shape[1] if "fmri" in tok else 1
        parts: dict[str, torch.Tensor] = {}
        for m, z in tok.items():
            z = f if m == "fmri" else z.unsqueeze(1).expand(-1, tp, -1, -1)
            pos = self.spatial_pos if m != "tabular" else 0.0
            parts[m] = z + self.type_embed[_TYPE_INDEX[m]] + pos
        if not self.config.spatial_fusion:  # Table II "addition": sum same-location tokens
            joint = sum(p if m != "tabular" else p.mean(2, keepdim=True) for m, p in parts.items())
            return joint.expand(-1, -1, self.spatial_pos.shape[0], -1)  # type: ignore[union-attr]
        kv = torch.cat(list(parts.values()), dim=2)
        q = self.spatial_latent.expand(kv.shape[0], tp, -1, -1)
        joint, attn = self.spatial_coattn(q, kv)  # attn (B, Tp, heads, N_latents, Nk)
        mass = attn.float().mean(dim=(1, 2, 3))  # (B, Nk): mean over frames, heads and latent queries
        start = 0
        key_slices: dict[str, slice] = {}
        for m, p in parts.items():
            keys = slice(start, start + p.shape[2])
            start += p.shape[2]
            if m != "tabular":  # maps on the brain grid only; the contract keys are fmri/smri
                seg = mass[:, keys]
                out.spatial_attention[m] = (seg / seg.sum(-1, keepdim=True)).reshape(-1, *self.grid)
                key_slices[m] = keys
        out.attention_graph = AttentionGraph(spatial=attn, keys=key_slices)
        return joint

    def _temporal(self, lf: torch.Tensor, out: ModelOutput) -> torch.Tensor:
        """Temporal self-fusion of ``L_te (B, T, C)``; returns ``H_te (B, T, C)``."""
        lte = lf.mean(2)
        if not self.config.temporal_fusion:
            return lte
        t = lte.shape[1]
        q = self.temporal_latent[:t].expand(lte.shape[0], -1, -1)
        joint, attn = self.temporal_coattn(q, lte)
        out.temporal_attention = attn.float().mean(dim=(1, 2))  # (B, T), mean over heads and temporal latents
        return self.temporal_refine(lte, joint)[0]

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        tok = self._tokens(fmri, smri, tabular)
        out = ModelOutput(logits=torch.empty(0))
        joint = self._spatial(tok, out)
        pooled_joint = joint.mean(1)
        refined: dict[str, torch.Tensor] = {}
        graph = out.attention_graph
        for m, z in tok.items():
            if m == "fmri":
                f = z if self.config.spatial_per_frame else z.mean(1, keepdim=True)
                hf, cross = self.cross[m](f, joint)  # (B, Tp, N, C)
                hte = self._temporal(z, out)  # (B, T, C)
                refined[m] = self.st_norm(hf * hte.unsqueeze(2))
            else:
                f = z
                hf, cross = self.cross[m](f, pooled_joint)
                refined[m] = hf
            if graph is not None:
                graph.cross[m], graph.readout[m], graph.residual[m] = cross, hf, f
        feats = []
        for m in self.modalities:
            h = self.refine[m](refined[m]) if self.config.refinement else refined[m]
            feats.append(h.mean(dim=(1, 2)) if m == "fmri" else h.mean(1))
            out.latents[m] = tok[m].mean(dim=(1, 2)) if m == "fmri" else tok[m].mean(1)
        out.logits = self.head(torch.cat(feats, dim=-1))
        out.align_loss = self.alignment_loss(tok)
        return out

    def alignment_loss(self, tok: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Unweighted M2M loss between the fMRI and sMRI latents, or None when it does not apply."""
        cfg = self.config
        if not cfg.alignment or "fmri" not in tok or "smri" not in tok:
            return None
        f, s = tok["fmri"], tok["smri"]
        if hasattr(self, "align_proj"):
            f, s = self.align_proj["fmri"](f), self.align_proj["smri"](s)
        return m2m_contrastive_loss(
            f, s, temperature=cfg.temperature, weighting=cfg.weighting, gamma=cfg.weight_gamma,
            divergence_temperature=cfg.divergence_temperature, normalize=cfg.align_normalize, include_positive=cfg.align_include_positive,
            symmetric=cfg.align_symmetric, time_reduction=cfg.align_time_reduction)


@register_model("m2m")
def m2m_alignnet(cfg: ModelConfig) -> nn.Module:
    """M2M-AlignNet with every Table II component on by default."""
    return M2MAlignNet(cfg)
