"""Shared pytest fixtures (generic ones; area-specific fixtures live next to their tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m2m_bids.testing import make_bids_dataset


@pytest.fixture
def bids_skeleton(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``bids_skeleton({"01": None, "02": None}, name="ds", participants=...)`` -> dataset root."""

    def build(subjects: dict[str, Any], name: str = "bids", **kwargs: Any) -> Path:
        return make_bids_dataset(tmp_path / name, subjects, **kwargs)

    return build
