"""The preprocessing steps as pure functions on files: what each nipype node runs.

Every function reads its inputs from files, writes its outputs into ``out_dir`` (the node's
working directory) and returns their paths, so each node is cached and resumable by nipype and
testable without nipype. Transforms follow :mod:`m2m_bids.preproc.registration`: RAS pull maps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc import images
from m2m_bids.preproc.brain import brain_mask
from m2m_bids.preproc.grid import OutputGrid, make_grid
from m2m_bids.preproc.maps import amplitude_maps, coverage_mask, grey_matter_probability, mean_image
from m2m_bids.preproc.motion import estimate_motion, framewise_displacement, params_to_matrices
from m2m_bids.preproc.pet import frame_average, normalise_pet
from m2m_bids.preproc.registration import bias_correct, register_rigid_to_t1w, register_t1w_to_template
from m2m_bids.preproc.regqc import anatomical_qc, normalised_mutual_information
from m2m_bids.preproc.resample import normalise_intensity, resample_series, smooth
from m2m_bids.preproc.slicetiming import parse_slice_encoding, slice_time_correct
from m2m_bids.preproc.template import grid_template

log = logging.getLogger(__name__)


def registration_resolution(resolution_mm: float) -> float:
    """Resolution registration runs at: 2 mm for outputs of 3 mm or finer, else 2/3 of the output's."""
    return 2.0 if resolution_mm <= 3.0 else round(resolution_mm / 1.5, 3)


# -- T1w -------------------------------------------------------------------------------------------
def t1w_prepare(t1w: str, resolution_mm: float, threads: int, out_dir: str) -> tuple[str, str, str]:
    """Reorient to RAS, extract the brain, downsample to the registration resolution, N4
    bias-correct, clip outliers. Returns (prepared T1w, its brain mask, brain record JSON)."""
    img = images.load_ras(t1w, ndim=3)
    if min(img.shape) < 4:
        raise AppError(f"the T1w is too small to register ({img.shape})", ExitCode.DATA_ERROR, path=t1w,
                       hint="provide a whole-brain T1w image")
    brain, stripped = brain_mask(img, threads)
    if not brain.any():
        raise AppError("brain extraction found no brain in the T1w", ExitCode.DATA_ERROR, path=t1w,
                       hint="check that the file is a T1-weighted head scan (view it); exclude the participant otherwise")
    prepared, brain_prepared = bias_correct(img, brain, registration_resolution(resolution_mm))
    out, out_brain, record = (Path(out_dir) / name for name in ("t1w_prepared.nii", "t1w_brain.nii", "brain.json"))
    nib.save(prepared, str(out))
    nib.save(nib.Nifti1Image(brain_prepared.astype(np.uint8), prepared.affine), str(out_brain))
    volume_ml = float(brain.sum() * abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
    record.write_text(json.dumps({"already_skull_stripped": bool(stripped), "brain_volume_ml": round(volume_ml, 1)}))
    return str(out), str(out_brain), str(record)


def t1w_register(t1w_prepared: str, brain: str, method: str, resolution_mm: float, grid_shape: list[int],
                 seed: int, out_dir: str) -> str:
    """T1w brain -> template registration; saves the pull map (and SyN grid coordinates) as ``.npz``."""
    grid = make_grid(resolution_mm, grid_shape)
    reg = register_t1w_to_template(nib.load(t1w_prepared), np.asarray(nib.load(brain).dataobj) > 0, method,
                                   registration_resolution(resolution_mm), grid, seed=seed)
    out = Path(out_dir) / "t1w_to_template.npz"
    arrays: dict[str, Any] = {"matrix": reg.matrix}
    if reg.coords is not None:
        arrays["coords"] = reg.coords.astype(np.float32)
    np.savez(out, **arrays)
    return str(out)


def load_transform(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(matrix, coords-or-None) from a ``t1w_register`` output."""
    with np.load(path) as data:
        return data["matrix"], (data["coords"] if "coords" in data else None)


def skull_stripped_intensity(t1w: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Robust z-score of the T1w inside its own brain; voxels of ``mask`` outside the brain (CSF,
    meninges, skull at the edge of the template mask) take the darkest brain value, as in the
    brain-only template, and everything outside ``mask`` is 0."""
    inside = (mask > 0) & (brain > 0)
    if not inside.any():
        return normalise_intensity(t1w, mask)
    out = normalise_intensity(t1w, inside)
    out[(mask > 0) & ~inside] = float(out[inside].min())
    return out


def t1w_to_grid(t1w_prepared: str, brain: str, brain_record: str, transform: str, resolution_mm: float,
                grid_shape: list[int], out_dir: str) -> tuple[str, str, str, str]:
    """Resample the T1w and its brain mask onto the grid, mask the T1w (template brain mask within
    the T1w's field of view), z-score it inside the mask, and measure the registration QC figures
    (:mod:`m2m_bids.preproc.regqc`). Returns (t1w.npy, mask.npy, brain.npy, qc.json)."""
    grid = make_grid(resolution_mm, grid_shape)
    img = nib.load(t1w_prepared)
    matrix, coords = load_transform(transform)
    pull = (np.eye(4) if coords is not None else matrix)[None]  # SyN coords already hold the whole map
    data = np.asarray(img.dataobj, dtype=np.float32)
    t1 = resample_series(data, img.affine, grid, pull, coords=coords)
    coverage = resample_series(np.ones_like(data), img.affine, grid, pull, coords=coords) > 0.5
    brain_grid = resample_series(np.asarray(nib.load(brain).dataobj, dtype=np.float32), img.affine, grid,
                                 pull, coords=coords) > 0.5
    template_mask = grid_template("mask", grid) > 0
    mask = template_mask & coverage
    t1n = skull_stripped_intensity(t1, mask, brain_grid)
    figures = anatomical_qc(t1n, grid_template("t1", grid), template_mask, coverage, brain_grid)
    figures.update(json.loads(Path(brain_record).read_text()))
    names = ("t1w_grid.npy", "mask_grid.npy", "brain_grid.npy", "qc_anat.json")
    out_t1, out_mask, out_brain, out_qc = (Path(out_dir) / name for name in names)
    np.save(out_t1, t1n.astype(np.float32))
    np.save(out_mask, mask.astype(np.uint8))
    np.save(out_brain, brain_grid.astype(np.uint8))
    out_qc.write_text(json.dumps(figures, sort_keys=True))
    return str(out_t1), str(out_mask), str(out_brain), str(out_qc)


# -- BOLD ------------------------------------------------------------------------------------------
def bold_prepare(bold: str, dummy_scans: int, min_volumes: int, out_dir: str) -> str:
    """Reorient to RAS float32, drop the first ``dummy_scans`` volumes, check the run is long enough."""
    img = images.load_ras(bold, ndim=4)
    n_total = img.shape[3]
    if n_total - dummy_scans < min_volumes:
        raise AppError(f"the BOLD run has {n_total} volumes ({n_total - dummy_scans} after dropping "
                       f"{dummy_scans} dummy scans); at least {min_volumes} are needed", ExitCode.DATA_ERROR,
                       path=bold, hint="exclude this run (--bids-filter-file) or lower preproc.min_volumes")
    data = np.asarray(img.dataobj)[..., dummy_scans:]
    if not np.any(data != data[..., :1]):
        raise AppError("the BOLD run is constant: every volume is identical (all zero or one repeated image), "
                       "so it holds no signal to align or analyse", ExitCode.DATA_ERROR, path=bold,
                       hint="re-export the run from the scanner data, or exclude it (--bids-filter-file)")
    out = Path(out_dir) / "bold_prepared.nii"
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), str(out))
    return str(out)


def bold_slice_timing(bold_prepared: str, bold_source: str, metadata_json: str, ref_fraction: float,
                      enabled: bool, out_dir: str) -> tuple[str, str]:
    """Slice-timing correction, or a recorded skip. Returns (bold file, record.json)."""
    meta = json.loads(metadata_json)
    times, tr = meta.get("SliceTiming"), float(meta["RepetitionTime"])
    record: dict[str, Any] = {"SliceTimingCorrected": False}
    out_file = bold_prepared
    if not enabled:
        record["warning"] = "slice-timing correction disabled (preproc.slice_timing = false)"
    elif not times:
        record["warning"] = f"no SliceTiming in the sidecar of {Path(bold_source).name}: slice-timing correction skipped"
    elif max(times) - min(times) <= 0:
        record["warning"] = "all slices acquired at once (multi-band/3D): no slice-timing correction needed"
    elif max(times) >= tr:
        record["warning"] = f"SliceTiming values reach {max(times)} s >= RepetitionTime {tr} s: skipped (sidecar error)"
    else:
        stored_axis, reverse = parse_slice_encoding(meta.get("SliceEncodingDirection"))
        axis, sign = images.canonical_axis(bold_source, stored_axis)
        img = nib.load(bold_prepared)
        try:
            data, t_ref = slice_time_correct(np.asarray(img.dataobj), times, tr, axis,
                                             reverse=reverse != (sign < 0), ref_fraction=ref_fraction)
        except ValueError as err:
            raise AppError(f"slice-timing correction failed: {err}", ExitCode.DATA_ERROR, path=bold_source,
                           hint="fix SliceTiming/SliceEncodingDirection in the sidecar, or turn the correction off "
                                "with slice_timing = false under [preproc] in a --config-file"
                           ) from err
        out_file = str(Path(out_dir) / "bold_stc.nii")
        nib.save(nib.Nifti1Image(data, img.affine), out_file)
        record = {"SliceTimingCorrected": True, "StartTime": t_ref, "ReferenceTime": t_ref}
    if "warning" in record:  # the parent logs it to the run log when it collects the run
        log.debug("%s: %s", Path(bold_source).name, record["warning"])
    record_file = Path(out_dir) / "slice_timing.json"
    record_file.write_text(json.dumps(record))
    return out_file, str(record_file)


def bold_motion(bold_prepared: str, enabled: bool, out_dir: str, *, source: str | None = None,
                max_fd_mm: float = float("inf"), max_rotation_deg: float = float("inf")) -> tuple[str, str]:
    """Estimate rigid head motion; write ``motion.tsv`` (6 params + FD) and the realigned mean (boldref).

    Motion beyond ``max_fd_mm`` or ``max_rotation_deg`` is refused (exit 65) rather than passed on:
    a head does not move 150 mm between volumes, so such values mean a broken series (volumes of
    another scan, a corrupt file) or a failed estimate, and every tensor made from it is wrong.
    """
    img = nib.load(bold_prepared)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if enabled:
        params = estimate_motion(data, img.affine)
    else:
        params = np.zeros((data.shape[3], 6))
    fd = framewise_displacement(params)
    check_motion_plausible(params, fd, source or bold_prepared, max_fd_mm=max_fd_mm, max_rotation_deg=max_rotation_deg)
    header = "trans_x\ttrans_y\ttrans_z\trot_x\trot_y\trot_z\tframewise_displacement"
    motion = Path(out_dir) / "motion.tsv"
    np.savetxt(motion, np.column_stack([params, fd]), delimiter="\t", header=header, comments="", fmt="%.6f")
    center = img.affine[:3, :3] @ ((np.asarray(data.shape[:3]) - 1) / 2.0) + img.affine[:3, 3]
    native = OutputGrid(shape=data.shape[:3], affine=img.affine, resolution_mm=0.0)
    step = max(1, data.shape[3] // 50)  # the mean of up to 50 realigned volumes is a clean reference
    frames = np.arange(0, data.shape[3], step)
    realigned = resample_series(data[..., frames], img.affine, native, params_to_matrices(params[frames], center))
    boldref = Path(out_dir) / "boldref.nii.gz"
    nib.save(nib.Nifti1Image(realigned.mean(axis=-1), img.affine), str(boldref))
    return str(motion), str(boldref)


def check_motion_plausible(params: np.ndarray, fd: np.ndarray, bold: str, *, max_fd_mm: float,
                           max_rotation_deg: float) -> None:
    """Exit 65 naming ``bold`` when its maximum FD or rotation is beyond the configured limits."""
    peak_fd = float(np.max(fd)) if len(fd) else 0.0
    peak_rot = float(np.rad2deg(np.abs(params[:, 3:6]).max())) if len(params) else 0.0
    if not (np.isfinite(peak_fd) and np.isfinite(peak_rot)) or peak_fd > max_fd_mm or peak_rot > max_rotation_deg:
        raise AppError(f"implausible head motion: maximum framewise displacement {peak_fd:.1f} mm (limit "
                       f"{max_fd_mm:g}) and maximum rotation {peak_rot:.1f} degrees (limit {max_rotation_deg:g}); "
                       "the series is probably broken (volumes of another scan, corrupt data)", ExitCode.DATA_ERROR,
                       path=bold, hint="check the run in a viewer and exclude it (--bids-filter-file); if the "
                                       "motion is real, raise max_fd_mm / max_rotation_deg under [preproc] in a "
                                       "--config-file")


def read_motion(path: str) -> np.ndarray:
    """(T, 7) motion parameters + FD from ``motion.tsv``."""
    return np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)


def rigid_coregister(moving: str, t1w_prepared: str, brain: str, seed: int, out_dir: str) -> tuple[str, str]:
    """Rigid moving image (boldref, mean PET) -> T1w (ANTs, mutual information); saves the
    T1w -> moving pull map as ``t1w_to_moving.npy`` and its cost (1 - normalised mutual
    information of the two images inside the T1w's brain, :mod:`m2m_bids.preproc.regqc`) as JSON."""
    moving_img, t1w = nib.load(moving), nib.load(t1w_prepared)
    matrix = register_rigid_to_t1w(moving_img, t1w, seed=seed)
    out = Path(out_dir) / "t1w_to_moving.npy"
    np.save(out, matrix)
    grid = OutputGrid(shape=t1w.shape, affine=t1w.affine, resolution_mm=0.0)
    source = np.asarray(moving_img.dataobj, dtype=np.float32)
    moved = resample_series(source, moving_img.affine, grid, matrix[None])
    covered = resample_series(np.ones_like(source), moving_img.affine, grid, matrix[None]) > 0.5
    inside = covered & (np.asarray(nib.load(brain).dataobj) > 0)
    nmi = (normalised_mutual_information(moved[inside], np.asarray(t1w.dataobj, dtype=np.float32)[inside])
           if inside.sum() >= 100 else 0.0)
    cost = Path(out_dir) / "coregistration_cost.json"
    cost.write_text(json.dumps({"coregistration_cost": round(1.0 - nmi, 4)}))
    return str(out), str(cost)


def bold_to_grid(bold: str, motion: str, coreg: str, transform: str, resolution_mm: float,
                 grid_shape: list[int], out_dir: str) -> str:
    """One resampling of the series: grid -> T1w -> boldref -> volume t (motion) composed per volume."""
    grid = make_grid(resolution_mm, grid_shape)
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float32)
    params = read_motion(motion)[:, :6]
    center = img.affine[:3, :3] @ ((np.asarray(data.shape[:3]) - 1) / 2.0) + img.affine[:3, 3]
    to_t1, coords = load_transform(transform)
    t1_to_bold = np.load(coreg)
    per_volume = params_to_matrices(params, center) @ t1_to_bold
    if coords is None:
        per_volume = per_volume @ to_t1
    out = Path(out_dir) / "bold_grid.npy"
    np.save(out, resample_series(data, img.affine, grid, per_volume, coords=coords))
    return str(out)


def smooth_grid(in_file: str, fwhm_mm: float, resolution_mm: float, out_dir: str) -> str:
    """Gaussian smoothing (FWHM in mm) of a grid tensor."""
    out = Path(out_dir) / "bold_smoothed.npy"
    np.save(out, smooth(np.load(in_file), fwhm_mm, resolution_mm))
    return str(out)


# -- per-run maps ----------------------------------------------------------------------------------
def grey_matter_grid(t1w_grid: str, mask_grid: str, resolution_mm: float, out_dir: str,
                     brain_grid: str | None = None) -> str:
    """GM probability (Atropos 3-class k-means) of the T1w on the grid, inside the brain mask (and
    inside the T1w's own extracted brain when given: outside it there is no tissue to classify)."""
    out = Path(out_dir) / "gm_grid.npy"
    mask = np.load(mask_grid) > 0
    if brain_grid is not None:
        mask &= np.load(brain_grid) > 0
    try:
        gm = grey_matter_probability(np.load(t1w_grid), mask, spacing_mm=resolution_mm)
    except ValueError as err:
        raise AppError(f"grey-matter segmentation of the T1w failed: {err}", ExitCode.DATA_ERROR, path=t1w_grid,
                       hint="the T1w may cover too little of the brain (see the QC figures of the participant's "
                            "other runs); exclude the participant") from err
    np.save(out, gm)
    return str(out)


def bold_maps(bold: str, mask_grid: str, repetition_time: float, band_hz: list[float],
              out_dir: str) -> tuple[str, str, str]:
    """mALFF, fALFF and the normalised mean image of the (not yet z-scored) BOLD on the grid,
    inside the brain voxels the run covers. Returns (alff.npy, falff.npy, bold_mean.npy)."""
    series = np.load(bold)
    mask = coverage_mask(np.load(mask_grid), series)
    try:
        alff, falff = amplitude_maps(series, mask, repetition_time=repetition_time,
                                     band_hz=(float(band_hz[0]), float(band_hz[1])))
    except ValueError as err:
        raise AppError(f"cannot compute ALFF: {err}", ExitCode.DATA_ERROR, path=bold,
                       hint="exclude this short run (--bids-filter-file) or widen preproc.alff_band_hz") from err
    paths = [Path(out_dir) / f"{name}_grid.npy" for name in ("alff", "falff", "bold_mean")]
    for path, data in zip(paths, (alff, falff, mean_image(series, mask))):
        np.save(path, data)
    return str(paths[0]), str(paths[1]), str(paths[2])


# -- PET -------------------------------------------------------------------------------------------
def pet_prepare(pet: str, frame_durations: list[float], out_dir: str) -> str:
    """Reorient to RAS float32 and average the frames (weighted by ``frame_durations`` when given)."""
    img = images.load_ras(pet, ndim=None)
    try:
        mean = frame_average(np.asarray(img.dataobj, dtype=np.float32), frame_durations or None)
    except ValueError as err:
        raise AppError(f"cannot average the PET frames: {err}", ExitCode.DATA_ERROR, path=pet,
                       hint="give FrameDuration in the sidecar one value (seconds) per frame") from err
    out = Path(out_dir) / "pet_mean.nii"
    nib.save(nib.Nifti1Image(mean, img.affine), str(out))
    return str(out)


def pet_to_grid(pet_mean: str, coreg: str, transform: str, mask_grid: str, resolution_mm: float,
                grid_shape: list[int], out_dir: str) -> str:
    """One resampling of the mean PET to the grid (PET->T1w o T1w->MNI composed), then the
    Arco et al. normalisation inside the brain mask the PET covers."""
    grid = make_grid(resolution_mm, grid_shape)
    img = nib.load(pet_mean)
    data = np.asarray(img.dataobj, dtype=np.float32)
    to_t1, coords = load_transform(transform)
    pull = np.load(coreg)
    if coords is None:
        pull = pull @ to_t1
    on_grid = resample_series(data, img.affine, grid, pull[None], coords=coords)
    coverage = resample_series(np.ones_like(data), img.affine, grid, pull[None], coords=coords) > 0.5
    out = Path(out_dir) / "pet_grid.npy"
    np.save(out, normalise_pet(on_grid, (np.load(mask_grid) > 0) & coverage))
    return str(out)
