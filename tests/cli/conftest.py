"""A tiny synthetic BIDS dataset shared by the command-line tests (written once per session)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from m2m_bids.synth import SynthSpec, generate_dataset


@pytest.fixture(scope="session")
def tiny_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four participants (2 CN, 2 AD) of the ``tiny`` synthetic preset."""
    root = tmp_path_factory.mktemp("cli") / "bids"
    return generate_dataset(root, SynthSpec.preset("tiny", n_participants=4, classes=("CN", "AD"), seed=3))


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[Path], str]:
    """Hash of every path, mode and content below a folder: any write into it changes the digest."""
    return _tree_digest


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()
