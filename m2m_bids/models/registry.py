"""timm-style model registry behind ``--arch``: ``register_model``, ``create_model``, ``list_models``.

The registry is a module-level table filled once at import by decorators (read-only afterwards);
nothing else is global. ``model_info`` returns the resolved configuration so that a model card can
rebuild the same network with ``create_model(**info["config"])``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from m2m_bids.models.config import MODALITIES, ModelConfig, build_config, check_divisible
from m2m_bids.models.parcellation import Parcellation

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Registered:
    """A registered arch: its factory, whether it tiles the image into patches and windows (Swin
    encoders: the grid must divide; convolutional and recurrent models take any grid), and whether
    it reads atlas regions (its factory then takes a :class:`Parcellation` after the configuration)."""

    factory: ModelFactory
    tiled: bool
    parcellation: bool = False


_REGISTRY: dict[str, _Registered] = {}


@dataclass
class AttentionGraph:
    """The latent-query fusion's attention tensors as the forward computed them (inside the autograd graph).

    ``spatial``: co-attention of the latents over the joint tokens, per head ``(B, Tp, heads, Nq, Nk)``;
    ``keys[m]``: the slice of its key axis holding modality ``m``'s tokens (row-major over the
    ``(h, w, d)`` grid); ``cross[m]``: attention of modality ``m``'s tokens over the fused latents
    (Eq. 2), ``(B, [Tp,] heads, N_m, Nq)``; ``readout[m]``: the tokens the classifier then reads,
    ``(B, [Tp,] N_m, C)`` (Eq. 2's output); ``residual[m]``: the part of the readout that is the
    modality's own tokens, carried through Eq. 2's residual (``readout - residual`` came through
    the latents).
    """

    spatial: torch.Tensor
    keys: dict[str, slice]
    cross: dict[str, torch.Tensor] = field(default_factory=dict)
    readout: dict[str, torch.Tensor] = field(default_factory=dict)
    residual: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ModelOutput:
    """What every model returns: logits plus what training and interpretation read.

    ``spatial_attention`` maps a modality (``smri``, ``fmri``, ``pet``) to ``(B, h, w, d)`` attention mass on the last-stage
    token grid (mean over queries, heads and frames; each map sums to 1 per sample);
    ``temporal_attention`` is ``(B, T)`` and sums to 1; ``latents`` are pooled ``(B, C)`` embeddings.
    ``attention_graph`` (fusion models only) holds the attention as computed, for class-discriminative
    explanations that differentiate the logits with respect to it.

    Training adds ``align_weight x align_loss`` (the M2M alignment), ``aux_loss`` as it is (a model's
    own label-free terms, already weighted by its configuration: MASAN's reconstruction and sparsity
    losses) and ``label_loss(labels)`` (a term that needs the labels: the siamese hinge loss).
    """

    logits: torch.Tensor
    align_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    label_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    spatial_attention: dict[str, torch.Tensor] = field(default_factory=dict)
    temporal_attention: torch.Tensor | None = None
    latents: dict[str, torch.Tensor] = field(default_factory=dict)
    attention_graph: AttentionGraph | None = None


def input_maps(model: nn.Module) -> tuple[str, ...]:
    """Per-run cache maps (:data:`~m2m_bids.models.config.MAP_INPUTS`) a model reads besides its modalities.

    A model that needs maps sets an ``input_maps`` attribute; the data pipeline then loads those
    cache tensors as ``(B, 1, X, Y, Z)`` and passes them as keyword arguments of ``forward``.
    """
    return tuple(getattr(model, "input_maps", ()))


def input_modalities(model: nn.Module) -> tuple[str, ...]:
    """The modalities the data pipeline feeds the model: fMRI windows, the T1w, the tabular row.

    ``config.modalities`` unless the model narrows it with an ``input_modalities`` attribute (a
    model built on maps, such as the siamese network, reads no fMRI windows: one item per run).
    """
    declared = getattr(model, "input_modalities", None)
    return tuple(model.config.modalities if declared is None else declared)  # type: ignore[attr-defined]


def register_model(name: str, *, tiled: bool = True,
                   parcellation: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make ``fn(cfg) -> nn.Module`` available as ``create_model(name, ...)``.

    ``tiled=False`` for a model that does not cut the image into patches and windows, so any grid
    fits it (no divisibility check). ``parcellation=True`` for a model that reads atlas regions:
    ``fn(cfg, parcellation)`` gets them as a :class:`~m2m_bids.models.parcellation.Parcellation`
    (models read no files; the data pipeline builds it)."""

    def deco(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = _Registered(fn, tiled, parcellation)
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted by ``create_model`` / ``--arch``."""
    return sorted(_REGISTRY)


def model_config(arch: str, overrides: Mapping[str, Any]) -> ModelConfig:
    """The validated configuration ``create_model`` would build (no weights): ``preset`` then
    ``overrides`` (:func:`~m2m_bids.models.config.build_config`), and for a tiled arch the check
    that the image divides into its patches and windows. ValueError names what is wrong."""
    if arch not in _REGISTRY:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list_models()}")
    cfg = build_config(arch, overrides)
    if _REGISTRY[arch].tiled:
        check_divisible(cfg)
    return cfg


def create_config(arch: str, *, num_classes: int, img_size: Sequence[int] | int, frames: int,
                  n_tabular: int = 0, modalities: Sequence[str] = MODALITIES, **overrides: Any) -> ModelConfig:
    """The configuration ``create_model(arch, ...)`` builds from the same arguments (no network)."""
    overrides.pop("params", None)  # tolerate a full model_info dict being splatted back
    return model_config(arch, {**overrides, "num_classes": num_classes, "img_size": img_size,
                               "frames": frames, "n_tabular": n_tabular, "modalities": tuple(modalities)})


def reads_parcellation(arch: str) -> bool:
    """Whether ``create_model(arch, ...)`` needs a ``parcellation`` (the atlas on the model grid)."""
    return arch in _REGISTRY and _REGISTRY[arch].parcellation


def create_model(arch: str, *, parcellation: Parcellation | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model from :func:`create_config`'s arguments (``num_classes``, ``img_size``,
    ``frames``, ``n_tabular``, ``modalities``, and :class:`ModelConfig` fields plus ``preset``).

    Raises ValueError for an unknown arch, an unknown override (listing the valid keys), an image
    size that cannot be tiled by patch x merges x windows (naming the sizes), or a missing
    ``parcellation`` of a model that reads atlas regions (:func:`reads_parcellation`;
    :func:`m2m_bids.model_inputs.atlas.build_model` passes it).
    """
    cfg = create_config(arch, **kwargs)
    entry = _REGISTRY[arch]
    if not entry.parcellation:
        if parcellation is not None:
            raise ValueError(f"{arch} reads no atlas regions; it takes no parcellation")
        model = entry.factory(cfg)
    elif parcellation is None:
        raise ValueError(f"{arch} reads atlas regions: pass its parcellation (the atlas on the model grid), as "
                         "m2m_bids.model_inputs.atlas.build_model does")
    else:
        model = entry.factory(cfg, parcellation)
    model.config = cfg  # type: ignore[assignment]
    return model


def model_info(model: nn.Module) -> dict[str, Any]:
    """``{"arch", "params", "config"}``; ``create_model(**info["config"])`` rebuilds the architecture."""
    cfg: ModelConfig = model.config  # type: ignore[assignment]
    return {"arch": cfg.arch, "params": sum(p.numel() for p in model.parameters()),
            "config": cfg.to_dict()}
