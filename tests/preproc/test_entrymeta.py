"""The typed cache-entry metadata: round trip through the manifest, the old flat layout, immutability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import (META_VERSION, BoldRecord, EntryMeta, Geometry, Motion, Provenance,
                                        QCFigures, SliceTiming, evolve, read_meta, to_manifest)

AFFINE = [[3.0, 0.0, 0.0, -96.0], [0.0, 3.0, 0.0, -132.0], [0.0, 0.0, 3.0, -78.0], [0.0, 0.0, 0.0, 1.0]]

#: What preprocessing wrote before the metadata was typed (one real entry's manifest ``meta``).
FLAT = {
    "participant": "01", "session": None, "task": "rest", "run": "1",
    "entities": {"subject": "01", "task": "rest", "run": "1"}, "repetition_time": 2.0,
    "affine": AFFINE, "grid_shape": [64, 64, 64], "space": "MNI152NLin2009aSym", "resolution_mm": 3.0,
    "preproc": {"fwhm_mm": 6.0}, "params_hash": "ab" * 32, "source_bold": "/d/sub-01_task-rest_run-1_bold.nii.gz",
    "source_t1w": "/d/sub-01_T1w.nii.gz", "version": "0.9.0", "input": "raw", "created": "2026-01-01T00:00:00+00:00",
    "slice_timing": {"SliceTimingCorrected": True, "StartTime": 0.95, "ReferenceTime": 0.95},
    "motion": {"mean_fd": 0.1, "max_fd": 0.4, "max_translation_mm": 0.3, "max_rotation_deg": 0.2},
    "n_volumes": 120, "brain_voxels": 9000,
    "qc": {"template_correlation": 0.8, "brain_dice": 0.95, "template_coverage": 1.0, "bold_t1w_cost": 0.95,
           "already_skull_stripped": False, "brain_volume_ml": 1210.5},
    "shapes": {"fmri": [64, 64, 64, 120], "smri": [64, 64, 64]},
}


def _meta() -> EntryMeta:
    return EntryMeta(
        participant="01", session="2",
        geometry=Geometry(affine=AFFINE, grid_shape=(64, 64, 64), space="MNI152NLin2009aSym", resolution_mm=3.0),
        provenance=Provenance(source_t1w="/d/T1w.nii.gz", source_bold="/d/bold.nii.gz", preproc={"fwhm_mm": 6.0},
                              params_hash="cd" * 32),
        bold=BoldRecord(task="rest", run="1", entities={"subject": "01", "task": "rest"}, repetition_time=2.0,
                        n_volumes=10, slice_timing=SliceTiming(corrected=False, warning="no SliceTiming"),
                        motion=Motion(mean_fd=0.1, max_fd=0.3, max_translation_mm=0.2, max_rotation_deg=0.1)),
        qc=QCFigures(template_correlation=0.81, brain_dice=0.96), brain_voxels=123)


def test_round_trip_through_json_and_the_cache(tmp_path: Path) -> None:
    meta = _meta()
    assert read_meta(json.dumps(to_manifest(meta))) == meta == read_meta(to_manifest(meta))
    tensors = {"fmri": np.zeros((4, 4, 4, 3)), "smri": np.ones((4, 4, 4))}
    entry = TensorCache(tmp_path).put(TensorCache.make_key({}, {"t": 1}), tensors, meta)
    again = TensorCache(tmp_path).get(entry.key)
    assert again is not None and again.meta == entry.meta
    # the cache adds what only it knows, and keeps the rest
    assert again.meta.shapes == {"fmri": (4, 4, 4, 3), "smri": (4, 4, 4)}
    assert again.meta.provenance.created and again.meta.provenance.version
    assert evolve(again.meta, shapes={}, provenance=meta.provenance) == meta
    stored = json.loads((entry.path / "manifest.json").read_text())["meta"]
    assert stored["meta_version"] == META_VERSION and stored["bold"]["task"] == "rest"


def test_old_flat_metadata_is_converted() -> None:
    meta = read_meta(FLAT)
    assert meta.meta_version == META_VERSION and meta.participant == "01" and meta.session is None
    assert meta.task == "rest" and meta.run == "1" and meta.repetition_time == 2.0
    np.testing.assert_array_equal(meta.affine, np.asarray(AFFINE))
    assert meta.space == "MNI152NLin2009aSym" and meta.geometry.grid_shape == (64, 64, 64)
    assert meta.provenance.preproc == {"fwhm_mm": 6.0} and meta.provenance.source_t1w == "/d/sub-01_T1w.nii.gz"
    assert meta.bold.slice_timing == SliceTiming(corrected=True, start_time=0.95, reference_time=0.95)
    assert meta.bold.motion.max_fd == 0.4 and meta.bold.n_volumes == 120 and meta.brain_voxels == 9000
    assert meta.qc.template_correlation == 0.8 and meta.qc.already_skull_stripped is False
    assert meta.shapes["fmri"] == (64, 64, 64, 120)
    assert read_meta(to_manifest(meta)) == meta  # rewritten in the current layout, read back the same


def test_old_flat_metadata_of_a_test_entry_without_a_grid() -> None:
    meta = read_meta({"participant": "03"})
    assert meta.participant == "03" and meta.geometry is None and meta.bold is None and meta.affine is None
    geometry = read_meta({"participant": "04", "affine": AFFINE, "shapes": {"smri": [16, 16, 16]}}).geometry
    assert geometry.grid_shape == (16, 16, 16) and geometry.resolution_mm == 3.0


def test_frozen_and_strict() -> None:
    meta = _meta()
    with pytest.raises(ValidationError):
        meta.participant = "02"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        meta.qc.brain_dice = 0.1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        EntryMeta(participant="01", colour="blue")  # type: ignore[call-arg]
    changed = evolve(meta, session=None, qc=QCFigures(brain_dice=0.5))
    assert changed.session is None and changed.qc.brain_dice == 0.5 and meta.session == "2"
    with pytest.raises(ValidationError):
        evolve(meta, brain_voxels="many")


def test_version_is_checked() -> None:
    assert _meta().meta_version == 1 == META_VERSION
    with pytest.raises(ValidationError):
        read_meta({**to_manifest(_meta()), "meta_version": 99})
