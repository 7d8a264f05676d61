"""Typed records that carry one participant's raw inputs from the BIDS layer to preprocessing.

The BIDS layer (pybids queries, validation) fills these; the preprocessing consumes them and never
queries the dataset itself. Paths are absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BoldRun:
    """One 4D BOLD run with its (inherited) sidecar metadata.

    ``entities`` holds the BIDS entities of the file (``subject``, ``session``, ``task``, ``run``,
    ``acquisition`` ...) so derivatives can be named after their source.
    """

    path: Path
    entities: dict[str, str]
    metadata: dict[str, Any]
    n_volumes: int
    repetition_time: float

    @property
    def slice_timing(self) -> list[float] | None:
        """``SliceTiming`` in seconds, or ``None`` when the sidecar has none."""
        value = self.metadata.get("SliceTiming")
        return [float(v) for v in value] if value else None


@dataclass(frozen=True)
class PetImage:
    """One PET image (3D, or 4D frames) with its sidecar metadata; optional in every session."""

    path: Path
    entities: dict[str, str]
    metadata: dict[str, Any]

    @property
    def frame_durations(self) -> list[float] | None:
        """``FrameDuration`` in seconds (weights of the frame average), or ``None`` when absent."""
        value = self.metadata.get("FrameDuration")
        if value is None:
            return None
        return [float(v) for v in (value if isinstance(value, list) else [value])]


@dataclass(frozen=True)
class SessionInputs:
    """The T1w, BOLD runs and optional PET of one session (``session`` is ``None`` for
    single-session datasets).

    ``no_bold`` says why a session has no usable BOLD run (missing, too short, ...): such a session
    is kept, T1w only, when the model needs no fMRI (``--modalities smri tabular``).
    """

    session: str | None
    t1w: Path
    bold_runs: tuple[BoldRun, ...]
    t1w_entities: dict[str, str] = field(default_factory=dict)
    pet: PetImage | None = None
    no_bold: str | None = None

    @property
    def fmri_absent(self) -> bool:
        """Whether the session brings no BOLD run (its cache entry holds the T1w alone)."""
        return not self.bold_runs


@dataclass(frozen=True)
class ParticipantInputs:
    """Everything the pipeline needs about one participant, plus their participants.tsv row."""

    label: str
    sessions: tuple[SessionInputs, ...]
    phenotype: dict[str, Any] = field(default_factory=dict)

    @property
    def subject_id(self) -> str:
        return f"sub-{self.label}"
