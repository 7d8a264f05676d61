"""Building the run configuration, and the choices of a run that can be checked without data.

:func:`build_config` resolves defaults < preset < config file < command line into one
:class:`~m2m_bids.config.RunConfig` and runs :func:`preflight` on it before any preprocessing.

A typo in ``--arch``, an unknown model option, a grid the network cannot tile or a ``--model`` path
that does not exist used to surface after every participant had been preprocessed (minutes to
hours). :func:`preflight` runs when the configuration is built and turns each into a usage error
(exit 64) or a missing-input error (exit 66) at once.

It also resolves the model bundle of a participant-level run and **adopts its preprocessing
settings**: a model trained on 6 mm, 16^3 tensors must be applied to tensors made the same way, so
the user does not hand-write a config file to match the card. Only a setting the user chose
explicitly (command line or config file) that differs from the card is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m2m_bids.config import ACCEPTANCE_ONLY, PRESETS, Preset, RunConfig, deep_merge, load_config_file
from m2m_bids.exitcodes import AppError, ExitCode

#: Command-line spelling of the preprocessing fields, for messages.
FLAG_OF = {"fwhm_mm": "--fwhm", "registration": "--registration", "dummy_scans": "--dummy-scans",
           "slice_time_ref": "--slice-time-ref"}


def build_config(cli_values: dict[str, Any], config_file: Path | None = None,
                 preset: Preset | None = None) -> RunConfig:
    """Resolve defaults < preset < config file < command line into one validated :class:`RunConfig`.

    ``cli_values`` holds only what the user actually passed (nested by section). A preset named on
    the command line wins over one named in the file.
    """
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = load_config_file(config_file)
        for skip in RunConfig.REUSE_SKIPS:
            file_values.pop(skip, None)
    chosen = Preset(preset or file_values.get("preset") or Preset.default)
    data = deep_merge(PRESETS[chosen], file_values)
    data = deep_merge(data, cli_values)
    data["preset"] = chosen.value
    try:
        cfg = RunConfig.model_validate(data)
    except ValueError as err:
        raise AppError(f"invalid options:\n{_format_validation_error(err)}", ExitCode.USAGE,
                       hint="see `m2m --help`") from err
    given = deep_merge(file_values, cli_values)
    explicit = {section: set(values) for section, values in given.items() if isinstance(values, dict)}
    return preflight(cfg, explicit, not_adopted=ACCEPTANCE_ONLY | {"min_volumes"})


def _format_validation_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err)
    lines = []
    for item in errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "config"
        message = str(item.get("msg", ""))
        for prefix in ("Value error, ", "Assertion failed, "):  # pydantic's wording, not ours
            message = message.removeprefix(prefix)
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def preflight(cfg: Any, explicit: Mapping[str, set[str]], not_adopted: frozenset[str] = frozenset()) -> Any:
    """Check ``cfg`` (a :class:`~m2m_bids.config.RunConfig`) and return it with the bundle adopted.

    ``explicit`` names, per section, the settings the user gave on the command line or in a config
    file (preset values and defaults are not explicit). ``not_adopted`` are preprocessing fields that
    never change a tensor (acceptance limits): they stay the run's own.
    """
    level = cfg.execution.analysis_level.value
    if level == "participant":
        cfg = adopt_bundle(cfg, explicit, not_adopted)
    check_arch(cfg.model.arch)
    if level == "group":
        check_model_options(cfg)
    return cfg


def check_arch(arch: str) -> None:
    from m2m_bids.backends import known_archs

    archs = known_archs()
    if arch not in archs:
        raise AppError(f"unknown architecture --arch {arch!r}", ExitCode.USAGE,
                       hint="choose one of: " + ", ".join(archs))


def check_model_options(cfg: Any) -> None:
    """Build the model configuration the group level will build, without data: unknown overrides,
    bad values and grids the encoder cannot tile fail here, naming the option."""
    from m2m_bids.backends import TORCH
    from m2m_bids.models import model_config

    mc = cfg.model
    if mc.arch not in TORCH.archs:  # the classical baselines check their options when they train
        return
    modalities = [m for m in mc.modalities if m != "tabular" or cfg.train.tabular_columns]
    try:
        model_config(mc.arch, {**mc.overrides, "img_size": tuple(cfg.preproc.grid_shape),
                               "frames": mc.window_frames, "modalities": tuple(modalities),
                               "n_tabular": len(cfg.train.tabular_columns),
                               "num_classes": max(2, len(cfg.train.classes))})
    except (ValueError, TypeError) as err:
        raise AppError(f"invalid model options for --arch {mc.arch}: {err}", ExitCode.USAGE,
                       hint="fix [model] overrides in the config file or the grid/--window-frames options; "
                            "docs/models.md lists every option") from err


def resolve_bundle(cfg: Any) -> Path | None:
    """``--model PATH`` (which must exist and hold a card), else ``OUTPUT_DIR/models/model-<arch>``
    when it holds one, else None (preprocessing only)."""
    from m2m_bids.backends import BACKENDS, bundle_card

    given = cfg.execution.model
    if given is not None:
        if not given.exists():
            raise AppError("the model bundle given with --model does not exist", ExitCode.NO_INPUT, path=str(given),
                           hint="point --model at a models/model-<arch>/ folder written by the group level")
        if bundle_card(given) is None:
            raise AppError(f"no {' or '.join(b.card_file for b in BACKENDS)} in the model bundle", ExitCode.NO_INPUT,
                           path=str(given), hint="point --model at a models/model-<arch>/ folder")
        return given
    default = cfg.execution.output_dir / "models" / f"model-{cfg.model.arch}"
    return default if bundle_card(default) is not None else None


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AppError(f"the model card cannot be read ({err})", ExitCode.DATA_ERROR, path=str(path),
                       hint="copy the whole models/model-<arch>/ folder again, or retrain it") from err
    if not isinstance(card, dict):
        raise AppError("the model card is not a JSON object", ExitCode.DATA_ERROR, path=str(path),
                       hint="copy the whole models/model-<arch>/ folder again, or retrain it")
    return card


def _same(a: Any, b: Any) -> bool:
    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        if hasattr(v, "value"):
            return v.value
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    return norm(a) == norm(b)


def adopt_bundle(cfg: Any, explicit: Mapping[str, set[str]], not_adopted: frozenset[str] = frozenset()) -> Any:
    """Return ``cfg`` with the bundle path resolved and its card's preprocessing (and arch) adopted.

    An explicit setting that differs from the card is a usage error naming both values: tensors made
    differently would be refused after preprocessing anyway (exit 65), hours later.
    """
    bundle = resolve_bundle(cfg)
    if bundle is None:
        return cfg
    from m2m_bids.backends import bundle_card

    card_path = bundle_card(bundle)
    assert card_path is not None
    card = _read_card(card_path)
    fields = type(cfg.preproc).model_fields
    card_preproc = {k: v for k, v in (card.get("preproc") or {}).items() if k in fields and k not in not_adopted}
    conflicts = [f"{FLAG_OF.get(k, 'preproc.' + k)}={getattr(cfg.preproc, k)!r} (model: {v!r})"
                 for k, v in card_preproc.items()
                 if k in explicit.get("preproc", set()) and not _same(getattr(cfg.preproc, k), v)]
    arch = str(card.get("arch", cfg.model.arch))
    if "arch" in explicit.get("model", set()) and cfg.execution.model is not None and arch != cfg.model.arch:
        conflicts.append(f"--arch={cfg.model.arch!r} (model: {arch!r})")
    if conflicts:
        raise AppError("options conflict with the model bundle's training settings: " + "; ".join(conflicts),
                       ExitCode.USAGE, path=str(card_path),
                       hint="drop these options: the participant level adopts the bundle's preprocessing "
                            "automatically (a model applied to tensors made differently is not valid)")
    preproc = type(cfg.preproc).model_validate({**cfg.preproc.model_dump(), **card_preproc})
    execution = cfg.execution.model_copy(update={"model": bundle})
    update: dict[str, Any] = {"arch": arch}
    card_modalities = ((card.get("model") or {}).get("config") or {}).get("modalities")
    if card_modalities and "modalities" not in explicit.get("model", set()):  # what the model reads decides
        update["modalities"] = list(card_modalities)                          # whether it needs BOLD
    model = cfg.model.model_copy(update=update)
    return cfg.model_copy(update={"preproc": preproc, "execution": execution, "model": model})
