"""Top-level generator: a whole synthetic BIDS dataset with its ground truth.

Each participant has an own random stream seeded by (seed, participant number), so a dataset is
reproducible under its seed and a participant's data does not depend on how many others exist.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids import __version__
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.io_utils import write_json_atomic, write_text_atomic
from m2m_bids.synth import bidsio
from m2m_bids.synth.anat import HeadPose, mni_t1w, random_head_pose, simulate_t1w
from m2m_bids.synth.func import BoldRun, amplitude_vector, coupling_matrix, mni_bold, simulate_bold
from m2m_bids.synth.geometry import SmoothWarp, apply, rigid_matrix, voxel_coords
from m2m_bids.synth.pet import FRAME_START_S, GM_ACTIVITY_BQ_ML, PET_FWHM_MM, pet_sidecar, simulate_pet
from m2m_bids.synth.sources import TEMPLATE_SPACE, Sources, build_sources, sample_mni
from m2m_bids.synth.spec import (ATROPHY_AD, CLASS_SCALE, COUPLING_AD, FDG_UPTAKE, FLUCTUATION_LOSS_AD,
                                 HYPOMETABOLISM_AD,
                                 NETWORKS, SHRINK_PER_SEVERITY, TAU_ABETA_CUTOFF, WITHIN_NETWORK_R,
                                 BETWEEN_REGION_R, SynthSpec)
from m2m_bids.synth.tabular import (assign_diagnoses, class_counts, participants_table,
                                    ratio_summary, tabular_parameters)

LOGGER = logging.getLogger(__name__)
GROUND_TRUTH = Path("sourcedata") / "ground_truth.json"
CONVENTIONS = {
    "scanner_to_mni": "4x4 matrix mapping scanner mm (raw NIfTI world coordinates) to MNI mm of the "
                      "ICBM152 2009a template for the head at rest (rigid x isotropic brain scale)",
    "affine": "voxel -> scanner mm affine written to the NIfTI qform and sform",
    "motion_params": "per volume (tx, ty, tz in mm; rx, ry, rz in rad); M_k = T(c+t) Rz Ry Rx T(-c) "
                     "with c = motion_centre_scanner; a voxel at scanner point s in volume k shows the "
                     "anatomy at scanner_to_mni @ M_k @ s; volume 0 is the reference (all zeros)",
    "slice_timing": "each slice k of volume n is sampled at n*TR + SliceTiming[k] (not corrected)",
    "anatomy_warp_coefficients": "per participant (3 x 8, mm): the smooth shape difference from the "
                                 "template (m2m_bids.synth.geometry.SmoothWarp); a point p of the "
                                 "participant's head shows template anatomy at p + d(p). The MNI-space "
                                 "derivatives are without it (a perfect nonlinear normalisation)",
    "atrophy": "severity s: GM intensity x (1 - s*GM*smooth region weight) and a radial shrink of "
               f"{SHRINK_PER_SEVERITY}*s towards the region centroid",
    "hypometabolism": "FDG PET fraction h: uptake x (1 - h*smooth region weight), on top of the atrophy "
                      "(the PET samples the same atrophied, shrunk and warped anatomy as the T1w)",
}


@dataclass(frozen=True)
class _Context:
    """What every participant's simulation shares: output root, spec, sources, derivative grids."""

    root: Path
    spec: SynthSpec
    src: Sources
    grids: dict[str, tuple[np.ndarray, tuple, np.ndarray]]


def generate_dataset(out_dir: Path, spec: SynthSpec, *, force: bool = False) -> Path:
    """Write a complete synthetic BIDS dataset to ``out_dir`` and return its path."""
    spec.validate()
    root = _prepare_output(Path(out_dir), force)
    started = time.perf_counter()
    src = build_sources(spec)
    diagnoses = assign_diagnoses(spec, np.random.default_rng([spec.seed, 0]))
    width = max(2, len(str(spec.n_participants)))
    labels = [f"{i + 1:0{width}d}" for i in range(spec.n_participants)]
    table = participants_table(labels, diagnoses, spec.effect_size, np.random.default_rng([spec.seed, 1]))
    bidsio.write_top_level(root, spec, table)
    if spec.fmriprep_derivatives:
        bidsio.write_fmriprep_description(root / "derivatives" / "fmriprep")
    coupling = {dx: coupling_matrix(src.region_names, dx, spec.effect_size) for dx in spec.classes}
    ctx = _Context(root, spec, src, derivative_grids(src, spec) if spec.fmriprep_derivatives else {})
    per_participant = {}
    for index, (label, dx) in enumerate(zip(labels, diagnoses)):
        per_participant[f"sub-{label}"] = _simulate_participant(ctx, (label, dx), index, coupling[dx])
    truth = _ground_truth(spec, src, table, per_participant, coupling)
    write_json_atomic(root / GROUND_TRUTH, truth)
    LOGGER.info("wrote %d participants to %s in %.1f s", spec.n_participants, root,
                time.perf_counter() - started)
    return root


def _prepare_output(root: Path, force: bool) -> Path:
    """Refuse a non-empty directory unless ``force``; with force, clear a previous synth dataset."""
    if root.exists() and not root.is_dir():
        raise AppError("output path exists and is not a directory", ExitCode.CANT_CREATE, path=str(root))
    if root.exists() and any(root.iterdir()):
        if not force:
            raise AppError("output directory is not empty", ExitCode.CANT_CREATE, path=str(root),
                           hint="choose an empty or new directory, or pass --force to overwrite")
        if (root / GROUND_TRUTH).exists():  # only ever delete what m2m-synth wrote
            for child in list(root.glob("sub-*")) + [root / "derivatives" / "fmriprep", root / "sourcedata"]:
                shutil.rmtree(child, ignore_errors=True)
        else:
            LOGGER.warning("%s is not an m2m-synth dataset; writing into it without deleting", root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AppError(f"cannot create output directory: {exc}", ExitCode.CANT_CREATE, path=str(root)) from exc
    return root


def atrophy_severity(diagnosis: str, effect_size: float, jitter: float,
                     progression: float = 1.0) -> dict[str, float]:
    """Per-region severity for one scan: AD table x class scale x effect size x individual factors."""
    scale = CLASS_SCALE[diagnosis] * effect_size * jitter * progression
    return {region: round(float(min(sev * scale, 0.8)), 5) for region, sev in ATROPHY_AD.items()}


def hypometabolism_severity(diagnosis: str, effect_size: float, jitter: float,
                            progression: float = 1.0) -> dict[str, float]:
    """Per-region FDG uptake loss for one scan, scaled like :func:`atrophy_severity`."""
    scale = CLASS_SCALE[diagnosis] * effect_size * jitter * progression
    return {region: round(float(min(loss * scale, 0.8)), 5) for region, loss in HYPOMETABOLISM_AD.items()}


def fluctuation_loss(diagnosis: str, effect_size: float, jitter: float,
                     progression: float = 1.0) -> dict[str, float]:
    """Per-region loss of BOLD fluctuation amplitude for one scan, scaled like :func:`atrophy_severity`."""
    scale = CLASS_SCALE[diagnosis] * effect_size * jitter * progression
    return {region: round(float(min(loss * scale, 0.8)), 5) for region, loss in FLUCTUATION_LOSS_AD.items()}


def _simulate_participant(ctx: _Context, ids: tuple[str, str], index: int,
                          coupling: tuple[np.ndarray, list[dict]]) -> dict[str, Any]:
    """Simulate and write every session of one participant; return its ground-truth record."""
    spec = ctx.spec
    label, dx = ids
    changes = coupling[1]
    rng = np.random.default_rng([spec.seed, 1000 + index])
    scale = float(1.0 + rng.normal(0.0, spec.brain_scale_sd))
    jitter = float(np.clip(rng.normal(1.0, 0.15), 0.5, 1.5))
    warp = SmoothWarp.random(rng, spec.anatomy_warp_mm) if spec.anatomy_warp_mm > 0 else None
    sessions = [None] if spec.sessions == 1 else [f"{s + 1:02d}" for s in range(spec.sessions)]
    record: dict[str, Any] = {"diagnosis": dx, "brain_scale": round(scale, 5),
                              "atrophy_jitter": round(jitter, 5), "coupling_changes": changes,
                              "anatomy_warp_coefficients": None if warp is None else _r(warp.coefficients),
                              "sessions": {}}
    for s_index, ses in enumerate(sessions):
        progression = 1.0 + 0.1 * s_index
        severity = atrophy_severity(dx, spec.effect_size, jitter, progression)
        hypometabolism = hypometabolism_severity(dx, spec.effect_size, jitter, progression)
        fluctuation = fluctuation_loss(dx, spec.effect_size, jitter, progression)
        record["sessions"][f"ses-{ses}" if ses else "none"] = _simulate_session(
            ctx, rng, (label, ses), (scale, warp), (severity, hypometabolism), (coupling, fluctuation))
    return record


def _simulate_session(ctx: _Context, rng: np.random.Generator, ids: tuple[str, str | None],
                      body: tuple[float, SmoothWarp | None], effects: tuple[dict[str, float], dict[str, float]],
                      functional: tuple[tuple[np.ndarray, list[dict]], dict[str, float]]) -> dict[str, Any]:
    """One T1w + one BOLD run (and optional derivatives and FDG PET) for a participant/session."""
    root, spec, src = ctx.root, ctx.spec, ctx.src
    (corr, changes), fluctuation = functional
    scale, warp = body
    severity, hypometabolism = effects
    folder, prefix = bidsio.entities_prefix(*ids)
    pose = random_head_pose(spec, rng, scale)
    t1w, t1w_affine = simulate_t1w(src, spec, rng, pose, severity, warp)
    t1w_rel = folder / "anat" / f"{prefix}_T1w.nii.gz"
    bidsio.write_nifti(root / t1w_rel, t1w, t1w_affine)
    write_json_atomic(root / t1w_rel.with_name(f"{prefix}_T1w.json"), bidsio.t1w_sidecar())
    between = rigid_matrix(np.concatenate([rng.uniform(-2, 2, 3), np.deg2rad(rng.uniform(-2, 2, 3))]),
                           pose.brain_centre_scanner)
    bold_pose = HeadPose(matrix=pose.matrix @ between, scale=scale)
    run = simulate_bold(src, spec, rng, bold_pose, corr, warp, amplitude_vector(src.region_names, fluctuation))
    bold_rel = folder / "func" / f"{prefix}_task-{spec.task}_bold.nii.gz"
    bidsio.write_nifti(root / bold_rel, run.data, run.affine, tr=spec.repetition_time,
                       slice_duration=spec.repetition_time / spec.bold_shape[2])
    write_json_atomic(root / bold_rel.with_name(f"{prefix}_task-{spec.task}_bold.json"),
                      bidsio.bold_sidecar(spec, run.slice_timing))
    record = {
        "T1w": {"path": t1w_rel.as_posix(), "affine": _r(t1w_affine), "scanner_to_mni": _r(pose.matrix),
                "atrophy_severity": severity},
        "bold": {"path": bold_rel.as_posix(), "affine": _r(run.affine),
                 "scanner_to_mni": _r(bold_pose.matrix), "repetition_time": spec.repetition_time,
                 "slice_timing": run.slice_timing, "motion_centre_scanner": _r(run.motion_centre),
                 "motion_params": _r(run.motion_params),
                 "coupling_realised": _realised_coupling(src, run, changes), "fluctuation_loss": fluctuation},
    }
    if spec.fmriprep_derivatives:
        record["derivatives"] = _write_derivatives(ctx, rng, ids, severity, run)
    if spec.pet:  # drawn last, so adding PET leaves every other image of the dataset unchanged
        record["pet"] = _write_pet(ctx, rng, ids, pose, warp, (severity, hypometabolism))
    return record


def _write_pet(ctx: _Context, rng: np.random.Generator, ids: tuple[str, str | None], pose: HeadPose,
               warp: SmoothWarp | None, effects: tuple[dict[str, float], dict[str, float]]) -> dict[str, Any]:
    """``pet/<prefix>_trc-FDG_pet.nii.gz`` + sidecar, in its own head position and oblique grid."""
    severity, hypometabolism = effects
    folder, prefix = bidsio.entities_prefix(*ids)
    between = rigid_matrix(np.concatenate([rng.uniform(-3, 3, 3), np.deg2rad(rng.uniform(-3, 3, 3))]),
                           pose.brain_centre_scanner)
    pet_pose = HeadPose(matrix=pose.matrix @ between, scale=pose.scale)
    scan = simulate_pet(ctx.src, ctx.spec, rng, pet_pose, severity, hypometabolism, warp)
    rel = folder / "pet" / f"{prefix}_trc-FDG_pet.nii.gz"
    bidsio.write_nifti(ctx.root / rel, scan.data, scan.affine)
    write_json_atomic(ctx.root / rel.with_name(f"{prefix}_trc-FDG_pet.json"), pet_sidecar(scan))
    return {"path": rel.as_posix(), "affine": _r(scan.affine), "scanner_to_mni": _r(pet_pose.matrix),
            "hypometabolism": hypometabolism, "frame_times_start": scan.frame_times_start,
            "frame_duration": scan.frame_duration}


def _realised_coupling(src: Sources, run: BoldRun, changes: list[dict]) -> dict[str, float]:
    """Mean correlation actually present between the planted region groups (latent signals)."""
    pos = {name: i for i, name in enumerate(src.region_names)}
    out = {}
    for change in changes:
        cols = [pos[r] for r in change["regions_a"] + change["regions_b"]]
        corr = np.corrcoef(run.fine_series[:, cols].T)
        n_a = len(change["regions_a"])
        out[change["name"]] = round(float(corr[:n_a, n_a:].mean()), 4)
    return out


def mni_grid(res: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An MNI grid at ``res`` mm with the template's origin and field of view (197x233x189 mm)."""
    affine = np.diag([res, res, res, 1.0])
    affine[:3, 3] = [-98.0, -134.0, -72.0]
    shape = tuple(int(np.floor((n - 1) / res)) + 1 for n in (197, 233, 189))
    return affine, shape  # type: ignore[return-value]


def derivative_grids(src: Sources, spec: SynthSpec) -> dict[str, tuple[np.ndarray, tuple, np.ndarray]]:
    """MNI grids (affine, shape, brain mask) of the anat and func derivatives, built once."""
    grids = {}
    for kind, res in (("anat", spec.deriv_t1w_res), ("func", spec.deriv_bold_res)):
        affine, shape = mni_grid(res)
        mask = sample_mni(src.mask.astype(np.float32), src, _grid_points(affine, shape)) > 0.5
        grids[kind] = (affine, shape, mask.reshape(shape).astype(np.uint8))
    return grids


def _write_derivatives(ctx: _Context, rng: np.random.Generator, ids: tuple[str, str | None],
                       severity: dict[str, float], run: BoldRun) -> dict:
    """fMRIPrep-like MNI-space outputs: what a perfect preprocessing of this scan would give."""
    root, spec, src = ctx.root, ctx.spec, ctx.src
    folder, prefix = bidsio.entities_prefix(*ids)
    base = root / "derivatives" / "fmriprep" / folder
    space = f"space-{TEMPLATE_SPACE}"
    paths: dict[str, str] = {}
    for kind, (affine, shape, mask) in ctx.grids.items():
        res = float(affine[0, 0])
        stem = f"{prefix}_{space}" if kind == "anat" else f"{prefix}_task-{spec.task}_{space}"
        if kind == "anat":
            data = np.round(mni_t1w(src, affine, shape, severity, res) * 1000.0).astype(np.int16)
            bidsio.write_nifti(base / kind / f"{stem}_desc-preproc_T1w.nii.gz", data, affine)
            write_json_atomic(base / kind / f"{stem}_desc-preproc_T1w.json",
                              {"SkullStripped": True, "Resolution": f"{res} mm isotropic"})
        else:
            data = np.round(mni_bold(src, spec, affine, shape, run, rng)).astype(np.int16)
            bidsio.write_nifti(base / kind / f"{stem}_desc-preproc_bold.nii.gz", data, affine,
                               tr=spec.repetition_time)
            write_json_atomic(base / kind / f"{stem}_desc-preproc_bold.json", {
                "RepetitionTime": spec.repetition_time, "TaskName": spec.task, "SkullStripped": False,
                "SliceTimingCorrected": True, "StartTime": float(np.median(run.slice_timing))})
            conf = base / kind / f"{prefix}_task-{spec.task}_desc-confounds_timeseries.tsv"
            write_text_atomic(conf, bidsio.confounds_table(run.motion_params).to_csv(
                sep="\t", index=False, lineterminator="\n"))
            paths["confounds"] = conf.relative_to(root).as_posix()
        mask_path = base / kind / f"{stem}_desc-brain_mask.nii.gz"
        bidsio.write_nifti(mask_path, mask, affine)
        write_json_atomic(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")), {"Type": "Brain"})
        paths[f"{kind}_mask"] = mask_path.relative_to(root).as_posix()
        preproc = f"{stem}_desc-preproc_{'T1w' if kind == 'anat' else 'bold'}.nii.gz"
        paths[f"{kind}_preproc"] = (base / kind / preproc).relative_to(root).as_posix()
    return paths


def _grid_points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """MNI mm coordinates (3, N) of every voxel of a grid."""
    return apply(affine, voxel_coords(shape))


def _ground_truth(spec: SynthSpec, src: Sources, table: pd.DataFrame, per_participant: dict,
                  coupling: dict[str, tuple[np.ndarray, list[dict]]]) -> dict[str, Any]:
    """Everything planted, in one JSON document (sourcedata/ground_truth.json)."""
    planted = spec.effect_size > 0
    return {
        "generator": {"name": "m2m-synth", "version": __version__, "spec": spec.to_dict()},
        "conventions": CONVENTIONS,
        "template_space": TEMPLATE_SPACE,
        "atlas": {"name": src.atlas.name, "citation": src.atlas.citation, "licence": src.atlas.licence},
        "class_counts": class_counts(spec),
        "effects": {
            "effect_size": spec.effect_size,
            "planted": planted,
            "class_scale": CLASS_SCALE,
            "atrophy": {dx: atrophy_severity(dx, spec.effect_size, 1.0) for dx in spec.classes},
            "coupling": {"networks": {k: list(v) for k, v in NETWORKS.items()},
                         "within_network_r": WITHIN_NETWORK_R, "between_region_r": BETWEEN_REGION_R,
                         "changes": {dx: changes for dx, (_, changes) in coupling.items()},
                         "reference_changes_at_effect_1": [list(c) for c in COUPLING_AD]},
            "fluctuation_loss": {dx: fluctuation_loss(dx, spec.effect_size, 1.0) for dx in spec.classes},
            **({"hypometabolism": {dx: hypometabolism_severity(dx, spec.effect_size, 1.0) for dx in spec.classes},
                "fdg": {"uptake": FDG_UPTAKE, "grey_matter_bq_ml": GM_ACTIVITY_BQ_ML, "fwhm_mm": PET_FWHM_MM,
                        "frame_start_s": FRAME_START_S}} if spec.pet else {}),
            "tabular": tabular_parameters(spec.effect_size),
            "tau_abeta42_ratio_cutoff": TAU_ABETA_CUTOFF,
            "fraction_above_ratio_cutoff": ratio_summary(table),
        },
        "participants": per_participant,
    }


def _r(array: np.ndarray, digits: int = 6) -> list:
    """Round an array for JSON."""
    return np.round(np.asarray(array, dtype=float), digits).tolist()
