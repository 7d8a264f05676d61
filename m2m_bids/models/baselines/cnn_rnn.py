"""3D-CNN + recurrent baselines of Kujur & Monfared (2026), "Multimodal Deep Learning for Dynamic and
Static Neuroimaging" (papers/cnn-lstm_kujur2026.txt, section 3.4).

- ``cnn-lstm`` / ``cnn-gru``: an sMRI branch (3D conv -> pool -> 3D conv -> pool -> flatten -> dense
  128) and an fMRI branch (the same kind of 3D CNN applied to every frame, "time-distributed", then
  three stacked recurrent layers of 32 units whose last output is the fMRI vector); the two vectors
  are concatenated -> dense 64 + ReLU -> dropout 0.1 -> class logits.
- ``cnn3d``: the sMRI branch alone (paper Fig. 6, row 3); ``lstm3d`` / ``gru3d``: the fMRI branch
  alone (Fig. 6, rows 1-2). Both use the same dense 64 -> dropout -> logits head.

Shapes follow the paper's equations: the first convolution has stride 2 (``H1`` is at d/2), each
later convolution is preceded by a 2x max-pool and the branch ends with one (``d/8`` for two
convolutions). Everything is a :class:`ModelConfig` field (``cnn_channels``, ``cnn_dense``,
``frame_channels``, ``rnn_hidden``, ``rnn_layers``, ``fusion_hidden``, ``head_dropout``), so the
``tiny`` preset shrinks it for tests. The paper has no tabular input; when tabular columns are
configured the multimodal archs add a small dense tabular embedding to the concatenation (so they
see the same inputs as ``m2m``); the single-modality archs ignore other modalities, as ``swift`` does.

These models have no attention: ``ModelOutput.spatial_attention`` is empty and the participant
level falls back to gradient saliency.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from m2m_bids.models.config import ModelConfig
from m2m_bids.models.registry import ModelOutput, register_model

log = logging.getLogger(__name__)


def branch_grid(img_size: Sequence[int], n_convs: int) -> tuple[int, int, int]:
    """Spatial size after a :class:`Conv3DBranch`: stride-2 conv, then (pool, conv) pairs, then a pool."""
    grid = [(d - 1) // 2 + 1 for d in img_size]  # conv k3 s2 p1
    for _ in range(n_convs - 1):
        grid = [d // 2 for d in grid]  # pool; the following k3 p1 conv keeps the size
    return tuple(d // 2 for d in grid)  # type: ignore[return-value]


class Conv3DBranch(nn.Module):
    """The paper's 3D CNN block: ``ReLU(conv_s2) -> [pool -> ReLU(conv)]* -> pool -> flatten``."""

    def __init__(self, img_size: Sequence[int], channels: Sequence[int], name: str) -> None:
        super().__init__()
        if not channels:
            raise ValueError(f"{name}: channels must list at least one convolution")
        grid = branch_grid(img_size, len(channels))
        if min(grid) < 1:
            need = 2 ** (len(channels) + 1)
            raise ValueError(f"{name}: img_size {tuple(img_size)} is too small for {len(channels)} "
                             f"convolution(s) (the branch downsamples by {need}); use an image of at "
                             f"least {need} voxels per axis or fewer channels entries")
        layers: list[nn.Module] = [nn.Conv3d(1, channels[0], 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.MaxPool3d(2), nn.Conv3d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool3d(2), nn.Flatten(1)]
        self.net = nn.Sequential(*layers)
        self.out_features = channels[-1] * grid[0] * grid[1] * grid[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SMRIBranch(nn.Module):
    """``v_MRI = dense_128(flatten(CNN(X_s)))`` (paper: no activation is named on the dense layer)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cnn = Conv3DBranch(cfg.img_size, cfg.cnn_channels, "sMRI branch")
        self.dense = nn.Linear(self.cnn.out_features, cfg.cnn_dense)
        self.out_features = cfg.cnn_dense

    def forward(self, smri: torch.Tensor) -> torch.Tensor:
        return self.dense(self.cnn(smri[..., 0]))  # (B,1,X,Y,Z,1) -> (B,1,X,Y,Z)


class FMRIBranch(nn.Module):
    """Time-distributed 3D CNN over frames -> stacked LSTM/GRU; the last step of the top layer."""

    def __init__(self, cfg: ModelConfig, cell: str) -> None:
        super().__init__()
        self.cnn = Conv3DBranch(cfg.img_size, cfg.frame_channels, "fMRI frame branch")
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(self.cnn.out_features, cfg.rnn_hidden, num_layers=cfg.rnn_layers, batch_first=True)
        self.out_features = cfg.rnn_hidden

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        b, c, x, y, z, t = fmri.shape
        frames = fmri.permute(0, 5, 1, 2, 3, 4).reshape(b * t, c, x, y, z)
        seq = self.cnn(frames).reshape(b, t, -1)  # H_TD (B, T, N)
        out, _ = self.rnn(seq)
        return out[:, -1]  # v_fMRI (B, hidden)


def _check(x: torch.Tensor | None, name: str, img_size: tuple[int, int, int], arch: str) -> torch.Tensor:
    """Fail with the expected layout when an input is missing or shaped wrongly."""
    if x is None:
        raise ValueError(f"{arch} needs {name} but it was not given")
    if x.ndim != 6 or x.shape[1] != 1 or tuple(x.shape[2:5]) != tuple(img_size):
        raise ValueError(f"{arch}: {name} must be (B, 1, {', '.join(map(str, img_size))}, T), "
                         f"got {tuple(x.shape)}")
    return x


class CnnRnn(nn.Module):
    """One class for the five archs: which branches exist is decided by ``smri`` / ``cell``."""

    def __init__(self, cfg: ModelConfig, *, smri: bool, cell: str | None) -> None:
        super().__init__()
        self.config = cfg
        self.arch = cfg.arch
        needed = ({"smri"} if smri else set()) | ({"fmri"} if cell else set())
        if not needed <= set(cfg.modalities):
            raise ValueError(f"arch {cfg.arch!r} needs modalities {sorted(needed)}, got {list(cfg.modalities)}")
        multimodal = smri and cell is not None
        ignored = [m for m in cfg.modalities if m not in needed and not (multimodal and m == "tabular")]
        if ignored:
            log.info("%s uses %s only; ignoring modalities %s", cfg.arch, sorted(needed), ignored)
        width = 0
        if smri:
            self.smri_branch = SMRIBranch(cfg)
            width += self.smri_branch.out_features
        if cell is not None:
            self.fmri_branch = FMRIBranch(cfg, cell)
            width += self.fmri_branch.out_features
        if multimodal and "tabular" in cfg.modalities:
            tab_dim = max(8, cfg.fusion_hidden // 4)
            self.tabular_branch = nn.Sequential(nn.Linear(cfg.n_tabular, tab_dim), nn.ReLU(inplace=True))
            width += tab_dim
        self.head = nn.Sequential(nn.Linear(width, cfg.fusion_hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(cfg.head_dropout), nn.Linear(cfg.fusion_hidden, cfg.num_classes))

    def forward(self, fmri: torch.Tensor | None = None, smri: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> ModelOutput:
        latents: dict[str, torch.Tensor] = {}
        size = self.config.img_size
        if hasattr(self, "smri_branch"):
            latents["smri"] = self.smri_branch(_check(smri, "smri", size, self.arch))
        if hasattr(self, "fmri_branch"):
            latents["fmri"] = self.fmri_branch(_check(fmri, "fmri", size, self.arch))
        if hasattr(self, "tabular_branch"):
            if tabular is None:
                raise ValueError(f"{self.arch} was built with tabular columns but none were given")
            latents["tabular"] = self.tabular_branch(tabular)
        logits = self.head(torch.cat(list(latents.values()), dim=-1))
        return ModelOutput(logits=logits, latents=latents)


@register_model("cnn-lstm", tiled=False)
def cnn_lstm(cfg: ModelConfig) -> nn.Module:
    """3DCNN-LSTM (Kujur & Monfared 2026, Fig. 5a): sMRI 3D CNN + time-distributed CNN -> 3 LSTMs."""
    return CnnRnn(cfg, smri=True, cell="lstm")


@register_model("cnn-gru", tiled=False)
def cnn_gru(cfg: ModelConfig) -> nn.Module:
    """3DCNN-GRU (Fig. 5b): as ``cnn-lstm`` with GRU layers."""
    return CnnRnn(cfg, smri=True, cell="gru")


@register_model("cnn3d", tiled=False)
def cnn3d(cfg: ModelConfig) -> nn.Module:
    """3DCNN (Fig. 6, row 3): the sMRI branch and head only."""
    return CnnRnn(cfg, smri=True, cell=None)


@register_model("lstm3d", tiled=False)
def lstm3d(cfg: ModelConfig) -> nn.Module:
    """3DLSTM (Fig. 6, row 1): time-distributed 3D CNN over fMRI frames -> 3 LSTMs -> head."""
    return CnnRnn(cfg, smri=False, cell="lstm")


@register_model("gru3d", tiled=False)
def gru3d(cfg: ModelConfig) -> nn.Module:
    """3DGRU (Fig. 6, row 2): as ``lstm3d`` with GRU layers."""
    return CnnRnn(cfg, smri=False, cell="gru")
