"""The last node of a run: standardise, store in the tensor cache, and write optional derivatives.

Kept apart from the computing steps (as fMRIPrep keeps ``init_ds_*`` apart) so saving and
reporting can change without touching the arithmetic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.preproc import outputs, qc
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import BoldRecord, Motion, QCFigures, evolve, read_meta, slice_timing_from_record
from m2m_bids.preproc.grid import make_grid
from m2m_bids.preproc.maps import coverage_mask
from m2m_bids.preproc.resample import standardise_timeseries
from m2m_bids.preproc.steps import read_motion
from m2m_bids.preproc.template import grid_template

log = logging.getLogger(__name__)


def store_run(key: str, cache_dir: str, meta_json: str, t1w: str, mask: str, bold: str, motion: str,
              stc_record: str, standardize: bool, maps: dict[str, str], brain_grid: str | None = None,
              qc_anat: str | None = None, qc_bold: str | None = None) -> str:
    """Write the cache entry of one run; returns its folder. The brain mask is restricted to the
    voxels the BOLD field of view covers (a partial-coverage EPI leaves the rest at zero).
    ``maps`` names the per-run ``.npy`` maps (:mod:`m2m_bids.preproc.maps`, and the session's PET),
    stored zero outside that run mask like every tensor of the entry. Raw input also brings the
    T1w's own brain mask on the grid (stored whole as ``brain_mask``) and the QC figures
    (:class:`~m2m_bids.preproc.entrymeta.QCFigures`, :mod:`m2m_bids.preproc.regqc`)."""
    planned = read_meta(meta_json)
    bold_data = np.load(bold)
    brain = np.load(mask) > 0
    run_mask = coverage_mask(brain, bold_data)
    if run_mask.sum() < 0.05 * max(int(brain.sum()), 1):
        log.warning("%s: the BOLD field of view covers only %d of %d brain voxels", planned.provenance.source_bold,
                    int(run_mask.sum()), int(brain.sum()))
    fmri = standardise_timeseries(bold_data, run_mask) if standardize else bold_data * run_mask[..., None]
    motion_table = read_motion(motion)
    record = json.loads(Path(stc_record).read_text())
    motion_summary = Motion(mean_fd=float(motion_table[:, 6].mean()), max_fd=float(motion_table[:, 6].max()),
                            max_translation_mm=float(np.abs(motion_table[:, :3]).max()),
                            max_rotation_deg=float(np.rad2deg(np.abs(motion_table[:, 3:6]).max())))
    bold_record = (planned.bold or BoldRecord()).model_copy(update={
        "slice_timing": slice_timing_from_record(record), "motion": motion_summary, "n_volumes": int(fmri.shape[-1])})
    qc_figures: dict[str, Any] = json.loads(Path(qc_anat).read_text()) if qc_anat else {}
    if qc_bold:
        qc_figures["bold_t1w_cost"] = json.loads(Path(qc_bold).read_text())["coregistration_cost"]
    meta = evolve(planned, bold=bold_record, qc=QCFigures(**qc_figures), brain_voxels=int(run_mask.sum()))
    tensors = {"fmri": fmri, "smri": np.load(t1w), "mask": run_mask.astype(np.uint8)}
    if brain_grid:
        tensors["brain_mask"] = np.load(brain_grid).astype(np.uint8)
    tensors.update({name: np.load(path) * run_mask for name, path in sorted(maps.items())})  # 0 outside, as fmri
    entry = TensorCache(Path(cache_dir)).put(key, tensors, meta)
    log.info("cached %s (%s)", entry.key[:12], meta.provenance.source_bold)
    return str(entry.path)


def store_anat(key: str, cache_dir: str, meta_json: str, t1w: str, mask: str, brain_grid: str, gm: str,
               qc_anat: str, pet: str | None = None) -> str:
    """Write the T1w-only cache entry of a session without usable BOLD; returns its folder.

    The same tensors as a run's entry except the BOLD ones: ``smri``, ``mask`` (the template brain
    inside the T1w's field of view), ``brain_mask``, ``gm`` (and ``pet``), zero outside the mask.
    """
    planned = read_meta(meta_json)
    run_mask = np.load(mask) > 0
    tensors = {"smri": np.load(t1w), "mask": run_mask.astype(np.uint8),
               "brain_mask": np.load(brain_grid).astype(np.uint8), "gm": np.load(gm) * run_mask}
    if pet is not None:
        tensors["pet"] = np.load(pet) * run_mask
    meta = evolve(planned, qc=QCFigures(**json.loads(Path(qc_anat).read_text())), brain_voxels=int(run_mask.sum()))
    entry = TensorCache(Path(cache_dir)).put(key, tensors, meta)
    log.info("cached %s (T1w only: %s)", entry.key[:12], meta.no_bold)
    return str(entry.path)


def save_derivatives(entry_dir: str, deriv_json: str, t1w: str, mask: str, bold: str, motion: str,
                     stc_record: str, pet: str | None = None) -> list[str]:
    """``--save-preproc``: T1w, mask, smoothed BOLD (+ sidecars, confounds), the session's PET on
    the grid when it has one, and QC figures."""
    info = json.loads(deriv_json)
    writer, bids_dir = DerivativesWriter(info["output_dir"]), Path(info["bids_dir"])
    grid = make_grid(info["resolution_mm"], info["grid_shape"])
    entities = info["entities"]
    t1_entities = info["t1w_entities"]
    record = json.loads(Path(stc_record).read_text())
    motion_table = read_motion(motion)
    run_mask = np.load(Path(entry_dir) / "mask.npy")
    bold_data = np.load(bold)
    t1_data = np.load(t1w)
    written = outputs.write_anat(writer, t1_entities, t1_data, np.load(mask), grid.affine, info["template"],
                                 grid.resolution_mm, [outputs.bids_uri(Path(info["t1w"]), bids_dir)])
    sidecar = {"RepetitionTime": info["repetition_time"], "TaskName": entities.get("task"),
               "SliceTimingCorrected": bool(record.get("SliceTimingCorrected")),
               "Sources": [outputs.bids_uri(Path(info["bold"]), bids_dir),
                           outputs.bids_uri(Path(info["t1w"]), bids_dir)]}
    if record.get("SliceTimingCorrected"):
        sidecar["StartTime"] = record["StartTime"]
    sidecar["SmoothingFWHM"] = info["fwhm_mm"]
    written += outputs.write_func(writer, entities, bold_data * run_mask[..., None], grid.affine,
                                  info["template"], grid.resolution_mm, sidecar, motion_table)
    if pet is not None:
        written += outputs.write_pet(writer, info["pet_entities"], np.load(pet), grid.affine, info["template"],
                                     grid.resolution_mm, info["pet_sidecar"],
                                     [outputs.bids_uri(Path(info["pet"]), bids_dir),
                                      outputs.bids_uri(Path(info["t1w"]), bids_dir)])
    template_mask = grid_template("mask", grid)
    written.append(writer.save_figure(qc.registration_overlay(t1_data, bold_data.mean(axis=-1), template_mask),
                                      outputs.figure_path(writer, entities, "reg", ".png"), dpi=qc.DPI))
    written.append(writer.save_figure(qc.carpet_plot(bold_data, run_mask, motion_table[:, 6]),
                                      outputs.figure_path(writer, entities, "carpet", ".png"), dpi=qc.DPI))
    written.append(writer.save_figure(qc.motion_traces(motion_table),
                                      outputs.figure_path(writer, entities, "motion", ".svg"), dpi=qc.DPI))
    return [str(p) for p in written]
