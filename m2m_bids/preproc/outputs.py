"""Optional derivatives of the preprocessing (``--save-preproc``): names, sidecars, atomic writes.

All file names are built here from the source file's BIDS entities, with the package's one entity
grammar (:func:`m2m_bids.bids.derivatives.bids_filename`).
Files are written with :mod:`m2m_bids.io_utils` atomic helpers (parallel jobs, killed runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from m2m_bids.bids.derivatives import bids_filename, res_label
from m2m_bids.io_utils import atomic_path, write_json_atomic

__all__ = ["bids_uri", "derivative_name", "figure_path", "res_label", "subject_dir", "write_anat", "write_func",
           "write_pet"]

#: Source entities a preprocessed BOLD/T1w name keeps (pybids' long names, as in ``BoldRun.entities``).
SOURCE_ENTITIES = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction", "direction", "run",
                   "echo", "part")
#: Source entities a preprocessed PET name keeps.
PET_ENTITIES = ("subject", "session", "tracer", "reconstruction", "run")
#: Raw PET sidecar fields a preprocessed PET keeps (what was injected and how it was reconstructed).
PET_SIDECAR_FIELDS = ("TracerName", "TracerRadionuclide", "InjectedRadioactivity", "InjectedRadioactivityUnits",
                      "InjectedMass", "InjectedMassUnits", "SpecificRadioactivity", "SpecificRadioactivityUnits",
                      "ModeOfAdministration", "TimeZero", "ScanStart", "InjectionStart", "ImageDecayCorrected",
                      "ImageDecayCorrectionTime", "ReconMethodName", "ReconMethodParameterLabels",
                      "ReconMethodParameterUnits", "ReconMethodParameterValues", "ReconFilterType", "ReconFilterSize",
                      "AttenuationCorrection")


def derivative_name(entities: dict[str, Any], *, space: str | None = None, res: str | None = None,
                    desc: str | None = None, suffix: str, extension: str, keep: tuple[str, ...] = SOURCE_ENTITIES) -> str:
    """``sub-01_ses-1_task-rest_run-1_space-X_res-3_desc-Y_suffix.ext`` from source entities."""
    kept = {name: entities.get(name) for name in keep}
    return bids_filename({**kept, "space": space, "res": res, "desc": desc}, suffix, extension)


def subject_dir(output_dir: Path, entities: dict[str, Any]) -> Path:
    """``OUTPUT_DIR/sub-X[/ses-Y]``."""
    folder = Path(output_dir) / f"sub-{entities['subject']}"
    return folder / f"ses-{entities['session']}" if entities.get("session") else folder


def bids_uri(path: Path, bids_dir: Path, dataset: str = "raw") -> str:
    """``bids:raw:sub-01/func/...`` (BIDS URI relative to the dataset named in DatasetLinks)."""
    try:
        rel = Path(path).resolve().relative_to(Path(bids_dir).resolve())
    except ValueError:
        return Path(path).resolve().as_uri()
    return f"bids:{dataset}:{rel.as_posix()}"


def write_nifti(data: np.ndarray, affine: np.ndarray, target: Path, tr: float | None = None) -> Path:
    """Atomic ``.nii.gz`` write (float32, mm/sec units, TR in pixdim[4] for 4D)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None and np.ndim(data) == 4:
        zooms = img.header.get_zooms()
        img.header.set_zooms(zooms[:3] + (float(tr),))
    img.set_qform(affine, code=4)  # MNI152 (template) space
    img.set_sform(affine, code=4)
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target


def write_anat(output_dir: Path, entities: dict[str, Any], t1w: np.ndarray, mask: np.ndarray, affine: np.ndarray,
               template: str, resolution_mm: float, sources: list[str]) -> list[Path]:
    """Preprocessed T1w (+ brain mask) in template space with sidecars."""
    anat = subject_dir(output_dir, entities) / "anat"
    res = res_label(resolution_mm)
    keep = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")
    t1_file = anat / derivative_name(entities, space=template, res=res, desc="preproc", suffix="T1w",
                                     extension=".nii.gz", keep=keep)
    mask_file = anat / derivative_name(entities, space=template, res=res, desc="brain", suffix="mask",
                                       extension=".nii.gz", keep=keep)
    write_nifti(t1w, affine, t1_file)
    write_nifti(mask, affine, mask_file)
    common = {"Resolution": f"{resolution_mm:g} mm isotropic, {template} grid", "Sources": sources}
    write_json_atomic(t1_file.with_name(t1_file.name.replace(".nii.gz", ".json")),
                      {**common, "SkullStripped": True,
                       "Description": "T1w, N4 bias-corrected, registered to the template, masked and z-scored "
                                      "(median/IQR) inside the brain mask"})
    write_json_atomic(mask_file.with_name(mask_file.name.replace(".nii.gz", ".json")),
                      {**common, "Type": "Brain", "RawSources": sources})
    return [t1_file, mask_file]


def write_func(output_dir: Path, entities: dict[str, Any], bold: np.ndarray, affine: np.ndarray, template: str,
               resolution_mm: float, sidecar: dict[str, Any], motion: np.ndarray) -> list[Path]:
    """Smoothed BOLD in template space with its sidecar, plus the motion confounds table."""
    func = subject_dir(output_dir, entities) / "func"
    res = res_label(resolution_mm)
    bold_file = func / derivative_name(entities, space=template, res=res, desc="smoothed", suffix="bold",
                                       extension=".nii.gz")
    write_nifti(bold, affine, bold_file, tr=sidecar.get("RepetitionTime"))
    write_json_atomic(bold_file.with_name(bold_file.name.replace(".nii.gz", ".json")),
                      {"Resolution": f"{resolution_mm:g} mm isotropic, {template} grid", "SkullStripped": False,
                       **sidecar})
    confounds = func / derivative_name(entities, desc="confounds", suffix="timeseries", extension=".tsv")
    header = "trans_x\ttrans_y\ttrans_z\trot_x\trot_y\trot_z\tframewise_displacement"
    rows = ["\t".join(f"{v:.6f}" for v in row) for row in np.asarray(motion)]
    with atomic_path(confounds) as tmp:
        tmp.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    write_json_atomic(confounds.with_name(confounds.name.replace(".tsv", ".json")), {
        "trans_x": {"Description": "translation along x (mm), relative to the first volume", "Units": "mm"},
        "rot_x": {"Description": "rotation about x (rad), R = Rz Ry Rx about the FOV centre", "Units": "rad"},
        "framewise_displacement": {"Description": "Power et al. 2012, 50 mm sphere", "Units": "mm"},
    })
    return [bold_file, confounds]


def figure_path(output_dir: Path, entities: dict[str, Any], desc: str, extension: str) -> Path:
    """``OUTPUT_DIR/sub-X/figures/sub-X[_ses-Y]_task-..._desc-<desc>_bold.<ext>``."""
    folder = Path(output_dir) / f"sub-{entities['subject']}" / "figures"
    suffix = "T1w" if desc.startswith("reg") else "bold"
    return folder / derivative_name(entities, desc=desc, suffix=suffix, extension=extension)


def write_pet(output_dir: Path, entities: dict[str, Any], pet: np.ndarray, affine: np.ndarray, template: str,
              resolution_mm: float, raw_sidecar: dict[str, Any], sources: list[str]) -> list[Path]:
    """Frame-averaged, normalised PET in template space, with a sidecar naming the frames it averages."""
    folder = subject_dir(output_dir, entities) / "pet"
    target = folder / derivative_name(entities, space=template, res=res_label(resolution_mm), desc="preproc",
                                      suffix="pet", extension=".nii.gz", keep=PET_ENTITIES)
    write_nifti(pet, affine, target)
    starts = raw_sidecar.get("FrameTimesStart") or [raw_sidecar.get("ScanStart", 0)]
    durations = raw_sidecar.get("FrameDuration") or [0]
    durations = durations if isinstance(durations, list) else [durations]
    sidecar = {key: raw_sidecar[key] for key in PET_SIDECAR_FIELDS if key in raw_sidecar}
    sidecar.update({
        "Units": "arbitrary", "FrameTimesStart": [float(starts[0])], "FrameDuration": [float(sum(durations))],
        "Resolution": f"{resolution_mm:g} mm isotropic, {template} grid", "SkullStripped": True, "Sources": sources,
        "Description": "frames averaged (weighted by FrameDuration), rigidly registered to the T1w (ANTs, mutual "
                       "information), resampled once to the template grid, divided by the mean of the top 0.1 % "
                       "brain voxels; voxels under 10 % of it and outside the brain mask set to 0",
    })
    write_json_atomic(target.with_name(target.name.replace(".nii.gz", ".json")), sidecar)
    return [target]
