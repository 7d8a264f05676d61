"""PET branch: frame averaging, Arco et al. normalisation, and a synthetic FDG participant end to end."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_config  # noqa: E402

from m2m_bids.preproc.pet import frame_average, normalise_pet  # noqa: E402


def test_frame_average_is_weighted_by_frame_duration() -> None:
    frames = np.stack([np.full((2, 2, 2), 1.0), np.full((2, 2, 2), 4.0)], axis=-1)
    np.testing.assert_allclose(frame_average(frames, [300.0, 100.0]), 1.75)  # (1*300 + 4*100) / 400
    np.testing.assert_allclose(frame_average(frames, None), 2.5)
    assert frame_average(frames[..., 0], None).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="FrameDuration has 3 value"):
        frame_average(frames, [1.0, 2.0, 3.0])


def test_normalise_pet_top_fraction_and_floor() -> None:
    """Divided by the mean of the top 0.1 % in-mask voxels; under 10 % of it (and outside) 0."""
    rng = np.random.default_rng(0)
    pet = rng.uniform(60.0, 100.0, (20, 20, 10)).astype(np.float32)
    mask = np.ones(pet.shape, bool)
    mask[0] = False
    pet[0] = 1e6  # outside the mask: must not set the reference
    pet[5, 5, :4] = 500.0  # 4 hottest in-mask voxels = top 0.1 % of 3800
    pet[6, 6, 0] = 25.0  # 5 % of the reference: floored
    out = normalise_pet(pet, mask)
    assert out[5, 5, 0] == pytest.approx(1.0)
    assert out[7, 7, 7] == pytest.approx(pet[7, 7, 7] / 500.0)
    assert out[6, 6, 0] == 0 and np.all(out[0] == 0)
    assert np.all(normalise_pet(pet, np.zeros_like(mask)) == 0)


@pytest.fixture(scope="module")
def pet_run(tmp_path_factory):
    """A CN and an AD synthetic participant with FDG PET, discovered with pybids and preprocessed."""
    from m2m_bids.bids.layout import collect_participants
    from m2m_bids.preproc.api import preprocess_participants
    from m2m_bids.synth import SynthSpec, generate_dataset

    root = tmp_path_factory.mktemp("pet")
    spec = SynthSpec.preset("tiny", n_participants=2, classes=("CN", "AD"), pet=True, n_volumes=12)
    bids = generate_dataset(root / "bids", spec)
    cfg = tiny_config(bids, root / "out", execution={"nipype_plugin": "Linear", "save_preproc": True})
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    assert problems == []
    results = preprocess_participants(participants, cfg)
    return spec, bids, cfg, participants, results


def test_pet_is_discovered_preprocessed_and_cached(pet_run) -> None:
    spec, bids, cfg, participants, results = pet_run
    for participant in participants:
        pet = participant.sessions[0].pet
        assert pet is not None and pet.path.name == f"sub-{participant.label}_trc-FDG_pet.nii.gz"
        assert pet.entities["tracer"] == "FDG" and pet.frame_durations == [300.0] * spec.pet_frames
    for result in results:
        assert result.error is None, result.error
        entry = result.entries[0]
        pet = entry.load("pet")
        assert pet.dtype == np.float16 and pet.shape == (16, 16, 16)
        assert entry.meta.provenance.source_pet.endswith(f"sub-{result.label}_trc-FDG_pet.nii.gz")
        data = np.asarray(pet, dtype=np.float32)
        assert data.max() <= 1.5 and np.all(data[entry.load("mask") == 0] == 0)
        assert np.all((data == 0) | (data >= 0.1))  # the 10 % floor


def test_pet_identity_is_part_of_the_cache_key(pet_run) -> None:
    from m2m_bids.preproc.plan import plan_participant

    _, _, cfg, participants, results = pet_run
    participant = participants[0]
    without = replace(participant, sessions=(replace(participant.sessions[0], pet=None),))
    assert plan_participant(participant, cfg)[0].key == results[0].entries[0].key
    assert plan_participant(without, cfg)[0].key != results[0].entries[0].key


def _truth_on_grid(spec, bids: Path, entry):
    from m2m_bids.synth.pet import mni_pet
    from m2m_bids.synth.sources import build_sources

    truth = json.loads((bids / "sourcedata" / "ground_truth.json").read_text())
    record = truth["participants"][f"sub-{entry.meta.participant}"]
    session = record["sessions"]["none"]
    uptake = mni_pet(build_sources(spec), entry.meta.affine, tuple(entry.meta.geometry.grid_shape),
                     session["T1w"]["atrophy_severity"], session["pet"]["hypometabolism"])
    return record["diagnosis"], session["pet"]["hypometabolism"], uptake


def test_cached_pet_matches_truth_and_shows_planted_hypometabolism(pet_run) -> None:
    """Correlation with the true uptake on the grid (measured 0.96-0.97), and the planted regions
    relative to the rest of the brain lower in AD than CN (measured 0.87 vs 1.17)."""
    from m2m_bids.atlases import load_atlas

    spec, bids, _, _, results = pet_run
    ratio = {}
    for result in results:
        entry = result.entries[0]
        pet = np.asarray(entry.load("pet"), dtype=np.float32)
        mask = entry.load("mask") > 0
        diagnosis, hypometabolism, uptake = _truth_on_grid(spec, bids, entry)
        inside = mask & (pet > 0)
        assert inside.sum() > 1000
        r = np.corrcoef(pet[inside], uptake[inside])[0, 1]
        assert r > 0.85, (result.label, r)
        grid = nib.Nifti1Image(np.zeros(pet.shape, np.uint8), entry.meta.affine)
        planted = load_atlas("aal", target=grid).mask(list(hypometabolism)) & inside
        assert planted.sum() > 50
        ratio[diagnosis] = pet[planted].mean() / pet[inside & ~planted].mean()
    assert ratio["AD"] < 0.9 * ratio["CN"], ratio


def test_pet_derivative_is_written_and_validator_clean(pet_run) -> None:
    from m2m_bids.bids.derivatives import DerivativesWriter
    from m2m_bids.bids.validator import run_validator

    _, bids, cfg, _, _ = pet_run
    out = cfg.execution.output_dir
    target = out / "sub-01" / "pet" / "sub-01_trc-FDG_space-MNI152NLin2009aSym_res-6_desc-preproc_pet.nii.gz"
    assert nib.load(str(target)).shape == (16, 16, 16)
    sidecar = json.loads(target.with_name(target.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["TracerName"] == "FDG" and sidecar["FrameDuration"] == [900.0]
    assert sidecar["Sources"][0] == "bids:raw:sub-01/pet/sub-01_trc-FDG_pet.nii.gz"
    writer = DerivativesWriter(out, bids_dir=bids, run_id="test-run")
    writer.write_dataset_description()
    writer.update_bidsignore()
    report = run_validator(out)
    assert report.returncode == 0 and report.ok, report.errors


def test_pet_with_fmriprep_bold_goes_through_the_raw_t1w(tmp_path: Path) -> None:
    """A session whose BOLD comes from fMRIPrep derivatives still gets its PET (registered to the raw T1w)."""
    from m2m_bids.bids.layout import collect_participants
    from m2m_bids.preproc.api import preprocess_participants
    from m2m_bids.synth import SynthSpec, generate_dataset

    spec = SynthSpec.preset("tiny", n_participants=1, pet=True, n_volumes=12, fmriprep_derivatives=True)
    bids = generate_dataset(tmp_path / "bids", spec)
    cfg = tiny_config(bids, tmp_path / "out", execution={"nipype_plugin": "Linear"})
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    assert problems == []
    result = preprocess_participants(participants, cfg)[0]
    assert result.error is None, result.error
    entry = result.entries[0]
    assert entry.meta.provenance.input == "fmriprep" and "pet" in entry.names
    pet = np.asarray(entry.load("pet"), dtype=np.float32)
    _, _, uptake = _truth_on_grid(spec, bids, entry)
    inside = (entry.load("mask") > 0) & (pet > 0)
    assert np.corrcoef(pet[inside], uptake[inside])[0, 1] > 0.85
