"""Synthetic static FDG PET: tissue uptake, planted hypometabolism, a low-resolution oblique grid.

FDG uptake follows glucose metabolism: grey matter takes up about three times what white matter
does and CSF almost nothing. AD lowers metabolism in the regions where the generator also plants
atrophy (hippocampus, parahippocampal gyrus, precuneus, inferior temporal gyrus); the loss is a
multiplicative factor on the uptake, separate from (and on top of) the atrophy the PET also sees.
The scan is a few 5-minute frames 30 min after injection, decay-corrected, in Bq/mL, with the
blur of a PET scanner (about 6 mm FWHM) and Gaussian noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from m2m_bids.synth.anat import HeadPose, acquisition_affine
from m2m_bids.synth.geometry import SmoothWarp, apply, voxel_coords
from m2m_bids.synth.sources import Sources, sample_mni, shrink_displacement
from m2m_bids.synth.spec import SHRINK_PER_SEVERITY, SynthSpec

#: Activity concentration of grey matter in Bq/mL (about 200 MBq injected, 30 min uptake).
GM_ACTIVITY_BQ_ML = 12000.0
#: Point spread of the scanner (FWHM, mm).
PET_FWHM_MM = 6.0
#: Static acquisition: frames start 30 min after injection.
FRAME_START_S = 1800.0
INJECTED_MBQ = 200.0


@dataclass(frozen=True)
class PetScan:
    """One simulated PET: stored frames plus what the ground truth records."""

    data: np.ndarray  # float32 (X, Y, Z, frames), Bq/mL
    affine: np.ndarray
    frame_times_start: list[float]
    frame_duration: list[float]


def hypometabolic_uptake(src: Sources, hypometabolism: dict[str, float], sigma_vox: float) -> np.ndarray:
    """Source uptake (blurred by ``sigma_vox``) with each region's metabolism lowered by its fraction."""
    uptake = src.blurred("fdg", sigma_vox).copy()
    for region in src.atrophy_regions:
        loss = hypometabolism.get(region.name, 0.0)
        if loss > 0:
            uptake[region.box] *= 1.0 - np.clip(loss * region.weight, 0.0, 0.9)
    return uptake


def _sample_uptake(src: Sources, uptake: np.ndarray, mni: np.ndarray, severity: dict[str, float],
                   warp: SmoothWarp | None) -> np.ndarray:
    if warp is not None:
        mni = mni + warp.displacement(mni)
    mni = mni + shrink_displacement(src, severity, mni, SHRINK_PER_SEVERITY)
    return sample_mni(uptake, src, mni)


def simulate_pet(src: Sources, spec: SynthSpec, rng: np.random.Generator, pose: HeadPose,
                 severity: dict[str, float], hypometabolism: dict[str, float],
                 warp: SmoothWarp | None = None) -> PetScan:
    """Frames of one static FDG scan on an oblique low-resolution grid (the participant's anatomy,
    atrophy and hypometabolism), in Bq/mL."""
    shape = tuple(spec.pet_shape)
    affine = acquisition_affine(shape, tuple(spec.pet_zooms), spec.pet_axcodes, pose, spec.grid_tilt_deg, rng)
    sigma_vox = PET_FWHM_MM / 2.3548 / spec.template_res
    uptake = hypometabolic_uptake(src, hypometabolism, sigma_vox)
    mni = apply(pose.matrix @ affine, voxel_coords(shape))
    activity = _sample_uptake(src, uptake, mni, severity, warp).reshape(shape) * GM_ACTIVITY_BQ_ML
    n_frames = spec.pet_frames
    frames = np.empty(shape + (n_frames,), dtype=np.float32)
    for k in range(n_frames):
        noise = rng.normal(0.0, spec.pet_noise * GM_ACTIVITY_BQ_ML, shape)
        frames[..., k] = np.clip(activity * (1.0 + 0.02 * k) + noise, 0.0, None)  # slow late uptake
    duration = float(spec.pet_frame_duration)
    starts = [FRAME_START_S + k * duration for k in range(n_frames)]
    return PetScan(data=frames, affine=affine, frame_times_start=starts, frame_duration=[duration] * n_frames)


def mni_pet(src: Sources, grid_affine: np.ndarray, shape: tuple[int, int, int], severity: dict[str, float],
            hypometabolism: dict[str, float]) -> np.ndarray:
    """The participant's relative uptake on an MNI grid (what a perfect normalisation gives)."""
    sigma_vox = PET_FWHM_MM / 2.3548 / float(src.affine[0, 0])
    uptake = hypometabolic_uptake(src, hypometabolism, sigma_vox)
    return _sample_uptake(src, uptake, apply(grid_affine, voxel_coords(shape)), severity, None).reshape(shape)


def pet_sidecar(scan: PetScan) -> dict[str, Any]:
    """Every field BIDS requires (and recommends) for a static, decay-corrected FDG PET."""
    return {
        "Manufacturer": "m2m-synth", "ManufacturersModelName": "synthetic PET scanner",
        "InstitutionName": "m2m-bids synthetic data", "BodyPart": "Brain", "Units": "Bq/mL",
        "TracerName": "FDG", "TracerRadionuclide": "F18", "TracerMolecularWeight": 181.26,
        "TracerMolecularWeightUnits": "g/mol",
        "InjectedRadioactivity": INJECTED_MBQ, "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": "n/a", "InjectedMassUnits": "n/a",
        "SpecificRadioactivity": "n/a", "SpecificRadioactivityUnits": "n/a",
        "ModeOfAdministration": "bolus", "TimeZero": "10:00:00", "ScanStart": FRAME_START_S,
        "InjectionStart": 0, "FrameTimesStart": scan.frame_times_start, "FrameDuration": scan.frame_duration,
        "AcquisitionMode": "list mode", "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
        "ReconMethodName": "3D-OSEM", "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"], "ReconMethodParameterValues": [21, 3],
        "ReconFilterType": "Gaussian", "ReconFilterSize": 2.0, "AttenuationCorrection": "CT-based",
        "ScatterCorrectionMethod": "single scatter simulation", "RandomsCorrectionMethod": "delayed window",
    }
