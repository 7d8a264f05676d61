"""Class-discriminative attention rollout and the brain mask the maps are restricted to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m2m_bids.interpret.brainmask import T1W_MASK, brain_mask, template_mask
from m2m_bids.interpret.relevance import gradient_weighted_rollout
from m2m_bids.models import create_model

from .synthetic import AFFINE, GRID, make_arrays

IMG = (16, 16, 16)


def _model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("m2m", num_classes=3, img_size=IMG, frames=3, modalities=("fmri", "smri"),
                        preset="tiny", patch_size=2, **overrides)


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"fmri": torch.randn(2, 1, *IMG, 3, generator=g), "smri": torch.randn(2, 1, *IMG, 1, generator=g)}


def test_rollout_gives_one_normalised_map_per_class_and_leaves_the_model_alone():
    model = _model().train()
    rollout = gradient_weighted_rollout(model, _inputs())
    assert rollout is not None and set(rollout.maps) == {"fmri", "smri"}
    for m, maps in rollout.maps.items():
        assert maps.shape == (2, 3, 4, 4, 4) and (maps >= 0).all()
        np.testing.assert_allclose(maps.sum(axis=(2, 3, 4)), 1.0, rtol=1e-5)
        assert ((rollout.routed[m] >= 0) & (rollout.routed[m] <= 1)).all()
        assert not np.allclose(maps[:, 0], maps[:, 1])  # class-discriminative: each class its own map
    assert model.training and all(p.grad is None for p in model.parameters())


def test_rollout_moves_with_the_gradient_weighted_co_attention():
    """Silencing the co-attention path (zero output projection) leaves only the residual term."""
    model = _model()
    with torch.no_grad():
        for m in ("fmri", "smri"):
            model.cross[m].out.weight.zero_()
            model.cross[m].out.bias.zero_()
    rollout = gradient_weighted_rollout(model, _inputs())
    assert rollout is not None
    for m in ("fmri", "smri"):
        np.testing.assert_allclose(rollout.routed[m], 0.0, atol=1e-6)


def test_no_rollout_without_co_attention():
    assert gradient_weighted_rollout(_model(spatial_fusion=False), _inputs()) is None
    swift = create_model("swift", num_classes=2, img_size=IMG, frames=3, modalities=("fmri", "smri"),
                         preset="tiny", patch_size=2)
    assert gradient_weighted_rollout(swift, _inputs()) is None


class _Entry:
    """A cache entry holding only the named tensors (the real CacheEntry raises KeyError likewise)."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors

    def load(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise KeyError(name)
        return self.tensors[name]


def test_brain_mask_prefers_the_entry_masks_and_falls_back_to_the_template(tmp_path: Path):
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import EntryMeta

    arrays = make_arrays(np.random.default_rng(0), 1, 3)
    run_mask = np.zeros((GRID,) * 3, np.uint8)
    run_mask[2:14, 2:14, 2:14] = 1
    entry = TensorCache(tmp_path).put("ab" * 32, {**arrays, "mask": run_mask}, EntryMeta(participant="01"))
    shape = (GRID,) * 3
    template = template_mask(shape, AFFINE)
    assert template[8, 8, 8] and not template.all()  # the brain, not the whole 96 mm box
    np.testing.assert_array_equal(brain_mask(entry, "fmri", shape, AFFINE), run_mask > 0)
    np.testing.assert_array_equal(brain_mask(entry, "smri", shape, AFFINE), template)  # no T1w mask cached
    t1w = np.zeros(shape, np.uint8)
    t1w[4:12, 4:12, 4:12] = 1
    np.testing.assert_array_equal(brain_mask(_Entry({T1W_MASK: t1w}), "smri", shape, AFFINE), t1w > 0)


@pytest.mark.parametrize("modality", ["smri", "fmri"])
def test_brain_mask_of_the_wrong_shape_is_not_used(modality: str):
    shape = (GRID,) * 3
    entry = _Entry({T1W_MASK: np.ones((8, 8, 8), np.uint8), "mask": np.ones((8, 8, 8), np.uint8)})
    np.testing.assert_array_equal(brain_mask(entry, modality, shape, AFFINE), template_mask(shape, AFFINE))
