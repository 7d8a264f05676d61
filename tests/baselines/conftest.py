"""Fixtures for the baseline tests: one torch thread and a real tensor cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2m_bids.preproc.cache import TensorCache


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread is much faster than two under contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache(tmp_path: Path) -> TensorCache:
    return TensorCache(tmp_path / "cache")
