"""MASAN of Zong et al., "Multiscale Autoencoder with Structural-Functional Attention Network for
Alzheimer's Disease Prediction" (papers/masan_zong.txt, section 2 and Table 1).

Read top to bottom, one forward pass:

1. **Regions.** Each image is cut into ``masan_regions``^3 non-overlapping sub-regions (4 x 4 x 4 in
   the paper); the T1w is one channel, the fMRI window enters with its frames as input channels (the
   paper's "extra dimension of the time is added to the input": the 4D series, not a derived map).
2. **Patch-level modules (sPM, fPM).** One convolutional autoencoder per modality, shared by all
   regions of that modality: ``InitConv -> [Conv stride 2 -> ([GN, ReLU, Conv] x 2 + identity)] x
   masan_downsamplings -> 1x1 code``; the decoder mirrors it with trilinear upsampling and
   concatenations of the encoder features (skip connections). Its reconstruction error and an L1
   penalty on the codes are the model's own loss (``ModelOutput.aux_loss``, paper eq. 1 and 8).
3. **Self-attention across regions** (paper eq. 3-5), one per modality: 1x1x1 convolutions give the
   query, key and value of every region code; each region becomes itself plus the softmax-weighted
   sum of all regions' values.
4. **T1-guided fusion** (paper Fig. 2): the region codes are put back in place (a feature map of
   ``regions x code size`` per axis); a channel attention (global max pooling -> MLP -> sigmoid) and a
   spatial attention (max over channels -> 3^3 conv -> sigmoid), both computed from the T1w features,
   weight the T1w and the fMRI features, which are then added.
5. **MLP classifier** on the flattened fused map (the region layout is kept: the encoders are shared
   across regions, so position enters only here).

``ae_pretrain_epochs`` > 0 gives the paper's autoencoder pre-training: during those epochs
(:meth:`Masan.on_epoch_start`) the codes are detached before the attention, so the classification
loss trains the attention, fusion and classifier but never reaches the autoencoders, which learn
from the reconstruction loss alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m2m_bids.models.config import ModelConfig
from m2m_bids.models.registry import ModelOutput, register_model


def level_channels(cfg: ModelConfig) -> list[int]:
    """Channels of InitConv and of every downsampling level: Table 1's 32, 64, 128, 128 for width 32."""
    return [cfg.masan_width * 2 ** min(i, 2) for i in range(cfg.masan_downsamplings + 1)]


def region_factor(cfg: ModelConfig) -> int:
    """Every image axis must be a multiple of this: regions per axis x 2^downsamplings."""
    return cfg.masan_regions * 2 ** cfg.masan_downsamplings


def to_regions(x: torch.Tensor, regions: int) -> torch.Tensor:
    """``(B, C, X, Y, Z) -> (B * r^3, C, X/r, Y/r, Z/r)``, regions in (x, y, z) raster order."""
    b, c, sx, sy, sz = x.shape
    r = regions
    x = x.reshape(b, c, r, sx // r, r, sy // r, r, sz // r).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b * r ** 3, c, sx // r, sy // r, sz // r)


def from_regions(x: torch.Tensor, batch: int, regions: int) -> torch.Tensor:
    """Inverse of :func:`to_regions`: put every region back in place."""
    _, c, px, py, pz = x.shape
    r = regions
    x = x.reshape(batch, r, r, r, c, px, py, pz).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(batch, c, r * px, r * py, r * pz)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResidualBlock(nn.Module):
    """Table 1's ``[GN, ReLU, Conv] x 2, AddId`` (pre-activation, identity shortcut)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels, groups), nn.ReLU(inplace=True), nn.Conv3d(channels, channels, 3, padding=1),
            group_norm(channels, groups), nn.ReLU(inplace=True), nn.Conv3d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PatchAutoencoder(nn.Module):
    """A patch-level module (sPM / fPM): encoder to a small code, decoder with skip connections."""

    def __init__(self, *, in_channels: int, channels: list[int], code_channels: int, groups: int) -> None:
        super().__init__()
        self.init_conv = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.downs = nn.ModuleList(nn.Conv3d(a, b, 3, stride=2, padding=1) for a, b in zip(channels[:-1], channels[1:]))
        self.enc_blocks = nn.ModuleList(ResidualBlock(c, groups) for c in channels[1:])
        self.to_code = nn.Conv3d(channels[-1], code_channels, 1)
        self.from_code = nn.Conv3d(code_channels, channels[-1], 1)
        # decoder level i goes from channels[i+1] to channels[i]: upsample, conv, concat skip, 1x1 merge, block
        self.up_convs = nn.ModuleList(nn.Conv3d(b, a, 3, padding=1) for a, b in zip(channels[:-1], channels[1:]))
        self.merges = nn.ModuleList(nn.Conv3d(2 * c, c, 1) for c in channels[:-1])
        self.dec_blocks = nn.ModuleList(ResidualBlock(c, groups) for c in channels[:-1])
        self.out_conv = nn.Conv3d(channels[0], in_channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Code ``(N, code, p/2^D, ...)`` and the encoder features the decoder concatenates."""
        h = self.init_conv(x)
        skips = [h]
        for down, block in zip(self.downs, self.enc_blocks):
            h = block(down(h))
            skips.append(h)
        return self.to_code(h), skips[:-1]

    def decode(self, code: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        h = self.from_code(code)
        for i in reversed(range(len(skips))):
            h = F.interpolate(h, size=skips[i].shape[2:], mode="trilinear", align_corners=False)
            h = self.up_convs[i](h)
            h = self.dec_blocks[i](self.merges[i](torch.cat([h, skips[i]], dim=1)))
        return self.out_conv(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(code, reconstruction)`` of a batch of region patches."""
        code, skips = self.encode(x)
        return code, self.decode(code, skips)


class RegionSelfAttention(nn.Module):
    """Paper eq. 3-5: q/k/v by 1x1x1 convolutions of each region code, softmax over regions.

    The scores are scaled by 1/sqrt(d) and the attended values are added to the region (residual):
    without it every region would start as the same average of all regions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv3d(channels, channels, 1)
        self.key = nn.Conv3d(channels, channels, 1)
        self.value = nn.Conv3d(channels, channels, 1)

    def forward(self, codes: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``codes (B * R, C, g, g, g)`` -> updated codes (same shape) and weights ``(B, R, R)``."""
        shape = codes.shape
        q, k, v = (proj(codes).reshape(batch, -1, shape[1:].numel()) for proj in (self.query, self.key, self.value))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        return codes + (weights @ v).reshape(shape), weights


class T1GuidedFusion(nn.Module):
    """Paper Fig. 2 / eq. 6: channel then spatial attention from the T1w features weight both modalities.

    ``a_c = sigmoid(MLP(maxpool_space(f_T1)))``, ``a_s = sigmoid(conv(max_channels(a_c * f_T1)))``;
    fused ``= a_s * a_c * f_T1 (+ a_s * a_c * f_fMRI)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = max(1, channels // 4)
        self.channel_mlp = nn.Sequential(nn.Linear(channels, reduced), nn.ReLU(inplace=True),
                                         nn.Linear(reduced, channels))
        self.spatial_conv = nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, t1: torch.Tensor, fmri: torch.Tensor | None) -> torch.Tensor:
        a_c = torch.sigmoid(self.channel_mlp(t1.amax(dim=(2, 3, 4))))[:, :, None, None, None]
        a_s = torch.sigmoid(self.spatial_conv((a_c * t1).amax(dim=1, keepdim=True)))
        fused = a_s * a_c * t1
        return fused if fmri is None else fused + a_s * a_c * fmri


class Masan(nn.Module):
    """sPM (+ fPM) -> region self-attention -> T1-guided fusion -> MLP; reconstruction + sparsity as aux loss."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if "smri" not in cfg.modalities:
            raise ValueError(f"masan fuses under T1w guidance and needs modality 'smri', got {list(cfg.modalities)}")
        factor = region_factor(cfg)
        if cfg.masan_regions < 1 or cfg.masan_downsamplings < 1 or any(s % factor for s in cfg.img_size):
            raise ValueError(
                f"masan: img_size {tuple(cfg.img_size)} must be divisible by masan_regions {cfg.masan_regions} x "
                f"2^masan_downsamplings {cfg.masan_downsamplings} = {factor} on every axis; crop/pad the grid "
                f"(--grid-shape) or change masan_regions / masan_downsamplings")
        self.config = cfg
        self.modalities = tuple(m for m in ("smri", "fmri") if m in cfg.modalities)
        channels, code = level_channels(cfg), cfg.masan_code_channels
        in_channels = {"smri": 1, "fmri": cfg.frames}
        self.autoencoders = nn.ModuleDict({m: PatchAutoencoder(in_channels=in_channels[m], channels=channels,
                                                               code_channels=code, groups=cfg.masan_groups)
                                           for m in self.modalities})
        self.region_attention = nn.ModuleDict({m: RegionSelfAttention(code) for m in self.modalities})
        self.fusion = T1GuidedFusion(code)
        grid = [s // 2 ** cfg.masan_downsamplings for s in cfg.img_size]  # fused map: regions x code size
        width = code * grid[0] * grid[1] * grid[2]
        if "tabular" in cfg.modalities:
            tab_dim = max(8, cfg.masan_hidden // 4)
            self.tabular_branch = nn.Sequential(nn.Linear(cfg.n_tabular, tab_dim), nn.ReLU(inplace=True))
            width += tab_dim
        self.classifier = nn.Sequential(nn.Linear(width, cfg.masan_hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(cfg.head_dropout),
                                        nn.Linear(cfg.masan_hidden, cfg.num_classes))
        self.pretraining = False

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the training loop: epochs ``< ae_pretrain_epochs`` pre-train the autoencoders."""
        self.pretraining = epoch < self.config.ae_pretrain_epochs

    def images(self, fmri: torch.Tensor | None, smri: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The autoencoder inputs ``(B, channels, X, Y, Z)``: the T1w, the fMRI frames as channels."""
        cfg, out = self.config, {}
        for name, x, t in (("smri", smri, 1), ("fmri", fmri, cfg.frames)):
            if name not in self.modalities:
                continue
            if x is None:
                raise ValueError(f"masan was built with modality {name!r} but it was not given")
            if x.ndim != 6 or x.shape[1] != 1 or tuple(x.shape[2:5]) != tuple(cfg.img_size) or x.shape[5] != t:
                raise ValueError(f"masan: {name} must be (B, 1, {', '.join(map(str, cfg.img_size))}, {t}), "
                                 f"got {tuple(x.shape)}")
            out[name] = x[:, 0].permute(0, 4, 1, 2, 3)
        return out

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        cfg = self.config
        r = cfg.masan_regions
        images = self.images(fmri, smri)
        batch = images["smri"].shape[0]
        recon_terms, sparsity = {}, images["smri"].new_zeros(())
        maps, attention, latents = {}, {}, {}
        for m, x in images.items():
            code, recon = self.autoencoders[m](to_regions(x, r))
            recon_terms[m] = F.mse_loss(from_regions(recon, batch, r), x)
            sparsity = sparsity + code.abs().mean()
            if self.training and self.pretraining:
                code = code.detach()  # stop-gradient: classification must not shape the autoencoders yet
            code, weights = self.region_attention[m](code, batch)
            maps[m] = from_regions(code, batch, r)
            attention[m] = weights.mean(dim=1).reshape(batch, r, r, r)  # mass each region receives
            latents[m] = maps[m].mean(dim=(2, 3, 4))
        fused = self.fusion(maps["smri"], maps.get("fmri")).flatten(1)
        if hasattr(self, "tabular_branch"):
            if tabular is None:
                raise ValueError("masan was built with tabular columns but none were given")
            fused = torch.cat([fused, self.tabular_branch(tabular)], dim=-1)
        aux = (cfg.recon_weight_smri * recon_terms["smri"] + cfg.sparsity_weight * sparsity
               + (cfg.recon_weight_fmri * recon_terms["fmri"] if "fmri" in recon_terms else 0.0))
        return ModelOutput(logits=self.classifier(fused), aux_loss=aux, spatial_attention=attention, latents=latents)


@register_model("masan", tiled=False)
def masan(cfg: ModelConfig) -> nn.Module:
    """MASAN (Zong et al.): patch-level autoencoders, region self-attention, T1-guided fusion, MLP."""
    return Masan(cfg)
