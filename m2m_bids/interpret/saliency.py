"""Gradient saliency: a model-agnostic view of which voxels (and frames) drive the predicted class.

Co-attention exists only in the fusion models; the baselines (SwiFT-EF/LF, CNN-LSTM, ...) have
none. The gradient of the predicted class logit with respect to the input (Simonyan et al. 2014)
works for every differentiable ``--arch``. Its absolute value is taken (both signs mean "this
voxel matters") and the maps are smoothed later (gradients are speckled at voxel scale, and the
model itself sees patches, not voxels).

The vanilla gradient is the default, not input x gradient (Shrikumar et al. 2017, available as an
option): our inputs are intensity-normalised, so atrophied tissue has values near zero and input x
gradient erases exactly the voxels that carry the effect. On the planted-atrophy test data the
vanilla gradient puts both planted regions first of 64; input x gradient does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

#: Modalities that are images (saliency maps); tabular features get per-feature scores instead.
IMAGE_MODALITIES = ("fmri", "smri")
#: The modality a per-run cache map input is explained as (its saliency map is named after it).
MAP_MODALITY = {"gm": "smri", "falff": "fmri", "alff": "fmri", "bold_mean": "fmri", "pet": "pet"}


@dataclass
class SaliencyResult:
    """Absolute attributions of one batch, summed over its windows.

    ``spatial[m]``: ``(X, Y, Z)`` per image modality (fMRI summed over frames);
    ``temporal``: ``(W, T)`` fMRI attribution per window and frame (summed over space);
    ``tabular``: ``(K,)`` per tabular feature.
    """

    spatial: dict[str, np.ndarray] = field(default_factory=dict)
    temporal: np.ndarray | None = None
    tabular: np.ndarray | None = None


def input_gradient(model: nn.Module, inputs: Mapping[str, torch.Tensor], target: int,
                   method: str = "gradient") -> SaliencyResult:
    """Attributions of the ``target`` class logit to every input of one batch of windows.

    ``inputs`` are the keyword arguments of the model's forward (``fmri (B,1,X,Y,Z,T)``,
    ``smri (B,1,X,Y,Z,1)``, ``tabular (B,K)``). ``method`` is ``"input_x_gradient"`` or
    ``"gradient"`` (vanilla). The model's parameters are not updated and their gradients are not kept.
    """
    if method not in ("input_x_gradient", "gradient"):
        raise ValueError(f"saliency method must be 'input_x_gradient' or 'gradient', not {method!r}")
    leaves = {k: v.detach().float().requires_grad_(True) for k, v in inputs.items()}
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            out = model(**leaves)
            out.logits[:, target].sum().backward()
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
    result = SaliencyResult()
    for name, leaf in leaves.items():
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        attribution = (grad * leaf if method == "input_x_gradient" else grad).abs().detach()
        if name == "tabular":
            result.tabular = attribution.sum(0).cpu().numpy()
            continue
        if attribution.ndim == 5:  # a static map (B, 1, X, Y, Z), e.g. the GM map read as the sMRI input
            result.spatial[MAP_MODALITY.get(name, name)] = attribution[:, 0].sum(0).cpu().numpy()
            continue
        vol = attribution[:, 0]  # (B, X, Y, Z, T)
        result.spatial[name] = vol.sum(dim=(0, 4)).cpu().numpy()
        if name == "fmri":
            result.temporal = vol.sum(dim=(1, 2, 3)).cpu().numpy()  # (B, T)
    return result
