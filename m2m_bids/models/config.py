"""Architecture configuration shared by every model in the registry.

One flat, frozen dataclass keeps the model reproducible from a model card: ``model_info`` dumps it
and ``create_model(**config)`` rebuilds the same network. Presets are named bundles of overrides;
an unknown override is an error that lists the valid keys (a typo must never fall back silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODALITIES = ("fmri", "smri", "tabular")
#: Static per-run maps of the tensor cache a model may read (``input_maps``): grey-matter
#: probability, fractional / absolute amplitude of low-frequency fluctuations, mean BOLD, PET.
MAP_INPUTS = ("gm", "falff", "alff", "bold_mean", "pet")
WEIGHTINGS = ("none", "dot", "cosine", "kl", "jsd", "mmd")

#: Named bundles of overrides. ``paper`` is the configuration that reproduces Table IV of the paper
#: (96^3 MNI grid at 2 mm, patch 6, 128 frames), with activation checkpointing: without it a
#: 128-frame window saves ~1.6 GiB (bf16) to 2.8 GiB (fp32) of activations per sample, so batch 32
#: does not fit an 80 GB card. ``tiny`` is for tests and smoke runs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {"patch_size": 6, "grad_checkpointing": True},
    "tiny": {
        "embed_dim": 8,
        "depths": (1, 1),
        "num_heads": (1, 2),
        "window_size": (2, 2, 2, 2),
        "first_window_size": (2, 2, 2, 2),
        "fusion_heads": 1,
        "cnn_channels": (4, 4),
        "cnn_dense": 16,
        "frame_channels": (2, 2),
        "rnn_hidden": 8,
        "fusion_hidden": 16,
        "masan_width": 4,  # MASAN: 16^3 grid -> 4^3 regions -> two downsamplings -> 1^3 codes
        "masan_downsamplings": 2,
        "masan_code_channels": 8,
        "masan_groups": 2,
        "masan_hidden": 16,
        "siamese_channels": (2, 4),  # siamese: shared branch 2 -> 4 channels, 16 -> 4 -> mask 16
        "siamese_hidden": 16,
        "siamese_embed": 4,
        "siamese_attention_hidden": 16,
    },
    "swift4": {  # the SwiFT reference default: 4 stages [2,2,6,2], global attention in the last
        "depths": (2, 2, 6, 2),
        "num_heads": (3, 6, 12, 24),
        "window_size": (4, 4, 4, 4),
        "first_window_size": (4, 4, 4, 4),
        "last_layer_full_msa": True,
    },
}


@dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of the encoders, the fusion and the alignment loss.

    Defaults follow docs/models.md: a 3-stage SwiFT (embed 24 -> 48 -> 96, depths 2,2,2, windows
    2^4 in stage 1 and 4^4 after) and the M2M-AlignNet fusion with all of Table II switched on.
    """

    arch: str = "m2m"
    num_classes: int = 2
    img_size: tuple[int, int, int] = (64, 64, 64)
    frames: int = 20
    n_tabular: int = 0
    modalities: tuple[str, ...] = MODALITIES
    # --- SwiFT encoder -------------------------------------------------------------------------
    patch_size: int = 4
    embed_dim: int = 24
    depths: tuple[int, ...] = (2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12)
    window_size: tuple[int, int, int, int] = (4, 4, 4, 4)
    first_window_size: tuple[int, int, int, int] = (2, 2, 2, 2)
    c_multiplier: int = 2
    mlp_ratio: float = 4.0
    last_layer_full_msa: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    sdpa_max_batch: int = 65535
    # --- fusion (paper section III-C) ----------------------------------------------------------
    fusion_heads: int = 1
    latent_init_std: float = 0.02
    spatial_fusion: bool = True
    spatial_per_frame: bool = True
    spatial_latents: str = "patch"
    temporal_fusion: bool = True
    refinement: bool = True
    tabular_tokens: str = "single"
    head_hidden: int = 4
    # --- M2M alignment (paper section III-D) ---------------------------------------------------
    alignment: bool = True
    weighting: str = "dot"
    temperature: float = 0.1
    weight_gamma: float = 0.5
    divergence_temperature: float = 1.0
    align_normalize: bool = True
    align_symmetric: bool = False
    align_include_positive: bool = False
    align_time_reduction: str = "mean"
    align_projection: bool = False
    # --- CNN-RNN baselines (Kujur & Monfared 2026; models/baselines/cnn_rnn.py) -----------------
    cnn_channels: tuple[int, ...] = (32, 32)
    cnn_dense: int = 128
    frame_channels: tuple[int, ...] = (16, 16)
    rnn_hidden: int = 32
    rnn_layers: int = 3
    fusion_hidden: int = 64
    head_dropout: float = 0.1
    # --- MASAN (Zong et al.; models/baselines/masan.py) ------------------------------------------
    masan_regions: int = 4
    masan_width: int = 32
    masan_downsamplings: int = 3
    masan_code_channels: int = 64
    masan_groups: int = 8
    masan_hidden: int = 64
    recon_weight_smri: float = 0.5
    recon_weight_fmri: float = 0.5
    sparsity_weight: float = 0.01
    ae_pretrain_epochs: int = 0
    # --- siamese (Arco et al.; models/baselines/siamese.py) -------------------------------------
    functional_map: str = "auto"
    atlas: str = "aal"
    grid_affine: tuple[float, ...] = ()
    siamese_min_voxels: int = 8
    siamese_channels: tuple[int, ...] = (8, 16)
    siamese_hidden: int = 1024
    siamese_embed: int = 20
    siamese_attention_hidden: int = 256
    hinge_weight: float = 1.0
    siamese_pretrain_epochs: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def out_dim(self) -> int:
        """Channels of the last encoder stage (96 by default: the paper's last '96')."""
        return self.embed_dim * self.c_multiplier ** (self.num_stages - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists) that ``create_model(**d)`` accepts."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def valid_keys() -> list[str]:
    return sorted(f.name for f in dataclasses.fields(ModelConfig)) + ["preset"]


_TUPLE_FIELDS = {"img_size", "modalities", "depths", "num_heads", "window_size", "first_window_size",
                 "cnn_channels", "frame_channels", "grid_affine", "siamese_channels"}


def build_config(arch: str, overrides: Mapping[str, Any]) -> ModelConfig:
    """Resolve ``preset`` then explicit overrides into a validated :class:`ModelConfig`."""
    overrides = dict(overrides)
    unknown = sorted(set(overrides) - set(valid_keys()))
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    preset = overrides.pop("preset", None) or "default"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    merged: dict[str, Any] = {**PRESETS[preset], **overrides, "arch": arch}
    for key in _TUPLE_FIELDS & set(merged):
        value = merged[key]
        merged[key] = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
    if isinstance(merged.get("img_size"), int):
        merged["img_size"] = (merged["img_size"],) * 3
    if "tabular" in merged.get("modalities", MODALITIES) and not merged.get("n_tabular", 0):
        # The default modality set names tabular; without columns it is simply absent.
        merged["modalities"] = tuple(m for m in merged.get("modalities", MODALITIES) if m != "tabular")
    return ModelConfig(**merged)


def _validate(cfg: ModelConfig) -> None:
    bad_mods = [m for m in cfg.modalities if m not in MODALITIES]
    if bad_mods or not cfg.modalities:
        raise ValueError(f"modalities {list(cfg.modalities)} invalid; choose from {list(MODALITIES)}")
    if "tabular" in cfg.modalities and cfg.n_tabular < 1:
        raise ValueError("modality 'tabular' needs n_tabular >= 1 (number of tabular features)")
    if len(cfg.num_heads) != len(cfg.depths):
        raise ValueError(f"num_heads {cfg.num_heads} must have one entry per stage (depths {cfg.depths})")
    if cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {cfg.weighting!r} invalid; choose from {list(WEIGHTINGS)}")
    if cfg.spatial_latents not in ("patch", "joint"):
        raise ValueError("spatial_latents must be 'patch' (one latent per patch) or 'joint' "
                         "(one per joint token, the paper's 'dimension as L_joint')")
    if cfg.tabular_tokens not in ("single", "per_feature"):
        raise ValueError("tabular_tokens must be 'single' or 'per_feature'")
    if cfg.weight_gamma <= 0 or cfg.divergence_temperature <= 0 or cfg.temperature <= 0:
        raise ValueError(f"temperature ({cfg.temperature}), weight_gamma ({cfg.weight_gamma}) and "
                         f"divergence_temperature ({cfg.divergence_temperature}) must be > 0")
    if cfg.align_time_reduction not in ("mean", "sum"):
        raise ValueError("align_time_reduction must be 'mean' or 'sum'")
    if cfg.frames < 1 or cfg.num_classes < 1:
        raise ValueError(f"frames ({cfg.frames}) and num_classes ({cfg.num_classes}) must be >= 1")


def stage_grids(cfg: ModelConfig) -> list[tuple[int, int, int]]:
    """Spatial token grid of every stage (patch embedding, then halved by each merge)."""
    grid = tuple(s // cfg.patch_size for s in cfg.img_size)
    grids = []
    for _ in range(cfg.num_stages):
        grids.append(grid)
        grid = tuple(g // 2 for g in grid)
    return grids  # type: ignore[return-value]


def check_divisible(cfg: ModelConfig) -> None:
    """Fail early, naming the sizes, when the image cannot be tiled by patches, merges and windows.

    Only archs that cut the image into patches and windows need it; the registry knows which
    (``register_model(name, tiled=...)``, :func:`m2m_bids.models.registry.model_config`)."""
    factor = cfg.patch_size * 2 ** (cfg.num_stages - 1)
    if any(s % factor for s in cfg.img_size):
        raise ValueError(
            f"img_size {tuple(cfg.img_size)} is not divisible by patch_size {cfg.patch_size} x "
            f"2^(stages-1) = {factor}; crop/pad the image to a multiple of {factor} per axis")
    for i, grid in enumerate(stage_grids(cfg)):
        win = cfg.first_window_size if i == 0 else cfg.window_size
        for axis, (g, w) in enumerate(zip(grid, win[:3])):
            if g > w and g % w:
                raise ValueError(
                    f"stage {i} token grid {grid} is not divisible by window {win[:3]} on axis {axis} "
                    f"(img_size {tuple(cfg.img_size)}, patch_size {cfg.patch_size}); choose an "
                    f"img_size that is a multiple of patch_size x 2^stage x window")

