"""SwiFT baselines of the paper's Table I: single-modality SwiFT, early fusion (EF), late fusion (LF).

- ``swift``: one encoder on fMRI (or sMRI when fMRI is not among ``modalities``), GAP, MLP head.
- ``swift-ef``: fMRI and sMRI stacked as two input channels (sMRI repeated over frames), one encoder.
- ``swift-lf``: one encoder per modality, one head each, logits averaged ("average of predictions").
Tabular columns, when configured, enter EF as an extra embedding concatenated before the head and
LF as a third averaged prediction.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from m2m_bids.models.config import ModelConfig
from m2m_bids.models.fusion import ClassifierHead, TabularEncoder
from m2m_bids.models.m2m import encode_tokens
from m2m_bids.models.registry import ModelOutput, register_model
from m2m_bids.models.swin4d import SwinEncoder4D

log = logging.getLogger(__name__)


def _require(cfg: ModelConfig, needed: set[str]) -> None:
    if not needed <= set(cfg.modalities):
        raise ValueError(f"arch {cfg.arch!r} needs modalities {sorted(needed)}, got {list(cfg.modalities)}")


def _pool(tok: torch.Tensor) -> torch.Tensor:
    return tok.mean(dim=(1, 2))  # (B, T, N, C) -> (B, C): global average over frames and patches


class SwiFT(nn.Module):
    """A single SwiFT encoder + head on one imaging modality."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.modality = "fmri" if "fmri" in cfg.modalities else "smri"
        _require(cfg, {self.modality})
        ignored = [m for m in cfg.modalities if m != self.modality]
        if ignored:
            log.info("swift uses %s only; ignoring modalities %s", self.modality, ignored)
        self.encoder = SwinEncoder4D(cfg, 1, cfg.frames if self.modality == "fmri" else 1)
        self.head = ClassifierHead(cfg.out_dim, cfg.num_classes, cfg.head_hidden)

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        x = fmri if self.modality == "fmri" else smri
        if x is None:
            raise ValueError(f"swift was built for {self.modality} but it was not given")
        z = _pool(encode_tokens(self.encoder, x, self.modality))
        return ModelOutput(logits=self.head(z), latents={self.modality: z})


class SwiFTEarlyFusion(nn.Module):
    """fMRI and sMRI as two channels of one encoder (sMRI repeated over the fMRI frames)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _require(cfg, {"fmri", "smri"})
        self.config = cfg
        self.encoder = SwinEncoder4D(cfg, 2, cfg.frames)
        dim = cfg.out_dim
        if "tabular" in cfg.modalities:
            self.tabular_encoder = TabularEncoder(cfg.n_tabular, dim, cfg.tabular_tokens)
            dim *= 2
        self.head = ClassifierHead(dim, cfg.num_classes, cfg.head_hidden)

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        if fmri is None or smri is None:
            raise ValueError("swift-ef needs both fmri and smri")
        if smri.ndim != 6 or smri.shape[2:5] != fmri.shape[2:5]:
            raise ValueError(f"smri {tuple(smri.shape)} and fmri {tuple(fmri.shape)} must share the grid")
        x = torch.cat([fmri, smri.expand(-1, -1, -1, -1, -1, fmri.shape[-1])], dim=1)
        z = _pool(encode_tokens(self.encoder, x, "fmri+smri"))
        latents = {"fmri+smri": z}
        if hasattr(self, "tabular_encoder"):
            if tabular is None:
                raise ValueError("swift-ef was built with tabular columns but none were given")
            zt = self.tabular_encoder(tabular).mean(1)
            latents["tabular"] = zt
            z = torch.cat([z, zt], dim=-1)
        return ModelOutput(logits=self.head(z), latents=latents)


class SwiFTLateFusion(nn.Module):
    """One encoder and head per modality; the prediction is the mean of the modality logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _require(cfg, {"fmri", "smri"})
        self.config = cfg
        self.fmri_encoder = SwinEncoder4D(cfg, 1, cfg.frames)
        self.smri_encoder = SwinEncoder4D(cfg, 1, 1)
        mods = [m for m in ("fmri", "smri", "tabular") if m in cfg.modalities]
        self.heads = nn.ModuleDict({m: ClassifierHead(cfg.out_dim, cfg.num_classes, cfg.head_hidden)
                                    for m in mods})
        if "tabular" in mods:
            self.tabular_encoder = TabularEncoder(cfg.n_tabular, cfg.out_dim, cfg.tabular_tokens)

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        if fmri is None or smri is None:
            raise ValueError("swift-lf needs both fmri and smri")
        latents = {"fmri": _pool(encode_tokens(self.fmri_encoder, fmri, "fmri")),
                   "smri": _pool(encode_tokens(self.smri_encoder, smri, "smri"))}
        if "tabular" in self.heads:
            if tabular is None:
                raise ValueError("swift-lf was built with tabular columns but none were given")
            latents["tabular"] = self.tabular_encoder(tabular).mean(1)
        logits = torch.stack([self.heads[m](z) for m, z in latents.items()]).mean(0)
        return ModelOutput(logits=logits, latents=latents)


@register_model("swift")
def swift(cfg: ModelConfig) -> nn.Module:
    """Single-modality SwiFT (fMRI when configured, else sMRI)."""
    return SwiFT(cfg)


@register_model("swift-ef")
def swift_ef(cfg: ModelConfig) -> nn.Module:
    """SwiFT early fusion (Table I)."""
    return SwiFTEarlyFusion(cfg)


@register_model("swift-lf")
def swift_lf(cfg: ModelConfig) -> nn.Module:
    """SwiFT late fusion (Table I)."""
    return SwiFTLateFusion(cfg)
