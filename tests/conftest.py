"""Shared pytest fixtures (generic ones; area-specific fixtures live next to their tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from m2m_bids.preproc.cache import TensorCache
from m2m_bids.testing import make_bids_dataset


@pytest.fixture(autouse=True)
def one_thread():
    """CI runs two test workers on two cores: one torch thread each (two threads per worker under
    contention made tiny training steps ~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache(tmp_path: Path) -> TensorCache:
    """An empty tensor cache in the test's own folder."""
    return TensorCache(tmp_path / "cache")


@pytest.fixture
def bids_skeleton(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``bids_skeleton({"01": None, "02": None}, name="ds", participants=...)`` -> dataset root."""

    def build(subjects: dict[str, Any], name: str = "bids", **kwargs: Any) -> Path:
        return make_bids_dataset(tmp_path / name, subjects, **kwargs)

    return build
