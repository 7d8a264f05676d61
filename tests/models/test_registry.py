"""What the model registry knows about each arch: a tiled arch (patches and windows) refuses a grid
that does not divide, an untiled one (convolutional, recurrent) takes any grid."""

from __future__ import annotations

import pytest

from m2m_bids.models import list_models, model_config

ODD_GRID = {"preset": "tiny", "img_size": (20, 16, 16), "frames": 4, "num_classes": 2, "modalities": ("fmri",)}


@pytest.mark.parametrize("arch", ["m2m", "swift", "swift-ef", "swift-lf"])
def test_tiled_archs_refuse_a_grid_that_does_not_divide(arch: str) -> None:
    with pytest.raises(ValueError, match=r"img_size \(20, 16, 16\) is not divisible"):
        model_config(arch, ODD_GRID)


@pytest.mark.parametrize("arch", ["cnn-lstm", "cnn-gru", "cnn3d", "lstm3d", "gru3d", "masan", "siamese"])
def test_untiled_archs_take_any_grid(arch: str) -> None:
    assert model_config(arch, ODD_GRID).img_size == (20, 16, 16)


def test_every_registered_arch_is_covered_and_unknown_ones_are_named() -> None:
    assert len(list_models()) == 11
    with pytest.raises(ValueError, match="unknown arch 'resnet'"):
        model_config("resnet", ODD_GRID)
