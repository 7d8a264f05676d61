"""What a synthetic dataset looks like: the size presets and the planted group differences.

Everything a dataset depends on lives in one frozen :class:`SynthSpec`, so a dataset is a pure
function of (spec, seed). The planted effects are data (the module-level tables below), copied
into ``sourcedata/ground_truth.json`` with the dataset, so tests and users check against the
record rather than against this file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from m2m_bids.exitcodes import AppError, ExitCode

KNOWN_CLASSES = ("CN", "MCI", "AD")

#: Fraction of AD severity that MCI participants receive (CN receive none).
CLASS_SCALE = {"CN": 0.0, "MCI": 0.5, "AD": 1.0}

#: AD grey-matter loss per AAL2 region at effect size 1 (fractional local GM intensity reduction).
ATROPHY_AD: dict[str, float] = {
    "Hippocampus_L": 0.35, "Hippocampus_R": 0.35,
    "ParaHippocampal_L": 0.25, "ParaHippocampal_R": 0.25,
    "Precuneus_L": 0.15, "Precuneus_R": 0.15,
    "Temporal_Inf_L": 0.10, "Temporal_Inf_R": 0.10,
}
#: AD FDG hypometabolism per region at effect size 1 (fractional uptake reduction), in the atrophy regions.
HYPOMETABOLISM_AD: dict[str, float] = {
    "Hippocampus_L": 0.25, "Hippocampus_R": 0.25,
    "ParaHippocampal_L": 0.25, "ParaHippocampal_R": 0.25,
    "Precuneus_L": 0.30, "Precuneus_R": 0.30,
    "Temporal_Inf_L": 0.20, "Temporal_Inf_R": 0.20,
}
#: AD loss of resting-state fluctuation amplitude per region at effect size 1 (fractional reduction of
#: the regional BOLD signal; ALFF is lower in posterior cingulate and precuneus in AD, e.g. Wang et al.
#: 2011, Hum Brain Mapp 32:1720). Unlike a coupling change, a 4-frame window shows it: after the
#: per-voxel z-score the region's voxels share a smooth signal in CN and are mostly noise in AD.
FLUCTUATION_LOSS_AD: dict[str, float] = {
    "Cingulate_Post_L": 0.5, "Cingulate_Post_R": 0.5,
    "Precuneus_L": 0.5, "Precuneus_R": 0.5,
}
#: Relative FDG uptake per tissue class: grey matter metabolises about 3x white matter, CSF nothing.
FDG_UPTAKE: dict[str, float] = {"GM": 1.0, "WM": 0.35, "CSF": 0.05}

#: Radial shrink towards a region's centroid per unit of severity (0.35 severity -> ~14 % shrink).
SHRINK_PER_SEVERITY = 0.4

#: Resting-state networks (AAL2 labels) whose members share a common fluctuation.
NETWORKS: dict[str, tuple[str, ...]] = {
    "default_mode": ("Cingulate_Post_L", "Cingulate_Post_R", "Frontal_Sup_Medial_L",
                     "Frontal_Sup_Medial_R", "Frontal_Med_Orb_L", "Frontal_Med_Orb_R",
                     "Precuneus_L", "Precuneus_R", "Angular_L", "Angular_R"),
    "sensorimotor": ("Precentral_L", "Precentral_R", "Postcentral_L", "Postcentral_R",
                     "Supp_Motor_Area_L", "Supp_Motor_Area_R"),
    "visual": ("Calcarine_L", "Calcarine_R", "Cuneus_L", "Cuneus_R", "Lingual_L", "Lingual_R"),
}
WITHIN_NETWORK_R = 0.55
BETWEEN_REGION_R = 0.05

#: Coupling changes in AD at effect size 1: (name, regions A, regions B, change in correlation).
COUPLING_AD: tuple[tuple[str, tuple[str, ...], tuple[str, ...], float], ...] = (
    ("PCC-mPFC", ("Cingulate_Post_L", "Cingulate_Post_R"),
     ("Frontal_Sup_Medial_L", "Frontal_Sup_Medial_R", "Frontal_Med_Orb_L", "Frontal_Med_Orb_R"), -0.40),
    ("precuneus-angular", ("Precuneus_L", "Precuneus_R"), ("Angular_L", "Angular_R"), -0.35),
)

#: Tabular distributions (mean, sd) per class at effect size 1; CN is the reference.
TABULAR: dict[str, dict[str, tuple[float, float]]] = {
    "age": {"CN": (71.0, 6.0), "MCI": (73.0, 6.5), "AD": (75.0, 7.0)},
    "MMSE": {"CN": (29.0, 1.0), "MCI": (27.0, 1.5), "AD": (21.0, 3.0)},
    "tTau": {"CN": (220.0, 50.0), "MCI": (300.0, 80.0), "AD": (420.0, 110.0)},
    "Abeta42": {"CN": (1150.0, 220.0), "MCI": (850.0, 200.0), "AD": (620.0, 140.0)},
}
TAU_ABETA_CUTOFF = 0.24


@dataclass(frozen=True)
class SynthSpec:
    """All knobs of a synthetic dataset; build with :meth:`preset` and override fields by name."""

    preset_name: str = "tiny"
    n_participants: int = 8
    classes: tuple[str, ...] = KNOWN_CLASSES
    proportions: tuple[float, ...] | None = None  # None = balanced
    effect_size: float = 1.0
    seed: int = 0
    sessions: int = 1
    task: str = "rest"
    fmriprep_derivatives: bool = False
    atlas: str = "aal"
    # working resolution of the MNI source images the scanner "sees"
    template_res: float = 2.0
    # T1w acquisition
    t1w_shape: tuple[int, int, int] = (56, 72, 64)
    t1w_zooms: tuple[float, float, float] = (3.0, 3.0, 3.0)
    t1w_axcodes: str = "RAS"
    # BOLD acquisition
    bold_shape: tuple[int, int, int] = (32, 32, 24)
    bold_zooms: tuple[float, float, float] = (6.0, 6.0, 6.0)
    bold_axcodes: str = "LAS"
    n_volumes: int = 30
    repetition_time: float = 2.0
    slice_order: str = "interleaved"  # interleaved | ascending | descending
    # FDG PET (optional): static frames on an oblique low-resolution grid
    pet: bool = False
    pet_shape: tuple[int, int, int] = (40, 48, 40)
    pet_zooms: tuple[float, float, float] = (4.0, 4.0, 4.0)
    pet_axcodes: str = "LAS"
    pet_frames: int = 3
    pet_frame_duration: float = 300.0
    pet_noise: float = 0.05  # Gaussian noise SD relative to grey-matter activity
    # geometry and artefacts
    grid_tilt_deg: float = 12.0
    head_rotation_deg: float = 8.0
    head_shift_mm: float = 8.0
    brain_scale_sd: float = 0.03
    anatomy_warp_mm: float = 2.0  # RMS of each participant's smooth shape difference (0 = template)
    motion_mm: float = 0.15
    motion_deg: float = 0.12
    t1w_noise: float = 0.02
    bias_strength: float = 0.15
    bold_noise: float = 0.01
    bold_signal_change: float = 0.03
    # fMRIPrep-like derivatives grid
    deriv_t1w_res: float = 2.0
    deriv_bold_res: float = 6.0

    @classmethod
    def preset(cls, name: str = "tiny", **overrides: Any) -> SynthSpec:
        """A named size preset (``tiny``, ``small``, ``realistic``) with fields overridden."""
        if name not in PRESETS:
            raise AppError(f"unknown synthetic preset {name!r}", ExitCode.USAGE,
                           hint=f"choose one of {sorted(PRESETS)}")
        values = {**PRESETS[name], "preset_name": name}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise AppError(f"unknown SynthSpec fields {sorted(unknown)}", ExitCode.USAGE)
        values.update({k: v for k, v in overrides.items() if v is not None})
        spec = cls(**values)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Reject specs that cannot produce a valid dataset, with the field to change."""
        bad = [c for c in self.classes if c not in KNOWN_CLASSES]
        if bad or not self.classes:
            raise AppError(f"unknown classes {bad}", ExitCode.USAGE, hint=f"use a subset of {KNOWN_CLASSES}")
        if self.n_participants < 1 or self.sessions < 1 or self.n_volumes < 4:
            raise AppError("n_participants and sessions must be >= 1 and n_volumes >= 4", ExitCode.USAGE)
        if self.proportions is not None and (len(self.proportions) != len(self.classes)
                                             or min(self.proportions) < 0 or sum(self.proportions) <= 0):
            raise AppError("proportions must be one non-negative weight per class", ExitCode.USAGE)
        if self.effect_size < 0:
            raise AppError("effect_size must be >= 0 (0 = no planted signal)", ExitCode.USAGE)
        if self.slice_order not in ("interleaved", "ascending", "descending"):
            raise AppError(f"unknown slice_order {self.slice_order!r}", ExitCode.USAGE)
        if self.pet_frames < 1 or self.pet_frame_duration <= 0:
            raise AppError("pet_frames must be >= 1 and pet_frame_duration > 0 s", ExitCode.USAGE)
        if not self.task.isalnum():
            raise AppError(f"task label {self.task!r} must be alphanumeric (BIDS)", ExitCode.USAGE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": dict(template_res=2.0, t1w_shape=(80, 100, 88), t1w_zooms=(2.0, 2.0, 2.0),
                  bold_shape=(48, 48, 32), bold_zooms=(4.0, 4.0, 4.0), n_volumes=60,
                  deriv_t1w_res=2.0, deriv_bold_res=3.0, pet_shape=(60, 72, 60), pet_zooms=(3.0, 3.0, 3.0)),
    "realistic": dict(template_res=1.0, t1w_shape=(176, 256, 256), t1w_zooms=(1.0, 1.0, 1.0),
                      t1w_axcodes="RAS", bold_shape=(64, 64, 36), bold_zooms=(3.5, 3.5, 3.5),
                      n_volumes=200, deriv_t1w_res=1.0, deriv_bold_res=3.0, t1w_noise=0.015,
                      pet_shape=(88, 104, 88), pet_zooms=(2.0, 2.0, 2.0)),
}
