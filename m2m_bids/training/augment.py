"""Training-time augmentation (``train.augment``) with MONAI transforms plus an fMRI temporal shift.

Following Kujur et al. (papers/cnn-lstm_kujur2026.txt, section 3.2): random 3D rotation and shift
(one affine shared by the T1w and every fMRI frame, so the modalities stay registered), random
intensity scaling and Gaussian noise per modality, and a temporal shift of the fMRI window that
mimics inter-scan misalignment. Random numbers come from torch's generator (seeded per worker by
the DataLoader), so runs are reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import RandAffine, RandGaussianNoise, RandScaleIntensity


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (rotation in radians, shift in voxels, shift in frames)."""

    prob: float = 0.5
    rotate: float = 0.1
    translate: float = 2.0
    scale: float = 0.1
    noise_std: float = 0.05
    max_time_shift: int = 2


class Augmenter:
    """Callable on a sample dict of numpy arrays ``fmri (1,X,Y,Z,T)`` and ``smri (1,X,Y,Z,1)``."""

    def __init__(self, params: AugmentParams | None = None) -> None:
        self.p = params or AugmentParams()
        self.affine = RandAffine(prob=self.p.prob, rotate_range=(self.p.rotate,) * 3,
                                 translate_range=(self.p.translate,) * 3, padding_mode="border")
        self.scale = RandScaleIntensity(factors=self.p.scale, prob=self.p.prob)
        self.noise = RandGaussianNoise(prob=self.p.prob, std=self.p.noise_std)

    def _seed(self) -> None:
        for transform in (self.affine, self.scale, self.noise):
            transform.set_random_state(seed=int(torch.randint(2**31 - 1, ()).item()))

    def __call__(self, sample: dict[str, np.ndarray]) -> dict[str, Any]:
        self._seed()
        out = {k: np.asarray(v, dtype=np.float32) for k, v in sample.items()}
        if "fmri" in out and self.p.max_time_shift > 0:
            out["fmri"] = temporal_shift(out["fmri"], int(torch.randint(-self.p.max_time_shift,
                                                                          self.p.max_time_shift + 1, ()).item()))
        # One affine for all channels: stack T1w, fMRI frames and static maps as channels (C, X, Y, Z).
        parts = [(k, out[k][0] if k in ("smri", "fmri") else out[k][0][..., None]) for k in out if k != "tabular"]
        if parts:
            stacked = np.concatenate([np.moveaxis(v, -1, 0) for _, v in parts], axis=0)
            moved = np.asarray(self.affine(stacked))
            offset = 0
            for key, value in parts:
                n = value.shape[-1]
                block = np.moveaxis(moved[offset:offset + n], 0, -1)[None]
                out[key] = block if key in ("smri", "fmri") else block[..., 0]
                offset += n
        for key in list(out):
            out[key] = np.asarray(self.noise(self.scale(out[key])))
        return out


def temporal_shift(fmri: np.ndarray, shift: int) -> np.ndarray:
    """Shift frames by ``shift`` (positive: later), repeating the edge frame instead of wrapping."""
    if shift == 0:
        return fmri
    t = fmri.shape[-1]
    index = np.clip(np.arange(t) - shift, 0, t - 1)
    return fmri[..., index]
