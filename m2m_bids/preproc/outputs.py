"""Optional derivatives of the preprocessing (``--save-preproc``): names and sidecars.

Names come from the source file's BIDS entities and the package's one entity grammar; files are
written by the derivatives sink (:class:`m2m_bids.bids.derivatives.DerivativesWriter`: atomic,
every NIfTI with its sidecar).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter, res_label

__all__ = ["bids_uri", "bold_path", "figure_path", "write_anat", "write_func", "write_pet"]

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


def _entities(entities: dict[str, Any], keep: tuple[str, ...] = SOURCE_ENTITIES, **extra: str | None) -> dict[str, Any]:
    """The source entities a derivative keeps, plus its own (``space``, ``res``, ``desc``)."""
    return {**{name: entities.get(name) for name in keep}, **extra}


def bids_uri(path: Path, bids_dir: Path, dataset: str = "raw") -> str:
    """``bids:raw:sub-01/func/...`` (BIDS URI relative to the dataset named in DatasetLinks)."""
    try:
        rel = Path(path).resolve().relative_to(Path(bids_dir).resolve())
    except ValueError:
        return Path(path).resolve().as_uri()
    return f"bids:{dataset}:{rel.as_posix()}"


def _image(data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> nib.Nifti1Image:
    """float32 image in template space (mm/sec units, TR in pixdim[4] for 4D)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None and np.ndim(data) == 4:
        zooms = img.header.get_zooms()
        img.header.set_zooms(zooms[:3] + (float(tr),))
    img.set_qform(affine, code=4)  # MNI152 (template) space
    img.set_sform(affine, code=4)
    return img


def write_anat(writer: DerivativesWriter, entities: dict[str, Any], t1w: np.ndarray, mask: np.ndarray,
               affine: np.ndarray, template: str, resolution_mm: float, sources: list[str]) -> list[Path]:
    """Preprocessed T1w (+ brain mask) in template space with sidecars."""
    res = res_label(resolution_mm)
    keep = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")
    t1_file = writer.build_path(_entities(entities, keep, space=template, res=res, desc="preproc"), "T1w", ".nii.gz",
                                "anat")
    mask_file = writer.build_path(_entities(entities, keep, space=template, res=res, desc="brain"), "mask", ".nii.gz",
                                  "anat")
    common = {"Resolution": f"{resolution_mm:g} mm isotropic, {template} grid", "Sources": sources}
    writer.save_nifti(_image(t1w, affine), t1_file,
                      {**common, "SkullStripped": True,
                       "Description": "T1w, N4 bias-corrected, registered to the template, masked and z-scored "
                                      "(median/IQR) inside the brain mask"})
    writer.save_nifti(_image(mask, affine), mask_file, {**common, "Type": "Brain", "RawSources": sources})
    return [t1_file, mask_file]


def bold_path(writer: DerivativesWriter, entities: dict[str, Any], template: str, resolution_mm: float) -> Path:
    """Where the smoothed BOLD of a run goes (also how a re-run knows it is there)."""
    return writer.build_path(_entities(entities, space=template, res=res_label(resolution_mm), desc="smoothed"),
                             "bold", ".nii.gz", "func")


def write_func(writer: DerivativesWriter, entities: dict[str, Any], bold: np.ndarray, affine: np.ndarray,
               template: str, resolution_mm: float, sidecar: dict[str, Any], motion: np.ndarray) -> list[Path]:
    """Smoothed BOLD in template space with its sidecar, plus the motion confounds table."""
    bold_file = bold_path(writer, entities, template, resolution_mm)
    writer.save_nifti(_image(bold, affine, tr=sidecar.get("RepetitionTime")), bold_file,
                      {"Resolution": f"{resolution_mm:g} mm isotropic, {template} grid", "SkullStripped": False,
                       **sidecar})
    confounds = writer.build_path(_entities(entities, desc="confounds"), "timeseries", ".tsv", "func")
    columns = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement"]
    writer.save_tsv(pd.DataFrame(np.asarray(motion, dtype=float), columns=columns), confounds, float_format="%.6f",
                    sidecar={
        "trans_x": {"Description": "translation along x (mm), relative to the first volume", "Units": "mm"},
        "rot_x": {"Description": "rotation about x (rad), R = Rz Ry Rx about the FOV centre", "Units": "rad"},
        "framewise_displacement": {"Description": "Power et al. 2012, 50 mm sphere", "Units": "mm"},
    })
    return [bold_file, confounds]


def figure_path(writer: DerivativesWriter, entities: dict[str, Any], desc: str, extension: str) -> Path:
    """``OUTPUT_DIR/sub-X/figures/sub-X[_ses-Y]_task-..._desc-<desc>_bold.<ext>``."""
    suffix = "T1w" if desc.startswith("reg") else "bold"
    return writer.figure_path(_entities(entities, desc=desc), suffix, extension)


def write_pet(writer: DerivativesWriter, entities: dict[str, Any], pet: np.ndarray, affine: np.ndarray, template: str,
              resolution_mm: float, raw_sidecar: dict[str, Any], sources: list[str]) -> list[Path]:
    """Frame-averaged, normalised PET in template space, with a sidecar naming the frames it averages."""
    target = writer.build_path(_entities(entities, PET_ENTITIES, space=template, res=res_label(resolution_mm),
                                         desc="preproc"), "pet", ".nii.gz", "pet")
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
    writer.save_nifti(_image(pet, affine), target, sidecar)
    return [target]
