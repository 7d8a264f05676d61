"""Siamese network with a self-attention mask over atlas regions, after Arco et al., "Enhancing
multimodal patterns in neuroimaging by siamese neural networks with self-attention mechanism"
(papers/siamese-attention_arco.txt, sections 3.2-3.3).

Per atlas region (AAL by default; the atlas arrives on the model grid as a
:class:`~m2m_bids.models.parcellation.Parcellation` built by the data pipeline) the structural map (grey-matter probability ``gm``) and the
functional map (``pet`` when the dataset has PET, else an fMRI-derived map: ``falff`` by default)
are cut to the region's bounding box with every voxel outside the region set to zero, z-scored
across participants, and fed to ONE convolutional branch whose weights are shared by both
modalities (the siamese pair): two 3D convolutions + ReLU, then linear 1024 -> 20. A hinge loss
relates the similarity of the two 20-d embeddings of each region to the label. The embeddings of
all regions are concatenated; an MLP ending in a sigmoid gives a mask of the same size, the masked
embeddings feed a linear classifier. The mask, averaged over each region's features, is the
explanation (``spatial_attention``), painted onto the image grid region by region.

Where the paper is silent or cannot be followed literally (docs/baselines.md, ``siamese``):

- **One branch for all regions.** The paper trains the pair per region (each region has its own
  crop size); 120 separate ``... -> 1024`` branches do not fit in memory, so one branch is shared
  by every region and both modalities. Region identity is kept by the position of each region's
  embedding in the concatenation the attention MLP and the classifier read.
- **Fixed box, zero padding, no resampling.** Every region is cut as a box of the size of the
  largest kept region's bounding box (per axis), centred on its own bounding box; voxels outside
  the region are zero as in the paper. Resampling every region to a common size would give each
  region a different voxel scale under the shared convolutions.
- **Standardisation from training participants.** The paper z-scores each region with the mean
  and standard deviation of all participants' voxels in it (Eq. 1). Here the statistics are running
  sums over the in-region voxels of every training batch (a cumulative, not exponential, average),
  so they are those of the training participants; evaluation uses them frozen.
- **Hinge similarity.** ``L = mean_r max(0, 1 - t * y_r)`` with ``y_r = <s_r, f_r>`` the dot product
  of the region's structural and functional embeddings and ``t = +1`` for the first class (the
  reference, e.g. CN: structure and function agree), ``-1`` for every other class.
- **Joint training.** The paper trains the siamese branch first (hinge loss) and the attention
  module + classifier afterwards; here both train together with cross-entropy + ``hinge_weight`` x
  hinge. ``siamese_pretrain_epochs = N > 0`` restores the two stages: epochs ``< N`` train the branch
  with the hinge loss only (the head learns on detached embeddings), later epochs freeze the branch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from m2m_bids.models.config import ModelConfig
from m2m_bids.models.parcellation import Parcellation
from m2m_bids.models.registry import ModelOutput, register_model

log = logging.getLogger(__name__)

#: Maps the functional branch may read (``functional_map``); ``auto`` is resolved by the group run.
FUNCTIONAL_MAPS = ("pet", "falff", "alff", "bold_mean")
STRUCTURAL_MAP = "gm"


@dataclass(frozen=True)
class RegionLayout:
    """Where each kept atlas region sits on the image grid, as flat voxel indices of fixed boxes.

    ``box_index`` ``(R, V)``: the flat grid index of every voxel of region r's box (``V`` = box
    volume); ``in_region`` ``(R, V)``: which of those voxels belong to the region; ``voxel_region``
    ``(X*Y*Z,)``: the kept-region number of every grid voxel (``R`` where none).
    """

    labels: tuple[int, ...]
    names: tuple[str, ...]
    box: tuple[int, int, int]
    box_index: np.ndarray
    in_region: np.ndarray
    voxel_region: np.ndarray


def region_layout(label_grid: np.ndarray, labels: Sequence[int], names: Sequence[str], *,
                  min_voxels: int) -> RegionLayout:
    """Keep the regions with at least ``min_voxels`` voxels and place a common box on each."""
    kept = [(int(i), str(n)) for i, n in zip(labels, names) if int((label_grid == i).sum()) >= min_voxels]
    if not kept:
        raise ValueError(f"siamese: no atlas region has >= {min_voxels} voxels on the {label_grid.shape} grid; "
                         "lower siamese_min_voxels or use a finer grid (preproc.resolution_mm)")
    lows, sizes = [], []
    for index, _ in kept:
        where = np.argwhere(label_grid == index)
        lows.append(where.min(0))
        sizes.append(where.max(0) - where.min(0) + 1)
    box = np.max(sizes, axis=0)
    shape = np.asarray(label_grid.shape)
    offsets = np.stack(np.meshgrid(*[np.arange(b) for b in box], indexing="ij"), -1).reshape(-1, 3)
    box_index, in_region = [], []
    voxel_region = np.full(label_grid.size, len(kept), dtype=np.int64)
    flat_labels = label_grid.ravel()
    for r, ((index, _), low, size) in enumerate(zip(kept, lows, sizes)):
        start = np.clip(low - (box - size) // 2, 0, shape - box)  # centred, inside the grid
        flat = np.ravel_multi_index(tuple((start + offsets).T), label_grid.shape)
        box_index.append(flat)
        in_region.append(flat_labels[flat] == index)
        voxel_region[flat_labels == index] = r
    return RegionLayout(labels=tuple(i for i, _ in kept), names=tuple(n for _, n in kept),
                        box=tuple(int(b) for b in box), box_index=np.stack(box_index),
                        in_region=np.stack(in_region), voxel_region=voxel_region)


class RegionStandardizer(nn.Module):
    """Eq. 1 per region and modality: ``(x - mu) / sigma`` over the in-region voxels of all participants.

    ``mu`` and ``sigma`` come from running float64 sums over every training batch seen (so from the
    training participants only, and saved with the weights); evaluation uses them as they are.
    Voxels outside the region stay zero.
    """

    def __init__(self, n_modalities: int, n_regions: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        for name in ("stat_count", "stat_sum", "stat_sumsq"):
            self.register_buffer(name, torch.zeros(n_modalities, n_regions, dtype=torch.float64))

    def forward(self, crops: torch.Tensor, in_region: torch.Tensor, modality: int) -> torch.Tensor:
        """``crops`` ``(B, R, V)``, ``in_region`` ``(R, V)`` float -> standardised ``(B, R, V)``."""
        if self.training:
            with torch.no_grad():
                x = crops.detach().double() * in_region
                self.stat_count[modality] += in_region.double().sum(-1) * crops.shape[0]
                self.stat_sum[modality] += x.sum((0, 2))
                self.stat_sumsq[modality] += (x * x).sum((0, 2))
        count = self.stat_count[modality].clamp(min=1.0)
        mean = self.stat_sum[modality] / count
        var = (self.stat_sumsq[modality] / count - mean * mean).clamp(min=0.0)
        seen = self.stat_count[modality] > 0  # before any training batch: identity
        mean = torch.where(seen, mean, torch.zeros_like(mean)).to(crops.dtype)
        std = torch.where(seen, (var + self.eps).sqrt(), torch.ones_like(var)).to(crops.dtype)
        return (crops - mean[None, :, None]) / std[None, :, None] * in_region


def conv_out(size: Sequence[int], n_convs: int) -> tuple[int, ...]:
    """Spatial size after ``n_convs`` convolutions with kernel 3, stride 2, padding 1."""
    out = tuple(int(s) for s in size)
    for _ in range(n_convs):
        out = tuple((s - 1) // 2 + 1 for s in out)
    return out


class SiameseBranch(nn.Module):
    """The shared branch (paper Fig. 2): ``[conv3d_s2 + ReLU] x n -> linear 1024 + ReLU -> linear 20``.

    The paper gives two convolutions with ReLU and linear layers of 1024 and 20 units, not the
    kernels, strides or widths: kernels are 3^3 with stride 2 (the flatten before the 1024-unit
    layer stays small), widths are ``siamese_channels``. A ReLU separates the two linear layers
    (without it they would collapse into one).
    """

    def __init__(self, box: Sequence[int], channels: Sequence[int], hidden: int, embed: int) -> None:
        super().__init__()
        if not channels:
            raise ValueError("siamese_channels must list at least one convolution width")
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [nn.Conv3d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        grid = conv_out(box, len(channels))
        self.convs = nn.Sequential(*layers, nn.Flatten(1))
        self.fc = nn.Sequential(nn.Linear(c_in * int(np.prod(grid)), hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, embed))
        for layer in self.modules():  # He init: a region fills a few % of its box, so PyTorch's default
            if isinstance(layer, (nn.Conv3d, nn.Linear)):  # (gain 1/sqrt(3) per layer) leaves the
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")  # embeddings ~constant
                nn.init.zeros_(layer.bias)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """``(N, 1, *box)`` region crops -> ``(N, embed)`` embeddings."""
        return self.fc(self.convs(crops))


def hinge_similarity_loss(structural: torch.Tensor, functional: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 2, ``max(0, 1 - t * y)`` averaged over samples and regions.

    ``structural``/``functional`` are ``(B, R, E)`` region embeddings; ``y = <s_r, f_r>``; ``t = +1``
    for class 0 (the first of ``--classes``, the reference group), ``-1`` for every other class.
    """
    similarity = (structural * functional).sum(-1)  # (B, R)
    target = torch.where(labels == 0, 1.0, -1.0).to(similarity.dtype)[:, None]
    return F.relu(1.0 - target * similarity).mean()


class SiameseAttention(nn.Module):
    """Region crops -> shared siamese branch -> hinge loss + sigmoid attention mask -> classifier."""

    def __init__(self, cfg: ModelConfig, parcellation: Parcellation) -> None:
        super().__init__()
        self.config = cfg
        if tuple(parcellation.labels.shape) != tuple(cfg.img_size):
            raise ValueError(f"siamese: the parcellation's grid {tuple(parcellation.labels.shape)} is not the "
                             f"model's img_size {tuple(cfg.img_size)}")
        if cfg.functional_map == "auto":
            raise ValueError("siamese: functional_map 'auto' must be resolved before the model is built "
                             "(the group run picks 'pet' when every cache entry has PET, else 'falff'); "
                             f"pass one of {list(FUNCTIONAL_MAPS)}")
        if cfg.functional_map not in FUNCTIONAL_MAPS:
            raise ValueError(f"siamese: functional_map {cfg.functional_map!r} invalid; choose 'auto' or one of "
                             f"{list(FUNCTIONAL_MAPS)}")
        if cfg.hinge_weight < 0 or cfg.siamese_pretrain_epochs < 0 or cfg.siamese_min_voxels < 1:
            raise ValueError("siamese: hinge_weight and siamese_pretrain_epochs must be >= 0 and "
                             f"siamese_min_voxels >= 1 (got {cfg.hinge_weight}, {cfg.siamese_pretrain_epochs}, "
                             f"{cfg.siamese_min_voxels})")
        #: What the data pipeline feeds: the two cache maps, no fMRI windows / T1w / tabular row.
        self.input_maps = (STRUCTURAL_MAP, cfg.functional_map)
        self.input_modalities: tuple[str, ...] = ()
        log.info("siamese reads the %s and %s cache maps only (not the modalities %s)", STRUCTURAL_MAP,
                 cfg.functional_map, list(cfg.modalities))
        layout = region_layout(parcellation.labels.cpu().numpy(), parcellation.indices, parcellation.names,
                               min_voxels=cfg.siamese_min_voxels)
        self.region_labels, self.region_names, self.box = layout.labels, layout.names, layout.box
        n_regions, embed = len(layout.labels), cfg.siamese_embed
        self.register_buffer("box_index", torch.from_numpy(layout.box_index), persistent=False)
        self.register_buffer("in_region", torch.from_numpy(layout.in_region.astype(np.float32)), persistent=False)
        self.register_buffer("voxel_region", torch.from_numpy(layout.voxel_region), persistent=False)
        self.standardize = RegionStandardizer(2, n_regions)
        self.branch = SiameseBranch(layout.box, cfg.siamese_channels, cfg.siamese_hidden, embed)
        width = 2 * n_regions * embed  # [structural regions | functional regions] x embed
        self.attention = nn.Sequential(nn.Linear(width, cfg.siamese_attention_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(cfg.siamese_attention_hidden, width), nn.Sigmoid())
        self.classifier = nn.Linear(width, cfg.num_classes)
        self.stage = "joint"

    def on_epoch_start(self, epoch: int) -> None:
        """Two-stage schedule of the paper when ``siamese_pretrain_epochs > 0`` (see the module docstring)."""
        n = self.config.siamese_pretrain_epochs
        self.stage = "joint" if n == 0 else ("siamese" if epoch < n else "head")

    def region_crops(self, volume: torch.Tensor | None, name: str, modality: int) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` map -> standardised region boxes ``(B, R, V)``."""
        size = tuple(self.config.img_size)
        if volume is None:
            raise ValueError(f"siamese needs the cache map {name!r} but it was not given")
        if volume.ndim != 5 or volume.shape[1] != 1 or tuple(volume.shape[2:]) != size:
            raise ValueError(f"siamese: {name} must be (B, 1, {', '.join(map(str, size))}), got {tuple(volume.shape)}")
        flat = volume.flatten(1)  # (B, X*Y*Z)
        crops = flat[:, self.box_index.reshape(-1)].reshape(flat.shape[0], *self.box_index.shape)
        return self.standardize(crops, self.in_region, modality)

    def paint(self, region_scores: torch.Tensor) -> torch.Tensor:
        """``(B, R)`` scores -> ``(B, X, Y, Z)`` region-constant map summing to 1 per sample."""
        padded = torch.cat([region_scores, region_scores.new_zeros(region_scores.shape[0], 1)], dim=1)
        volume = padded[:, self.voxel_region]
        volume = volume / volume.sum(-1, keepdim=True).clamp(min=torch.finfo(volume.dtype).tiny)
        return volume.reshape(-1, *self.config.img_size)

    def forward(self, *, gm: torch.Tensor | None = None, falff: torch.Tensor | None = None,
                alff: torch.Tensor | None = None, bold_mean: torch.Tensor | None = None,
                pet: torch.Tensor | None = None, fmri: torch.Tensor | None = None,
                smri: torch.Tensor | None = None, tabular: torch.Tensor | None = None) -> ModelOutput:
        maps = {"falff": falff, "alff": alff, "bold_mean": bold_mean, "pet": pet}
        crops = torch.stack([self.region_crops(gm, STRUCTURAL_MAP, 0),
                             self.region_crops(maps[self.config.functional_map], self.config.functional_map, 1)], 1)
        b, _, r, _ = crops.shape  # (B, 2, R, V): both modalities of every region through one branch
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage != "head"):  # frozen in stage 2
            embeddings = self.branch(crops.reshape(b * 2 * r, 1, *self.box)).reshape(b, 2, r, -1)
        # Two-stage schedule: cross-entropy does not reach the branch.
        flat = (embeddings if self.stage == "joint" else embeddings.detach()).flatten(1)  # (B, 2*R*E)
        mask = self.attention(flat)
        logits = self.classifier(flat * mask)
        region_mask = mask.reshape(b, 2, r, -1).mean(-1)  # (B, 2, R): the paper's region/modality relevance
        structural, functional = embeddings[:, 0], embeddings[:, 1]
        label_loss = None
        if self.stage != "head" and self.config.hinge_weight > 0:
            weight = self.config.hinge_weight

            def label_loss(labels: torch.Tensor) -> torch.Tensor:
                return weight * hinge_similarity_loss(structural, functional, labels)

        func = "pet" if self.config.functional_map == "pet" else "fmri"  # what the explanation is named after
        return ModelOutput(logits=logits, label_loss=label_loss,
                           spatial_attention={"smri": self.paint(region_mask[:, 0]),
                                              func: self.paint(region_mask[:, 1])},
                           latents={"smri": structural.flatten(1), func: functional.flatten(1)})


@register_model("siamese", tiled=False, parcellation=True)
def siamese(cfg: ModelConfig, parcellation: Parcellation) -> nn.Module:
    """Siamese GM/functional-map network with a region attention mask (Arco et al.) over the regions
    of ``parcellation`` (``cfg.atlas`` on the model grid)."""
    return SiameseAttention(cfg, parcellation)
