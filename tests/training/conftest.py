"""Fixtures for the training tests: a tiny RunConfig (one torch thread and the cache come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from run_config import tiny_config


@pytest.fixture
def make_config(tmp_path: Path):
    """Factory of tiny RunConfigs (``root``: folder for bids/out; ``train`` overrides Train fields)."""
    return lambda root=None, **train: tiny_config(root or tmp_path, **train)
