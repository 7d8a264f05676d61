"""Helpers of the reliability suite: run the real command line and check what a user would see."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from m2m_bids.cli.app import main


@dataclass(frozen=True)
class Outcome:
    """Exit code and console output of one in-process ``m2m`` call."""

    code: int
    err: str
    out: str


@pytest.fixture
def m2m(capsys: pytest.CaptureFixture[str]):
    """``m2m(*args)`` runs the app like the console script; asserts no traceback reached the console."""

    def call(*args: str | Path) -> Outcome:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]
        return Outcome(int(done.value.code or 0), captured.err, captured.out)

    return call


@pytest.fixture(scope="session")
def small_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two participants of the ``tiny`` synthetic preset (never written to by the tests)."""
    from m2m_bids.synth import SynthSpec, generate_dataset

    root = tmp_path_factory.mktemp("reliability") / "bids"
    return generate_dataset(root, SynthSpec.preset("tiny", n_participants=2, classes=("CN", "AD"), seed=5))
