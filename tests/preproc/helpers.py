"""Synthetic inputs with known transforms for the preprocessing tests (small, fast, real NIfTIs).

The "anatomy" is nilearn's MNI template itself, moved by a known rigid/affine transform, so the
right answer of every registration is known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from m2m_bids.bids.inputs import BoldRun, ParticipantInputs, SessionInputs
from m2m_bids.config import RunConfig
from m2m_bids.preproc.grid import OutputGrid
from m2m_bids.preproc.template import template_image
from m2m_bids.preproc.motion import params_to_matrices
from m2m_bids.preproc.resample import resample_series


def rigid_matrix(rot_deg: tuple[float, float, float], trans_mm: tuple[float, float, float]) -> np.ndarray:
    """4x4 rotation (R = Rz Ry Rx, about the origin) + translation."""
    params = np.array([[*trans_mm, *np.deg2rad(rot_deg)]])
    return params_to_matrices(params, np.zeros(3))[0]


def head_image(resolution_mm: float, pull: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray,
               scale: float = 1000.0) -> np.ndarray:
    """The template sampled at the subject grid's points mapped by ``pull`` (subject mm -> MNI mm)."""
    tpl = template_image("t1", resolution_mm)
    grid = OutputGrid(shape=shape, affine=affine, resolution_mm=resolution_mm)
    return scale * resample_series(np.asarray(tpl.dataobj), tpl.affine, grid, pull[None])


def subject_affine(shape: tuple[int, int, int], zooms: float | tuple[float, float, float], flip_x: bool = False) -> np.ndarray:
    """A grid centred on the MNI brain (LAS when ``flip_x``, like many scanners)."""
    zooms = np.broadcast_to(np.asarray(zooms, dtype=float), (3,))
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = np.array([0.0, -17.0, 5.0]) - (np.asarray(shape) - 1) / 2 * zooms
    if flip_x:
        affine[0, 0] *= -1
        affine[0, 3] = -affine[0, 3] + 0.0
    return affine


def write_participant(root: Path, label: str, *, t1_pull: np.ndarray, n_volumes: int = 24,
                      bold_shape: tuple[int, int, int] = (24, 28, 22), bold_zoom: float = 6.0,
                      motion: np.ndarray | None = None, slice_timing: bool = True, tr: float = 2.0,
                      rng_seed: int = 0) -> ParticipantInputs:
    """Write sub-<label> T1w (3 mm) + BOLD (``bold_zoom``) into ``root`` and describe them.

    ``t1_pull`` maps T1w mm to MNI mm (the inverse of what registration must find); the BOLD is in
    register with the T1w, with optional per-volume ``motion`` (T, 6) applied.
    """
    rng = np.random.default_rng(rng_seed)
    sub = root / f"sub-{label}"
    (sub / "anat").mkdir(parents=True, exist_ok=True)
    (sub / "func").mkdir(parents=True, exist_ok=True)
    t1_shape = (64, 76, 64)
    t1_aff = subject_affine(t1_shape, 3.0, flip_x=True)
    t1 = head_image(2.0, t1_pull, t1_shape, t1_aff) + rng.normal(0, 5, t1_shape)
    t1_path = sub / "anat" / f"sub-{label}_T1w.nii.gz"
    nib.save(nib.Nifti1Image(t1.astype(np.float32), t1_aff), str(t1_path))
    bold_aff = subject_affine(bold_shape, bold_zoom)
    base = head_image(3.0, t1_pull, bold_shape, bold_aff)
    motion = np.zeros((n_volumes, 6)) if motion is None else motion
    center = bold_aff[:3, :3] @ ((np.asarray(bold_shape) - 1) / 2) + bold_aff[:3, 3]
    grid = OutputGrid(shape=bold_shape, affine=bold_aff, resolution_mm=bold_zoom)
    series = resample_series(np.repeat(base[..., None], n_volumes, -1), bold_aff, grid,
                             np.linalg.inv(params_to_matrices(motion, center)))
    series = series + 20 * np.sin(np.arange(n_volumes) / 3.0) * (base[..., None] > 100) + rng.normal(0, 5, series.shape)
    bold_path = sub / "func" / f"sub-{label}_task-rest_bold.nii.gz"
    img = nib.Nifti1Image(series.astype(np.float32), bold_aff)
    img.header.set_zooms((bold_zoom,) * 3 + (tr,))
    nib.save(img, str(bold_path))
    metadata: dict = {"RepetitionTime": tr, "TaskName": "rest"}
    if slice_timing:
        n_slices = bold_shape[2]
        order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
        times = np.zeros(n_slices)
        times[order] = np.arange(n_slices) * tr / n_slices
        metadata["SliceTiming"] = times.round(4).tolist()
        metadata["SliceEncodingDirection"] = "k"
    bold_path.with_name(bold_path.name.replace(".nii.gz", ".json")).write_text(json.dumps(metadata))
    run = BoldRun(path=bold_path, entities={"subject": label, "task": "rest", "suffix": "bold"},
                  metadata=metadata, n_volumes=n_volumes, repetition_time=tr)
    session = SessionInputs(session=None, t1w=t1_path, bold_runs=(run,), t1w_entities={"subject": label})
    return ParticipantInputs(label=label, sessions=(session,))


def write_description(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.10.0"}))


def tiny_config(bids: Path, out: Path, **preproc) -> RunConfig:
    """The ``tiny`` preset (6 mm, 16^3) on 1 process, plus overrides."""
    values = {"resolution_mm": 6.0, "grid_shape": [16, 16, 16], "registration": "rigid", "min_volumes": 10}
    values.update(preproc)
    execution = {"bids_dir": bids, "output_dir": out, "analysis_level": "participant", "nprocs": 2,
                 "omp_nthreads": 1}
    execution.update(values.pop("execution", {}))
    return RunConfig.model_validate({"execution": execution, "preproc": values, "run_id": "test-run"})
