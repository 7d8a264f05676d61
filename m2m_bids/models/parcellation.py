"""An atlas on a model's image grid, handed to models that read brain regions.

Models import torch alone and read no files: the data pipeline
(:func:`m2m_bids.model_inputs.atlas.parcellation`) loads the configured atlas, resamples it onto
the cache grid and passes it to the model's constructor as this tensor-backed record.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Parcellation:
    """``labels`` ``(X, Y, Z)`` integer tensor: the atlas index of every grid voxel (0: none);
    ``indices`` and ``names``: the atlas regions, in the atlas's order."""

    labels: torch.Tensor
    indices: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.labels.ndim != 3 or self.labels.is_floating_point():
            raise ValueError(f"a parcellation's labels must be an (X, Y, Z) integer tensor, got "
                             f"{tuple(self.labels.shape)} {self.labels.dtype}")
        if len(self.indices) != len(self.names):
            raise ValueError(f"a parcellation needs one name per region index ({len(self.indices)} indices, "
                             f"{len(self.names)} names)")
