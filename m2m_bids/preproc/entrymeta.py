"""Typed metadata of a tensor-cache entry: :class:`EntryMeta`, read and written only here.

Why a model and not a dict: preprocessing writes an entry's metadata and training, application,
explanation and QC read it, each in another process and often another release. A frozen, versioned
model names every field once, so a reader cannot ask for a key the writer never wrote, and a change of
shape is a new :attr:`EntryMeta.meta_version` with a converter here rather than a silent ``None``
at the far end.

On disk the metadata is the ``meta`` object of the entry's ``manifest.json``
(:func:`to_manifest`, :func:`read_meta`). Entries written before the model existed hold one flat
object (``participant``, ``task``, ``affine``, ``qc``, ... side by side); :func:`read_meta` converts
that layout, so existing caches keep working under the same keys (the tensors did not change).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: The current metadata layout; :func:`read_meta` converts older ones.
META_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Geometry(_Frozen):
    """The output grid the entry's images lie on."""

    affine: tuple[tuple[float, ...], ...] = Field(description="voxel -> template (mm) affine, 4 x 4")
    grid_shape: tuple[int, ...]
    space: str | None = None
    resolution_mm: float

    def matrix(self) -> np.ndarray:
        """The affine as a 4 x 4 float array."""
        return np.asarray(self.affine, dtype=float)


class Provenance(_Frozen):
    """Where the tensors came from and how they were made (checked when a model is applied)."""

    source_t1w: str | None = None
    source_bold: str | None = None
    source_pet: str | None = None
    input: Literal["raw", "fmriprep"] = "raw"
    fmriprep_space: str | None = None
    preproc: dict[str, Any] | None = Field(None, description="every preprocessing setting that changes the tensors")
    params_hash: str | None = None
    version: str | None = Field(None, description="m2m_bids version that wrote the entry")
    created: str | None = Field(None, description="UTC ISO time the entry was written")


class SliceTiming(_Frozen):
    """What slice-timing correction did to the run (a skip carries its reason)."""

    corrected: bool = False
    start_time: float | None = None
    reference_time: float | None = None
    source: str | None = Field(None, description="'fmriprep' when fMRIPrep did the correction")
    warning: str | None = None


class Motion(_Frozen):
    """Head-motion summary of the run (framewise displacement after Power et al.)."""

    mean_fd: float
    max_fd: float
    max_translation_mm: float
    max_rotation_deg: float


class BoldRecord(_Frozen):
    """The BOLD run an entry holds (absent for a T1w-only entry)."""

    task: str | None = None
    run: str | None = None
    entities: dict[str, str] = Field(default_factory=dict)
    repetition_time: float | None = None
    n_volumes: int | None = None
    slice_timing: SliceTiming | None = None
    motion: Motion | None = None


class QCFigures(_Frozen):
    """Registration and coverage QC (:mod:`m2m_bids.preproc.regqc`); ``None`` where the input brings none."""

    template_correlation: float | None = None
    brain_dice: float | None = None
    template_coverage: float | None = None
    bold_t1w_cost: float | None = None
    already_skull_stripped: bool | None = Field(None, description="the T1w came skull-stripped (kept as it was)")
    brain_volume_ml: float | None = None

    def present(self) -> dict[str, float | bool]:
        """The figures that were measured, by name."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class EntryMeta(_Frozen):
    """Everything recorded about one cache entry: one BOLD run (or, without usable BOLD, the T1w
    alone) of one participant/session."""

    meta_version: Literal[1] = META_VERSION
    participant: str
    session: str | None = None
    geometry: Geometry | None = None
    provenance: Provenance = Provenance()
    bold: BoldRecord | None = None
    qc: QCFigures = QCFigures()
    brain_voxels: int | None = Field(None, description="voxels of the entry's mask")
    shapes: dict[str, tuple[int, ...]] = Field(default_factory=dict,
                                               description="tensor shapes, images (X, Y, Z[, T])")
    no_bold: str | None = Field(None, description="why a T1w-only entry has no BOLD (missing, too short, refused)")

    @property
    def affine(self) -> np.ndarray | None:
        """The grid's voxel -> template affine (4 x 4), when the entry records its grid."""
        return self.geometry.matrix() if self.geometry else None

    @property
    def space(self) -> str | None:
        """The template space of the grid (``MNI152NLin2009aSym``), when recorded."""
        return self.geometry.space if self.geometry else None

    @property
    def repetition_time(self) -> float | None:
        """The run's TR in seconds (``None`` for a T1w-only entry)."""
        return self.bold.repetition_time if self.bold else None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The image modalities the entry holds: ``("fmri", "smri")``, or ``("smri",)`` T1w-only."""
        return tuple(m for m in ("fmri", "smri") if m in self.shapes)

    @property
    def task(self) -> str | None:
        """The run's task entity (``None`` for a T1w-only entry)."""
        return self.bold.task if self.bold else None

    @property
    def run(self) -> str | None:
        """The run's run entity (``None`` for a T1w-only entry or a single run)."""
        return self.bold.run if self.bold else None


def evolve(meta: EntryMeta, **changes: Any) -> EntryMeta:
    """A copy of ``meta`` with ``changes`` (top-level fields; sub-models given whole), validated."""
    return EntryMeta.model_validate({**meta.model_dump(), **{k: _plain(v) for k, v in changes.items()}})


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def to_manifest(meta: EntryMeta) -> dict[str, Any]:
    """The JSON object stored as the manifest's ``meta``."""
    return meta.model_dump(mode="json")


def dumps(meta: EntryMeta) -> str:
    """``meta`` as one JSON string (passed between workflow nodes)."""
    return json.dumps(to_manifest(meta), sort_keys=True)


def read_meta(data: Mapping[str, Any] | str) -> EntryMeta:
    """The metadata stored in a manifest (or a JSON string of it), whatever layout version wrote it."""
    raw = json.loads(data) if isinstance(data, str) else dict(data)
    if "meta_version" not in raw:
        raw = _from_flat(raw)
    return EntryMeta.model_validate(raw)


def slice_timing_from_record(record: Mapping[str, Any]) -> SliceTiming:
    """The slice-timing step's record (BIDS-style keys, :mod:`m2m_bids.preproc.steps`) as a model."""
    return SliceTiming(corrected=bool(record.get("SliceTimingCorrected", False)), start_time=record.get("StartTime"),
                       reference_time=record.get("ReferenceTime"), source=record.get("source"),
                       warning=record.get("warning"))


def _from_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The version-1 layout of the flat object written before :class:`EntryMeta` existed."""
    geometry = None
    if flat.get("affine") is not None:
        affine = np.asarray(flat["affine"], dtype=float)
        images = [shape[:3] for shape in (flat.get("shapes") or {}).values()]
        geometry = {"affine": affine.tolist(), "grid_shape": flat.get("grid_shape") or (images[0] if images else ()),
                    "space": flat.get("space"),
                    "resolution_mm": flat.get("resolution_mm") or float(np.linalg.norm(affine[:3, 0]))}
    provenance = {k: flat.get(k) for k in ("source_t1w", "source_bold", "source_pet", "fmriprep_space", "preproc",
                                           "params_hash", "version", "created")}
    provenance["input"] = flat.get("input") or "raw"
    bold_keys = ("task", "run", "entities", "repetition_time", "n_volumes", "slice_timing", "motion")
    bold = None
    if any(flat.get(k) is not None for k in bold_keys):
        bold = {"task": flat.get("task"), "run": flat.get("run"), "entities": flat.get("entities") or {},
                "repetition_time": flat.get("repetition_time"), "n_volumes": flat.get("n_volumes"),
                "motion": flat.get("motion"),
                "slice_timing": (slice_timing_from_record(flat["slice_timing"]).model_dump()
                                 if flat.get("slice_timing") is not None else None)}
    return {"meta_version": META_VERSION, "participant": str(flat.get("participant", "")),
            "session": flat.get("session"), "geometry": geometry, "provenance": provenance, "bold": bold,
            "qc": flat.get("qc") or {}, "brain_voxels": flat.get("brain_voxels"), "shapes": flat.get("shapes") or {}}
