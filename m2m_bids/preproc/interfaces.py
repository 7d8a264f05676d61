"""Nipype interfaces: thin wrappers that run one function of :mod:`m2m_bids.preproc.steps` each.

Each ``_run_interface`` calls a pure function with the node's working directory as ``out_dir``,
so nipype caches and resumes per node. A user-facing :class:`~m2m_bids.exitcodes.AppError` is
re-raised with a one-line JSON marker (:data:`ERROR_MARKER`) that survives nipype's crash file,
so the caller can report "which file, what is wrong, what to do" instead of a traceback.
"""

from __future__ import annotations

import json
import os

from nipype.interfaces.base import (BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined,
                                    traits)

from m2m_bids.exitcodes import FULL_ERRNOS, AppError, ExitCode
from m2m_bids.preproc.fmriprep import fmriprep_to_grid
from m2m_bids.preproc.sink import save_derivatives, store_anat, store_run
from m2m_bids.preproc.steps import (bold_maps, bold_motion, bold_prepare, bold_slice_timing, bold_to_grid,
                                    grey_matter_grid, pet_prepare, pet_to_grid, rigid_coregister, smooth_grid,
                                    t1w_prepare, t1w_register, t1w_to_grid)

ERROR_MARKER = "M2M-APPERROR:"


class _StepInterface(SimpleInterface):
    """Runs ``self._step(**inputs, out_dir=cwd)`` and maps its return value onto output names."""

    _outputs_names: tuple[str, ...] = ()

    def _step(self, out_dir: str):  # pragma: no cover - overridden
        raise NotImplementedError

    def _run_interface(self, runtime):
        try:
            result = self._step(out_dir=os.getcwd())
        except AppError as err:
            payload = {"message": err.message, "code": int(err.code), "path": err.path, "hint": err.hint}
            raise RuntimeError(f"{ERROR_MARKER}{json.dumps(payload)}") from err
        except OSError as err:
            if err.errno not in FULL_ERRNOS:
                raise
            payload = {"message": f"the disk is full: {err.strerror}", "code": int(ExitCode.IO_ERROR),
                       "path": err.filename or os.getcwd(),
                       "hint": "free some space, or point --work-dir (and --cache-dir) at a larger file system"}
            raise RuntimeError(f"{ERROR_MARKER}{json.dumps(payload)}") from err
        values = result if isinstance(result, tuple) else (result,)
        for name, value in zip(self._outputs_names, values):
            self._results[name] = value
        return runtime


# -- T1w -------------------------------------------------------------------------------------------
class _T1wPrepareIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw T1w")
    resolution_mm = traits.Float(mandatory=True)
    threads = traits.Int(1, usedefault=True)


class _T1wPrepareOut(TraitedSpec):
    out_file = File(exists=True)
    brain = File(exists=True, desc="brain mask on the prepared T1w's grid")
    brain_record = File(exists=True, desc="brain extraction record (JSON)")


class T1wPrepare(_StepInterface):
    """Reorient, brain extraction, downsample, N4 bias-field correction, robust intensity clipping."""

    input_spec, output_spec, _outputs_names = _T1wPrepareIn, _T1wPrepareOut, ("out_file", "brain", "brain_record")

    def _step(self, out_dir):
        i = self.inputs
        return t1w_prepare(i.in_file, i.resolution_mm, i.threads, out_dir)


class _GridIn(BaseInterfaceInputSpec):
    resolution_mm = traits.Float(mandatory=True)
    grid_shape = traits.List(traits.Int, minlen=3, maxlen=3, mandatory=True)


class _T1wRegisterIn(_GridIn):
    in_file = File(exists=True, mandatory=True)
    brain = File(exists=True, mandatory=True)
    method = traits.Enum("rigid", "affine", "syn", usedefault=True, default="affine")
    seed = traits.Int(0, usedefault=True)


class _TransformOut(TraitedSpec):
    transform = File(exists=True)


class T1wRegister(_StepInterface):
    """ANTs registration of the T1w to the MNI template."""

    input_spec, output_spec, _outputs_names = _T1wRegisterIn, _TransformOut, ("transform",)

    def _step(self, out_dir):
        i = self.inputs
        return t1w_register(i.in_file, i.brain, i.method, i.resolution_mm, list(i.grid_shape), i.seed, out_dir)


class _T1wToGridIn(_GridIn):
    in_file = File(exists=True, mandatory=True)
    brain = File(exists=True, mandatory=True)
    brain_record = File(exists=True, mandatory=True)
    transform = File(exists=True, mandatory=True)


class _T1wToGridOut(TraitedSpec):
    t1w = File(exists=True)
    mask = File(exists=True)
    brain = File(exists=True)
    qc = File(exists=True, desc="anatomical QC figures (JSON)")


class T1wToGrid(_StepInterface):
    """Resample + mask + intensity-normalise the T1w and its brain on the output grid; QC figures."""

    input_spec, output_spec, _outputs_names = _T1wToGridIn, _T1wToGridOut, ("t1w", "mask", "brain", "qc")

    def _step(self, out_dir):
        i = self.inputs
        return t1w_to_grid(i.in_file, i.brain, i.brain_record, i.transform, i.resolution_mm, list(i.grid_shape),
                           out_dir)


# -- BOLD ------------------------------------------------------------------------------------------
class _BoldPrepareIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    dummy_scans = traits.Int(0, usedefault=True)
    min_volumes = traits.Int(2, usedefault=True)


class _OutFile(TraitedSpec):
    out_file = File(exists=True)


class BoldPrepare(_StepInterface):
    """Reorient to RAS float32, drop dummy scans, check the length."""

    input_spec, output_spec, _outputs_names = _BoldPrepareIn, _OutFile, ("out_file",)

    def _step(self, out_dir):
        i = self.inputs
        return bold_prepare(i.in_file, i.dummy_scans, i.min_volumes, out_dir)


class _SliceTimingIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    source_file = File(exists=True, mandatory=True, desc="the raw BOLD (its stored slice axis)")
    metadata = traits.Str(mandatory=True, desc="sidecar metadata as JSON")
    ref_fraction = traits.Float(0.5, usedefault=True)
    enabled = traits.Bool(True, usedefault=True)


class _SliceTimingOut(TraitedSpec):
    out_file = File(exists=True)
    record = File(exists=True)


class SliceTiming(_StepInterface):
    """Fourier slice-timing correction from SliceTiming/SliceEncodingDirection (or a recorded skip)."""

    input_spec, output_spec, _outputs_names = _SliceTimingIn, _SliceTimingOut, ("out_file", "record")

    def _step(self, out_dir):
        i = self.inputs
        return bold_slice_timing(i.in_file, i.source_file, i.metadata, i.ref_fraction, i.enabled, out_dir)


class _MotionIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    source_file = File(exists=True, desc="the raw BOLD (named in messages)")
    enabled = traits.Bool(True, usedefault=True)
    max_fd_mm = traits.Float(float("inf"), usedefault=True, desc="largest plausible framewise displacement")
    max_rotation_deg = traits.Float(float("inf"), usedefault=True, desc="largest plausible rotation")


class _MotionOut(TraitedSpec):
    motion = File(exists=True)
    boldref = File(exists=True)


class Motion(_StepInterface):
    """Rigid head-motion estimation (6 parameters + FD) and the realigned mean BOLD."""

    input_spec, output_spec, _outputs_names = _MotionIn, _MotionOut, ("motion", "boldref")

    def _step(self, out_dir):
        i = self.inputs
        return bold_motion(i.in_file, i.enabled, out_dir, source=i.source_file if isdefined(i.source_file) else None,
                           max_fd_mm=i.max_fd_mm, max_rotation_deg=i.max_rotation_deg)


class _CoregIn(BaseInterfaceInputSpec):
    moving = File(exists=True, mandatory=True, desc="boldref or mean PET")
    t1w = File(exists=True, mandatory=True)
    brain = File(exists=True, mandatory=True, desc="the T1w's brain mask (where the cost is measured)")
    seed = traits.Int(0, usedefault=True)


class _CoregOut(TraitedSpec):
    transform = File(exists=True)
    qc = File(exists=True, desc="coregistration cost (JSON)")


class Coregister(_StepInterface):
    """Rigid mean-BOLD or mean-PET -> T1w registration (ANTs, mutual information) and its cost."""

    input_spec, output_spec, _outputs_names = _CoregIn, _CoregOut, ("transform", "qc")

    def _step(self, out_dir):
        i = self.inputs
        return rigid_coregister(i.moving, i.t1w, i.brain, i.seed, out_dir)


class _BoldToGridIn(_GridIn):
    in_file = File(exists=True, mandatory=True)
    motion = File(exists=True, mandatory=True)
    coreg = File(exists=True, mandatory=True)
    transform = File(exists=True, mandatory=True)


class BoldToGrid(_StepInterface):
    """One resampling of the series to the grid (motion, BOLD->T1w, T1w->MNI composed)."""

    input_spec, output_spec, _outputs_names = _BoldToGridIn, _OutFile, ("out_file",)

    def _step(self, out_dir):
        i = self.inputs
        return bold_to_grid(i.in_file, i.motion, i.coreg, i.transform, i.resolution_mm, list(i.grid_shape), out_dir)


class _SmoothIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    fwhm_mm = traits.Float(mandatory=True)
    resolution_mm = traits.Float(mandatory=True)


class Smooth(_StepInterface):
    """Isotropic Gaussian smoothing (FWHM in mm)."""

    input_spec, output_spec, _outputs_names = _SmoothIn, _OutFile, ("out_file",)

    def _step(self, out_dir):
        i = self.inputs
        return smooth_grid(i.in_file, i.fwhm_mm, i.resolution_mm, out_dir)


# -- PET -------------------------------------------------------------------------------------------
class _PetPrepareIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw PET (3D or 4D frames)")
    frame_durations = traits.List(traits.Float, desc="FrameDuration (s); empty: unweighted mean")


class PetPrepare(_StepInterface):
    """Reorient to RAS and average the frames, weighted by FrameDuration."""

    input_spec, output_spec, _outputs_names = _PetPrepareIn, _OutFile, ("out_file",)

    def _step(self, out_dir):
        return pet_prepare(self.inputs.in_file, list(self.inputs.frame_durations), out_dir)


class _PetToGridIn(_GridIn):
    in_file = File(exists=True, mandatory=True)
    coreg = File(exists=True, mandatory=True)
    transform = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True, desc="brain mask on the grid (.npy)")


class PetToGrid(_StepInterface):
    """One resampling of the mean PET to the grid (PET->T1w o T1w->MNI) + Arco et al. normalisation."""

    input_spec, output_spec, _outputs_names = _PetToGridIn, _OutFile, ("out_file",)

    def _step(self, out_dir):
        i = self.inputs
        return pet_to_grid(i.in_file, i.coreg, i.transform, i.mask, i.resolution_mm, list(i.grid_shape), out_dir)


# -- per-run maps ----------------------------------------------------------------------------------
class _GreyMatterIn(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="T1w on the grid (.npy)")
    mask = File(exists=True, mandatory=True, desc="brain mask on the grid (.npy)")
    brain = File(exists=True, desc="the T1w's own brain mask on the grid (.npy; raw input)")
    resolution_mm = traits.Float(mandatory=True)


class _GreyMatterOut(TraitedSpec):
    gm = File(exists=True)


class GreyMatter(_StepInterface):
    """Grey-matter probability of the T1w on the grid (ANTs Atropos)."""

    input_spec, output_spec, _outputs_names = _GreyMatterIn, _GreyMatterOut, ("gm",)

    def _step(self, out_dir):
        i = self.inputs
        return grey_matter_grid(i.t1w, i.mask, i.resolution_mm, out_dir,
                                brain_grid=i.brain if isdefined(i.brain) else None)


class _BoldMapsIn(BaseInterfaceInputSpec):
    bold = File(exists=True, mandatory=True, desc="BOLD on the grid before z-scoring (.npy)")
    mask = File(exists=True, mandatory=True, desc="brain mask on the grid (.npy)")
    repetition_time = traits.Float(mandatory=True)
    band_hz = traits.List(traits.Float, minlen=2, maxlen=2, mandatory=True)


class _BoldMapsOut(TraitedSpec):
    alff = File(exists=True)
    falff = File(exists=True)
    bold_mean = File(exists=True)


class BoldMaps(_StepInterface):
    """mALFF, fALFF and the normalised mean BOLD image on the grid."""

    input_spec, output_spec, _outputs_names = _BoldMapsIn, _BoldMapsOut, ("alff", "falff", "bold_mean")

    def _step(self, out_dir):
        i = self.inputs
        return bold_maps(i.bold, i.mask, i.repetition_time, list(i.band_hz), out_dir)


# -- outputs ---------------------------------------------------------------------------------------
class _StoreCommonIn(BaseInterfaceInputSpec):
    """What every cache entry stores, with or without BOLD."""

    key = traits.Str(mandatory=True)
    cache_dir = traits.Str(mandatory=True)
    meta = traits.Str(mandatory=True, desc="entry metadata as JSON")
    t1w = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    gm = File(exists=True, mandatory=True)
    pet = File(exists=True, desc="the session's PET on the grid (.npy), when it has one")
    brain = File(exists=True, desc="the T1w's brain mask on the grid (.npy; raw input)")
    qc_anat = File(exists=True, desc="anatomical QC figures (JSON; raw input)")


class _StoreIn(_StoreCommonIn):
    bold = File(exists=True, mandatory=True)
    motion = File(exists=True, mandatory=True)
    stc_record = File(exists=True, mandatory=True)
    alff = File(exists=True, mandatory=True)
    falff = File(exists=True, mandatory=True)
    bold_mean = File(exists=True, mandatory=True)
    qc_bold = File(exists=True, desc="BOLD -> T1w coregistration cost (JSON; raw input)")
    standardize = traits.Bool(True, usedefault=True)


class _StoreOut(TraitedSpec):
    entry_dir = traits.Str()


class StoreRun(_StepInterface):
    """Standardise the series in the mask and store the run in the tensor cache."""

    input_spec, output_spec, _outputs_names = _StoreIn, _StoreOut, ("entry_dir",)

    def _step(self, out_dir):
        i = self.inputs
        maps = {"gm": i.gm, "alff": i.alff, "falff": i.falff, "bold_mean": i.bold_mean}
        if isdefined(i.pet):
            maps["pet"] = i.pet
        optional = {arg: getattr(i, name) for name, arg in (("brain", "brain_grid"), ("qc_anat", "qc_anat"),
                                                            ("qc_bold", "qc_bold")) if isdefined(getattr(i, name))}
        return store_run(i.key, i.cache_dir, i.meta, i.t1w, i.mask, i.bold, i.motion, i.stc_record, i.standardize,
                         maps=maps, **optional)


class _StoreAnatIn(_StoreCommonIn):
    brain = File(exists=True, mandatory=True, desc="the T1w's brain mask on the grid (.npy)")
    qc_anat = File(exists=True, mandatory=True, desc="anatomical QC figures (JSON)")


class StoreAnat(_StepInterface):
    """Store a session without usable BOLD as a T1w-only cache entry."""

    input_spec, output_spec, _outputs_names = _StoreAnatIn, _StoreOut, ("entry_dir",)

    def _step(self, out_dir):
        i = self.inputs
        return store_anat(i.key, i.cache_dir, i.meta, i.t1w, i.mask, i.brain, i.gm, i.qc_anat,
                          pet=i.pet if isdefined(i.pet) else None)


class _DerivIn(BaseInterfaceInputSpec):
    entry_dir = traits.Str(mandatory=True)
    info = traits.Str(mandatory=True, desc="naming/sidecar information as JSON")
    t1w = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    bold = File(exists=True, mandatory=True)
    motion = File(exists=True, mandatory=True)
    stc_record = File(exists=True, mandatory=True)
    pet = File(exists=True, desc="the session's PET on the grid (.npy), when it has one")


class _DerivOut(TraitedSpec):
    out_files = traits.List(traits.Str)


class SaveDerivatives(_StepInterface):
    """``--save-preproc``: NIfTIs with sidecars, confounds and QC figures under OUTPUT_DIR."""

    input_spec, output_spec, _outputs_names = _DerivIn, _DerivOut, ("out_files",)

    def _step(self, out_dir):
        i = self.inputs
        return save_derivatives(i.entry_dir, i.info, i.t1w, i.mask, i.bold, i.motion, i.stc_record,
                                pet=i.pet if isdefined(i.pet) else None)


# -- fMRIPrep derivatives --------------------------------------------------------------------------
class _FmriprepIn(_GridIn):
    bold = File(exists=True, mandatory=True, desc="MNI-space desc-preproc BOLD")
    t1w = File(exists=True, mandatory=True, desc="MNI-space desc-preproc T1w")
    mask = traits.Either(None, File(exists=True), usedefault=True, default=None)
    t1w_mask = traits.Either(None, File(exists=True), usedefault=True, default=None)
    confounds = traits.Either(None, File(exists=True), usedefault=True, default=None)
    dummy_scans = traits.Int(0, usedefault=True)
    min_volumes = traits.Int(2, usedefault=True)


class _FmriprepOut(TraitedSpec):
    t1w = File(exists=True)
    mask = File(exists=True)
    bold = File(exists=True)
    motion = File(exists=True)
    stc_record = File(exists=True)


class FmriprepToGrid(_StepInterface):
    """Resample fMRIPrep's MNI-space outputs onto the grid (no registration needed)."""

    input_spec, output_spec = _FmriprepIn, _FmriprepOut
    _outputs_names = ("t1w", "mask", "bold", "motion", "stc_record")

    def _step(self, out_dir):
        i = self.inputs
        return fmriprep_to_grid(i.bold, i.t1w, i.mask, i.t1w_mask, i.confounds, i.dummy_scans, i.min_volumes,
                                i.resolution_mm, list(i.grid_shape), out_dir)
