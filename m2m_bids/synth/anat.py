"""Synthetic T1w acquisition: atrophied template -> head pose -> oblique grid -> bias + noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from m2m_bids.synth.geometry import (SmoothWarp, apply, oblique_affine, rigid_matrix,
                                     smooth_bias_field, voxel_coords)
from m2m_bids.synth.sources import Sources, atrophied_t1, sample_mni, shrink_displacement
from m2m_bids.synth.spec import SHRINK_PER_SEVERITY, SynthSpec

#: Intensity of white matter in the stored int16 image (scanner-like arbitrary units).
T1W_SCALE = 1000.0
#: MNI point the acquisition boxes are centred on (roughly the middle of the brain).
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 12.0])


@dataclass(frozen=True)
class HeadPose:
    """Scanner mm -> MNI mm for one participant/session (rigid + isotropic brain scale)."""

    matrix: np.ndarray
    scale: float

    @property
    def brain_centre_scanner(self) -> np.ndarray:
        """Where the brain centre sits in scanner coordinates (the FOV is centred there)."""
        inv = np.linalg.inv(self.matrix)
        return inv[:3, :3] @ BRAIN_CENTRE_MNI + inv[:3, 3]


def random_head_pose(spec: SynthSpec, rng: np.random.Generator, scale: float) -> HeadPose:
    """A head placed in the scanner with a random tilt and offset; MNI = pose @ scanner."""
    angles = np.deg2rad(rng.uniform(-spec.head_rotation_deg, spec.head_rotation_deg, 3))
    shift = rng.uniform(-spec.head_shift_mm, spec.head_shift_mm, 3)
    scanner_to_head = rigid_matrix(np.concatenate([shift, angles]))
    scaling = np.diag([1.0 / scale] * 3 + [1.0])  # a bigger brain maps to a smaller MNI distance
    return HeadPose(matrix=scaling @ scanner_to_head, scale=scale)


def acquisition_affine(shape: tuple[int, int, int], zooms: tuple[float, float, float], axcodes: str,
                       pose: HeadPose, tilt_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Oblique voxel -> scanner affine centred on the brain (tilt mostly about left-right)."""
    tilt = np.deg2rad(np.array([rng.uniform(0.5, 1.0) * tilt_deg,
                                rng.uniform(-0.3, 0.3) * tilt_deg,
                                rng.uniform(-0.3, 0.3) * tilt_deg]))
    return oblique_affine(shape, zooms, axcodes, tilt, pose.brain_centre_scanner)


def simulate_t1w(src: Sources, spec: SynthSpec, rng: np.random.Generator, pose: HeadPose,
                 severity: dict[str, float], warp: SmoothWarp | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (int16 data, affine) of one T1w acquisition with the given regional atrophy."""
    shape = tuple(spec.t1w_shape)
    affine = acquisition_affine(shape, tuple(spec.t1w_zooms), spec.t1w_axcodes, pose,
                                spec.grid_tilt_deg, rng)
    volume = atrophied_t1(src, severity, max(min(spec.t1w_zooms) / spec.template_res - 1.0, 0.0) / 2.0)
    mni = apply(pose.matrix @ affine, voxel_coords(shape))
    if warp is not None:  # the participant's own shape, then atrophy defined in template space
        mni += warp.displacement(mni)
    mni += shrink_displacement(src, severity, mni, SHRINK_PER_SEVERITY)
    image = sample_mni(volume, src, mni).reshape(shape)
    image *= smooth_bias_field(shape, rng, spec.bias_strength)
    sigma = spec.t1w_noise
    real = image + rng.normal(0.0, sigma, shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, shape).astype(np.float32)
    magnitude = np.sqrt(real * real + imag * imag)  # Rician background like a magnitude image
    return np.clip(magnitude * T1W_SCALE, 0, 32767).astype(np.int16), affine


def mni_t1w(src: Sources, grid_affine: np.ndarray, shape: tuple[int, int, int],
            severity: dict[str, float], res: float) -> np.ndarray:
    """The participant's atrophied anatomy on an MNI grid (what a perfect normalisation gives)."""
    volume = atrophied_t1(src, severity, max(res / src.affine[0, 0] - 1.0, 0.0) / 2.0)
    mni = apply(grid_affine, voxel_coords(shape))
    mni += shrink_displacement(src, severity, mni, SHRINK_PER_SEVERITY)
    return sample_mni(volume, src, mni).reshape(shape)
