"""One validated object for every setting of a run: :class:`RunConfig`.

Sections are frozen pydantic models with the paper's defaults (M2M-AlignNet, Wei et al. 2025).
Values come, lowest priority first, from the defaults, a named preset, a TOML/YAML config file and
the command line. The resolved object is saved per run to ``OUTPUT_DIR/logs/<run-id>/config.toml``
(provenance, and the input for re-running exactly: ``--config-file`` that file).

Nothing here is global: the CLI builds one ``RunConfig`` and passes sections down.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import sys
import uuid
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.textinput import load_yaml, read_text_input

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

class AnalysisLevel(str, Enum):
    """BIDS-App analysis levels: ``participant`` maps (preprocess, cache, apply), ``group`` reduces (train)."""

    participant = "participant"
    group = "group"


class Preset(str, Enum):
    """Named bundles of defaults (data, not code: see :data:`PRESETS`)."""

    default = "default"
    paper = "paper"
    fast = "fast"
    tiny = "tiny"


def new_run_id() -> str:
    """A sortable, unique run identifier: UTC timestamp plus a short random suffix."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}_{uuid.uuid4().hex[:8]}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Execution(_Section):
    """Where data lives, what to select, and how to run (BIDS-App contract options)."""

    bids_dir: Path
    output_dir: Path
    analysis_level: AnalysisLevel
    participant_label: list[str] = Field(default_factory=list)
    exclude_participant_label: list[str] = Field(default_factory=list)
    session_label: list[str] = Field(default_factory=list)
    task: list[str] = Field(default_factory=list)
    bids_filters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    derivatives: dict[str, Path] = Field(default_factory=dict)
    skip_bids_validation: bool = False
    work_dir: Path | None = None
    cache_dir: Path | None = None
    nprocs: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    omp_nthreads: int | None = Field(default=None, ge=1)
    mem_gb: float | None = Field(default=None, gt=0)
    device: str = "auto"
    random_seed: int = 0
    stop_on_first_crash: bool = False
    dry_run: bool = False
    save_preproc: bool = False
    qc_override: bool = False  # use participants that fail registration/coverage QC (preproc/regqc.py)
    model: Path | None = None
    allow_training_participants: bool = False
    nipype_plugin: str = "MultiProc"
    nipype_plugin_args: dict[str, Any] = Field(default_factory=dict)
    verbosity: int = 0

    @field_validator("bids_dir", "output_dir", "work_dir", "cache_dir", "model")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Paths are made absolute once, here: nipype runs nodes in their own folders."""
        return None if value is None else value.expanduser().absolute()

    @field_validator("derivatives")
    @classmethod
    def _absolute_derivatives(cls, value: dict[str, Path]) -> dict[str, Path]:
        return {name: path.expanduser().absolute() for name, path in value.items()}

    @field_validator("participant_label", "exclude_participant_label", mode="before")
    @classmethod
    def _strip_sub(cls, value: Any) -> Any:
        return [strip_prefix(str(v), "sub") for v in (value or [])]

    @field_validator("session_label", mode="before")
    @classmethod
    def _strip_ses(cls, value: Any) -> Any:
        return [strip_prefix(str(v), "ses") for v in (value or [])]

    @field_validator("task", mode="before")
    @classmethod
    def _strip_task(cls, value: Any) -> Any:
        return [strip_prefix(str(v), "task") for v in (value or [])]

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in {"auto", "cpu", "cuda"} or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")

    @property
    def resolved_work_dir(self) -> Path:
        """The work dir, defaulting to ``OUTPUT_DIR/../work`` would surprise users; use OUTPUT_DIR/work."""
        return self.work_dir if self.work_dir is not None else self.output_dir / "work"

    @property
    def resolved_cache_dir(self) -> Path:
        """Tensor cache location: ``--cache-dir`` or ``<work dir>/tensor-cache``."""
        return self.cache_dir if self.cache_dir is not None else self.resolved_work_dir / "tensor-cache"

    @property
    def threads(self) -> int:
        """Threads per process for ANTs/ITK and torch: ``--omp-nthreads`` or min(nprocs, 8)."""
        return self.omp_nthreads or max(1, min(self.nprocs, 8))


class Preproc(_Section):
    """Preprocessing parameters (the paper: SPM12 motion + slice-timing correction, MNI 3 mm, 6 mm FWHM).

    Every field is part of the tensor-cache key: change one and the cache is rebuilt.
    """

    template: str = "MNI152NLin2009aSym"
    resolution_mm: float = Field(default=3.0, gt=0)
    grid_shape: tuple[int, int, int] = (64, 64, 64)
    fwhm_mm: float = Field(default=6.0, ge=0)
    registration: Literal["rigid", "affine", "syn"] = "syn"  # docs/preprocessing.md: SyN reaches r >= 0.75 on real scans
    dummy_scans: int = Field(default=0, ge=0)
    slice_time_ref: float = Field(default=0.5, ge=0, le=1)
    slice_timing: bool = True
    motion_correction: bool = True
    min_volumes: int = Field(default=20, ge=2)
    standardize_bold: bool = True
    alff_band_hz: tuple[float, float] = (0.01, 0.08)  # low-frequency band of the ALFF/fALFF maps
    # Limits on what is accepted (not how it is processed: outside the cache key, see ACCEPTANCE_ONLY)
    max_image_gb: float = Field(default=4.0, gt=0)  # one input image as float32 in memory, checked from its header
    max_fd_mm: float = Field(default=50.0, gt=0)  # largest plausible framewise displacement of a BOLD run
    max_rotation_deg: float = Field(default=30.0, gt=0)  # largest plausible head rotation from the reference volume
    flag_mean_fd_mm: float = Field(default=0.5, gt=0)  # a run above this mean FD is accepted with a warning


#: Preproc fields that decide whether an input is accepted but never change a tensor: they are left
#: out of the cache key and of the model card's preprocessing check.
ACCEPTANCE_ONLY = frozenset({"max_image_gb", "max_fd_mm", "max_rotation_deg", "flag_mean_fd_mm"})


class ModelCfg(_Section):
    """Which architecture (``--arch``) and its hyper-parameters; see ``m2m_bids.models``."""

    arch: str = "m2m"
    modalities: list[Literal["fmri", "smri", "tabular"]] = Field(
        default_factory=lambda: ["fmri", "smri", "tabular"])
    window_frames: int = Field(default=20, ge=1)
    overrides: dict[str, Any] = Field(default_factory=dict)


class Train(_Section):
    """Group-level training and cross-validation (defaults from the paper, section IV-A)."""

    label_column: str = "diagnosis"
    classes: list[str] = Field(default_factory=lambda: ["CN", "AD"])
    label_rule: str | None = None
    tabular_columns: list[str] = Field(default_factory=list)
    folds: int = Field(default=5, ge=2)
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    epochs: int = Field(default=100, ge=1)
    warmup_epochs: int = Field(default=20, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=8, ge=1)
    # M2M alignment weight (lambda) and its ramp: the weight rises linearly from 0 over this fraction of
    # the epochs, so the classifier starts learning before the alignment term can dominate it. Chosen by
    # measurement (docs/training.md); align_weight = 1, align_ramp = 0 is the paper's literal objective.
    align_weight: float = Field(default=0.1, ge=0)
    align_ramp: float = Field(default=0.5, ge=0, le=1)
    grad_clip: float | None = 1.0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    class_balance: Literal["none", "weighted_loss", "sampler"] = "weighted_loss"
    augment: bool = False
    num_workers: int = Field(default=2, ge=0)
    checkpoint_every: int = Field(default=5, ge=1)
    resume: bool = False
    compile: bool = False
    samples_per_run: int = Field(default=1, ge=1)  # random fMRI windows drawn per run per epoch
    max_eval_windows: int | None = Field(default=None, ge=1)  # windows scored per run at evaluation; None: all
    # Which epoch's weights a split keeps: best validation ROC-AUC (ties: lower validation loss), lowest
    # validation loss, the last epoch, or 'auto' = val_auc when every class has min_val_per_class
    # validation participants and the last epoch otherwise (an AUC over a few people is noise)
    epoch_selection: Literal["auto", "val_auc", "val_loss", "last"] = "auto"
    min_val_per_class: int = Field(default=5, ge=1)

    @field_validator("label_rule")
    @classmethod
    def _check_label_rule(cls, value: str | None) -> str | None:
        """Refuse a malformed or unbounded rule now, before any preprocessing is spent on the run."""
        if value is None:
            return value
        from m2m_bids.label_rule import LabelRule, RuleError

        try:
            LabelRule.parse(value)
        except RuleError as err:
            raise ValueError(str(err)) from None
        return value


class Interpret(_Section):
    """Explanations written at participant level with a model: atlas tables, brain states, reports."""

    atlas: str = "aal"
    top_k: int = Field(default=5, ge=1)
    n_states: int = Field(default=3, ge=1)
    saliency: bool = True
    reports: bool = True


#: Presets are data: deep-merged under the config file and the command line.
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.default: {},
    Preset.paper: {"model": {"window_frames": 128}},
    Preset.fast: {"train": {"epochs": 30, "warmup_epochs": 3}},
    Preset.tiny: {
        "preproc": {"resolution_mm": 6.0, "grid_shape": [16, 16, 16], "registration": "rigid"},
        "model": {"window_frames": 4, "overrides": {"preset": "tiny"}},
        "train": {"epochs": 4, "warmup_epochs": 1, "folds": 2, "batch_size": 4, "num_workers": 0},
    },
}


class RunConfig(_Section):
    """Every option of one run, validated once. Pass sections (``cfg.preproc``), not the whole object."""

    execution: Execution
    preproc: Preproc = Field(default_factory=Preproc)
    model: ModelCfg = Field(default_factory=ModelCfg)
    train: Train = Field(default_factory=Train)
    interpret: Interpret = Field(default_factory=Interpret)
    preset: Preset = Preset.default
    run_id: str = Field(default_factory=new_run_id)

    #: Values never reused from a saved config file: they belong to the run that wrote it.
    REUSE_SKIPS: ClassVar[frozenset[str]] = frozenset({"run_id"})

    @model_validator(mode="after")
    def _check_paths(self) -> RunConfig:
        ex = self.execution
        bids = ex.bids_dir.resolve()
        out = ex.output_dir.resolve()
        if out == bids:
            raise ValueError(
                f"OUTPUT_DIR is the BIDS dataset itself ({bids}); outputs must go elsewhere, "
                f"e.g. {bids / 'derivatives' / 'm2m-bids'}")
        if _is_below(out, bids) and not _is_below(out, bids / "derivatives"):
            raise ValueError(
                f"OUTPUT_DIR {out} is inside the BIDS dataset but not under its derivatives/ folder; "
                f"use {bids / 'derivatives' / 'm2m-bids'} or a folder outside {bids}")
        work = ex.resolved_work_dir.resolve()
        if _is_below(work, bids) and not _is_below(work, bids / "derivatives"):
            raise ValueError(f"the work directory {work} is inside the BIDS dataset {bids}; choose another")
        return self

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready data: paths as strings, unset options left out.

        TOML has no null, but a BIDS filter value of ``null`` means "entity absent", so inside
        ``bids_filters`` it is written as :data:`TOML_NONE` and read back as ``None``.
        """
        data = self.model_dump(mode="json", exclude_none=True)
        data["execution"]["bids_filters"] = _replace(self.execution.bids_filters, None, TOML_NONE)
        return data

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (the runner saves it as ``logs/<run-id>/config.toml``)."""
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RunConfig:
        """Load a complete configuration from TOML or YAML."""
        return cls.model_validate(load_config_file(path))


#: How a ``null`` BIDS filter value is spelled in TOML files (which have no null).
TOML_NONE = "__none__"


def _replace(value: Any, old: Any, new: Any) -> Any:
    """Recursively replace ``old`` by ``new`` in nested dicts/lists (``None``/sentinel conversion)."""
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if value == old else value


def _is_below(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


#: The sections of a config file (and of :class:`RunConfig`).
SECTIONS = ("execution", "preproc", "model", "train", "interpret")


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yml``/``.yaml``) config file into nested dicts."""
    path = Path(path)
    text = read_text_input(path, "config file", option="--config-file")
    try:
        if path.suffix.lower() in {".yml", ".yaml"}:
            data = load_yaml(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise AppError(f"the config file is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {err}",
                       ExitCode.USAGE, path=str(path)) from err
    if not isinstance(data, dict) or not all(isinstance(data[k], dict) for k in SECTIONS if k in data):
        raise AppError("the config file must hold a table of sections", ExitCode.USAGE, path=str(path),
                       hint=f"put settings under {', '.join(f'[{k}]' for k in SECTIONS)}, as `m2m --help` shows")
    filters = data.get("execution", {}).get("bids_filters")
    if filters is not None:
        data["execution"]["bids_filters"] = _replace(filters, TOML_NONE, None)
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``update``; nested tables merge key by key, other values replace."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "bids_filters":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def seed_everything(seed: int) -> None:
    """One ``--random-seed`` seeds Python, numpy, torch (CPU and CUDA) and ANTs."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ["ANTS_RANDOM_SEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
