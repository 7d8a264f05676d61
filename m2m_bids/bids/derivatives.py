"""BIDS-Derivatives output: the one sink of every file the app writes into OUTPUT_DIR.

:class:`DerivativesWriter` builds names from the one entity grammar of the package
(:func:`bids_filename`, entities in schema order), writes every NIfTI with its JSON sidecar, and
writes every file through :mod:`m2m_bids.io_utils` (write to a temporary name, then ``os.replace``),
so a killed job never leaves half a file. Several participant jobs (SLURM array tasks, containers)
share one OUTPUT_DIR: per-participant files never collide, and the two shared files,
``dataset_description.json`` and ``.bidsignore``, are read-merged-written under a ``flock``, so
entries written by other jobs (or earlier runs, other pipelines' ``GeneratedBy``) are kept.

The writer refuses any path outside OUTPUT_DIR, and an OUTPUT_DIR inside BIDS_DIR that is not
under ``BIDS_DIR/derivatives/``: the input dataset is never modified.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from m2m_bids import __version__
from m2m_bids.config import new_run_id
from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.io_utils import atomic_path, file_lock, output_lock

log = logging.getLogger(__name__)

PIPELINE_NAME = "m2m-bids"
CODE_URL = "https://github.com/m2m-bids/m2m-bids"
BIDS_VERSION = "1.10.0"

#: Entity keys in the order of the BIDS schema (bidsschematools 1.11 ``rules.entities``), with the
#: not-yet-standard ``stat``/``class``/``model`` (BEP041, XCP-D) placed just before ``desc``.
ENTITY_ORDER = ("sub", "tpl", "ses", "cohort", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc",
                "stain", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi",
                "space", "split", "recording", "chunk", "atlas", "seg", "scale", "res", "den", "label",
                "model", "stat", "class", "desc")

#: pybids' long entity names (as in ``BoldRun.entities``) mapped to file-name keys.
LONG_NAMES = {"subject": "sub", "template": "tpl", "session": "ses", "acquisition": "acq", "nucleus": "nuc",
              "volume": "voi", "ceagent": "ce", "tracer": "trc", "reconstruction": "rec", "direction": "dir",
              "modality": "mod", "inversion": "inv", "mtransfer": "mt", "processing": "proc",
              "hemisphere": "hemi", "segmentation": "seg", "resolution": "res", "density": "den",
              "description": "desc", "statistic": "stat"}
#: Entities that are not part of a file name (pybids returns them with the others).
NOT_NAME = frozenset({"suffix", "extension", "datatype", "fmap", "scans"})

#: Files this app writes that BIDS cannot name yet (BEP041 statmaps, predictions, tables, reports).
#: bids-validator-deno matches these like .gitignore but without trailing-slash directory patterns
#: ("figures/" does not match), hence bare folder names and ``**/`` forms.
DEFAULT_BIDSIGNORE = ("*_statmap.nii.gz", "*_statmap.json", "*_predictions.tsv", "*_predictions.json",
                      "*_table.tsv", "*_table.json", "*.html", "models", "group", "work", "figures",
                      "**/figures", "sub-*/log", "**/log", "predictions.tsv", "predictions.json",
                      "*_timeseries.tsv", "*_timeseries.json", "*_relmat.tsv", "*_relmat.json")


def normalise_entities(entities: Mapping[str, Any]) -> dict[str, str]:
    """Short keys, string values, empty values dropped; raises on unknown keys or bad labels."""
    out: dict[str, str] = {}
    for key, value in entities.items():
        if key in NOT_NAME or value is None or value == "":
            continue
        short = LONG_NAMES.get(key, key)
        if short not in ENTITY_ORDER:
            raise ValueError(f"unknown BIDS entity {key!r}; known: {', '.join(ENTITY_ORDER)}")
        text = str(value)
        if not text.isalnum():
            raise ValueError(f"BIDS labels are alphanumeric; {key}={text!r} is not")
        out[short] = text
    return out


def clean_label(value: Any) -> str:
    """A free value as a BIDS label: alphanumerics only (``swift-lf`` -> ``swiftlf``, ``harvard_oxford`` ->
    ``harvardoxford``)."""
    return "".join(ch for ch in str(value) if ch.isalnum())


def res_label(resolution_mm: float) -> str:
    """BIDS ``res-`` label of a resolution in mm: ``3.0 -> "3"``, ``2.5 -> "2p5"`` (labels are alphanumeric)."""
    return f"{float(resolution_mm):g}".replace(".", "p")


def _join(ents: dict[str, str], suffix: str, extension: str) -> str:
    if not suffix.isalnum():
        raise ValueError(f"BIDS suffixes are alphanumeric; {suffix!r} is not")
    ext = extension if not extension or extension.startswith(".") else f".{extension}"
    return "_".join([f"{k}-{ents[k]}" for k in ENTITY_ORDER if k in ents] + [suffix]) + ext


def bids_filename(entities: Mapping[str, Any], suffix: str, extension: str) -> str:
    """``sub-01_task-rest_space-X_res-3_desc-preproc_bold.nii.gz`` from entities in any order."""
    ents = normalise_entities(entities)
    if "sub" not in ents:
        raise ValueError("a derivative file name needs the subject entity")
    return _join(ents, suffix, extension)


def dataset_filename(entities: Mapping[str, Any], suffix: str, extension: str) -> str:
    """A dataset-level name, same grammar without the subject: ``space-X_stat-Y_class-AD_desc-T1w_statmap.nii.gz``."""
    ents = normalise_entities(entities)
    if "sub" in ents:
        raise ValueError("a dataset-level file name has no subject entity")
    return _join(ents, suffix, extension)


def _is_below(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


class DerivativesWriter:
    """Writes this app's BIDS-Derivatives into one OUTPUT_DIR (safe with concurrent jobs)."""

    def __init__(self, output_dir: str | os.PathLike[str], *, bids_dir: str | os.PathLike[str] | None = None,
                 run_id: str | None = None, links: Mapping[str, str | os.PathLike[str]] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.links = {name: str(value) for name, value in (links or {}).items()}  # e.g. --derivatives fmriprep=...
        self.bids_dir = Path(bids_dir) if bids_dir is not None else None
        self.run_id = run_id or new_run_id()
        self._root = self.output_dir.resolve()
        if self.bids_dir is not None:
            raw = self.bids_dir.resolve()
            if _is_below(self._root, raw) and not _is_below(self._root, raw / "derivatives"):
                raise AppError("OUTPUT_DIR is inside the BIDS dataset but not under its derivatives/ folder",
                               ExitCode.USAGE, path=str(self.output_dir),
                               hint=f"use {raw / 'derivatives' / PIPELINE_NAME} or a folder outside {raw}")

    # -- paths ----------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not _is_below(resolved, self._root):
            raise AppError("refusing to write outside OUTPUT_DIR", ExitCode.CANT_CREATE, path=str(path),
                           hint="this is a bug in m2m-bids: derivative paths must be built by DerivativesWriter")
        return path

    def build_path(self, entities: Mapping[str, Any], suffix: str, extension: str,
                   datatype: str | None = None) -> Path:
        """``OUTPUT_DIR/sub-X[/ses-Y][/datatype]/<BIDS name>`` (the folders are not created)."""
        ents = normalise_entities(entities)
        name = bids_filename(ents, suffix, extension)
        folder = self.output_dir / f"sub-{ents['sub']}"
        if "ses" in ents:
            folder = folder / f"ses-{ents['ses']}"
        if datatype:
            if not datatype.isalnum():
                raise ValueError(f"a BIDS datatype is alphanumeric (anat, func); {datatype!r} is not")
            folder = folder / datatype
        return self._inside(folder / name)

    def output_path(self, *parts: str) -> Path:
        """A dataset-level path (``group/metrics.tsv``, ``models/model-m2m/``), refused if it leaves OUTPUT_DIR."""
        return self._inside(self.output_dir.joinpath(*parts))

    def figure_path(self, entities: Mapping[str, Any], suffix: str, extension: str = ".svg") -> Path:
        """``OUTPUT_DIR/sub-X/figures/<BIDS name>`` (fMRIPrep's place for report figures)."""
        ents = normalise_entities(entities)
        return self._inside(self.output_dir / f"sub-{ents['sub']}" / "figures" / bids_filename(ents, suffix, extension))

    def group_path(self, entities: Mapping[str, Any], suffix: str, extension: str, *, figure: bool = False) -> Path:
        """``OUTPUT_DIR/group[/figures]/<dataset-level name>`` (group tables, class maps and their figures)."""
        folder = self.output_dir / "group" / ("figures" if figure else "")
        return self._inside(folder / dataset_filename(entities, suffix, extension))

    @staticmethod
    def sidecar_path(path: Path) -> Path:
        """The ``.json`` next to a data file (``x_bold.nii.gz`` -> ``x_bold.json``)."""
        name = path.name
        for ext in (".nii.gz", ".tsv.gz", ".nii", ".tsv"):
            if name.endswith(ext):
                return path.with_name(name[: -len(ext)] + ".json")
        return path.with_suffix(".json")

    # -- writing: every file of the app's output goes through these --------------------------------
    def save_file(self, path: Path, content: bytes | Callable[[Path], object]) -> Path:
        """Write ``content`` (bytes, or ``content(tmp)`` for formats written by their own library,
        e.g. safetensors weights) to a temporary name beside ``path`` (same folder, same extension)
        and move it onto ``path`` with ``os.replace``: readers never see half a file and a killed job
        leaves none. The one primitive the other ``save_*`` methods build on."""
        with atomic_path(self._inside(Path(path))) as tmp:
            if isinstance(content, (bytes, bytearray)):
                tmp.write_bytes(bytes(content))
            else:
                content(tmp)
        return Path(path)

    def save_text(self, text: str, path: Path) -> Path:
        """A UTF-8 text file (HTML report, ``README``)."""
        return self.save_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_json(self, obj: Any, path: Path) -> Path:
        """Indented, key-sorted JSON (stable diffs); numpy values and paths become plain JSON."""
        return self.save_text(json.dumps(_plain(obj), indent=2, sort_keys=True, default=str) + "\n", path)

    def save_nifti(self, img: Any, path: Path, sidecar: Mapping[str, Any]) -> Path:
        """A nibabel image and, always, its JSON sidecar (a BIDS image without one is incomplete).
        A 4D image's header TR is set from the sidecar's ``RepetitionTime`` so the two agree."""
        import nibabel as nib

        img = _header_tr_from_sidecar(img, sidecar)
        self.save_file(path, lambda tmp: nib.save(img, str(tmp)))
        self.write_sidecar(path, sidecar)
        return Path(path)

    def save_tsv(self, table: Any, path: Path, *, sidecar: Mapping[str, Any] | None = None,
                 float_format: str | None = None, index: bool = False, index_label: str | None = None) -> Path:
        """A pandas DataFrame as BIDS TSV (tab-separated, ``n/a`` for missing), with the JSON sidecar
        describing its columns where BIDS expects one."""
        text = table.to_csv(sep="\t", index=index, index_label=index_label, na_rep="n/a", float_format=float_format,
                            lineterminator="\n")
        self.save_text(text, path)
        if sidecar is not None:
            self.write_sidecar(path, sidecar)
        return Path(path)

    def save_figure(self, figure: Any, path: Path, *, dpi: float | str = "figure") -> Path:
        """A matplotlib figure in the format of the path's extension (``.png``, ``.svg``)."""
        return self.save_file(path, lambda tmp: figure.savefig(str(tmp), format=Path(path).suffix.lstrip("."),
                                                               dpi=dpi, bbox_inches="tight"))

    def append_text(self, path: Path, text: str) -> Path:
        """Append to a log file (``errors.log``): a log grows entry by entry, so this is one ``write``
        in append mode rather than a replacement; the folders are created."""
        target = self._inside(Path(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)
        return target

    def write_sidecar(self, data_path: Path, sidecar: Mapping[str, Any]) -> Path:
        """The JSON sidecar of a data file written by this writer."""
        return self.save_json(dict(sidecar), self.sidecar_path(Path(data_path)))

    # -- shared dataset-level files -------------------------------------------------------------
    def write_dataset_description(self, extra: Mapping[str, Any] | None = None) -> Path:
        """Create or merge ``dataset_description.json`` (idempotent; other GeneratedBy entries kept)."""
        path = self._inside(self.output_dir / "dataset_description.json")
        with file_lock(output_lock(self.output_dir, "dataset_description.json")):
            existing = _read_json(path)
            if existing.get("DatasetType") == "raw":
                raise AppError("OUTPUT_DIR holds a raw BIDS dataset (DatasetType raw)", ExitCode.CANT_CREATE,
                               path=str(path), hint="choose an empty folder or a derivatives folder for outputs")
            description = self._description(existing)
            if extra:
                description.update(extra)
            if description != existing:
                self.save_json(description, path)
        return path

    def _description(self, existing: dict[str, Any]) -> dict[str, Any]:
        raw = _read_json(self.bids_dir / "dataset_description.json") if self.bids_dir is not None else {}
        description = {"Name": f"{PIPELINE_NAME} outputs" + (f" of {raw['Name']}" if raw.get("Name") else ""),
                       "BIDSVersion": BIDS_VERSION, **existing, "DatasetType": "derivative"}
        description["GeneratedBy"] = _merge_generated_by(existing.get("GeneratedBy"), self._generated_by())
        links = {**dict(existing.get("DatasetLinks") or {}), **self.links}
        if self.bids_dir is not None:
            links["raw"] = self._raw_link()
        if links:
            description["DatasetLinks"] = links
        source = _source_dataset(raw)
        if source and not existing.get("SourceDatasets"):
            description["SourceDatasets"] = [source]
        if raw.get("License") and "License" not in description:
            description["License"] = raw["License"]
        return description

    @staticmethod
    def _generated_by() -> dict[str, Any]:
        entry: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}
        kind, tag = os.environ.get("M2M_CONTAINER_TYPE"), os.environ.get("M2M_CONTAINER_TAG")
        if kind or tag:
            entry["Container"] = {k: v for k, v in (("Type", kind), ("Tag", tag)) if v}
        return entry

    def _raw_link(self) -> str:
        """``../..`` style when OUTPUT_DIR is inside the raw dataset (portable), else BIDS_DIR as given."""
        assert self.bids_dir is not None
        raw = self.bids_dir.resolve()
        if _is_below(self._root, raw):
            return os.path.relpath(raw, self._root)
        return str(self.bids_dir) if self.bids_dir.is_absolute() else str(raw)

    def update_bidsignore(self, patterns: Iterable[str] = ()) -> Path:
        """Add ``patterns`` (and the defaults) to ``.bidsignore``, keeping lines written by others."""
        path = self._inside(self.output_dir / ".bidsignore")
        with file_lock(output_lock(self.output_dir, "bidsignore")):
            lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
            wanted = list(dict.fromkeys([*lines, *DEFAULT_BIDSIGNORE, *patterns]))
            if wanted != lines:
                self.save_text("\n".join(wanted) + "\n", path)
        return path

    # -- logs -----------------------------------------------------------------------------------
    def participant_log_dir(self, label: str) -> Path:
        """``OUTPUT_DIR/sub-<label>/log/<run-id>/`` (created): where one participant's logs and crash files go."""
        label = strip_prefix(label, "sub")
        folder = self._inside(self.output_dir / f"sub-{label}" / "log" / self.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextlib.contextmanager
    def participant_log(self, label: str, logger: logging.Logger | None = None,
                        level: int = logging.DEBUG) -> Iterator[Path]:
        """Copy log records to ``sub-<label>/log/<run-id>/m2m.log`` while the block runs; yield the folder."""
        folder = self.participant_log_dir(label)
        handler = logging.FileHandler(folder / "m2m.log", encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        target = logger if logger is not None else logging.getLogger()
        target.addHandler(handler)
        try:
            yield folder
        finally:
            target.removeHandler(handler)
            handler.close()


def _header_tr_from_sidecar(img: Any, sidecar: Mapping[str, Any] | None) -> Any:
    """A 4D image whose header TR disagrees with the sidecar's ``RepetitionTime`` is invalid BIDS
    (REPETITION_TIME_MISMATCH); return a copy (same data, new header) with the sidecar's TR."""
    tr = (sidecar or {}).get("RepetitionTime")
    if tr is None or len(img.shape) != 4:
        return img
    zooms = img.header.get_zooms()
    units = img.header.get_xyzt_units()
    if abs(float(zooms[3]) - float(tr)) < 1e-6 and units[1] == "sec":
        return img
    header = img.header.copy()
    header.set_zooms((*zooms[:3], float(tr)))
    header.set_xyzt_units(units[0] if units[0] != "unknown" else "mm", "sec")
    return img.__class__(img.dataobj, img.affine, header)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def _merge_generated_by(existing: Any, ours: dict[str, Any]) -> list[dict[str, Any]]:
    """Our entry first (the spec wants the pipeline's own name first); others' entries kept in order."""
    entries = [e for e in (existing or []) if isinstance(e, dict)]
    previous = [e for e in entries if e.get("Name") == PIPELINE_NAME]
    for entry in previous:
        if entry.get("Version") not in (None, ours["Version"]):
            log.warning("OUTPUT_DIR has outputs of %s %s; this is %s: do not mix versions in one dataset",
                        PIPELINE_NAME, entry.get("Version"), ours["Version"])
    return [ours, *[e for e in entries if e.get("Name") != PIPELINE_NAME]]


def _source_dataset(raw: dict[str, Any]) -> dict[str, str] | None:
    """``SourceDatasets`` entry from the input's ``DatasetDOI`` (as ``doi:`` URI or URL)."""
    doi = str(raw.get("DatasetDOI") or "").strip()
    if not doi:
        return None
    if doi.startswith(("http://", "https://")):
        entry = {"URL": doi}
    else:
        entry = {"DOI": doi if doi.startswith("doi:") else f"doi:{doi}"}
    if raw.get("DatasetVersion") or raw.get("Version"):
        entry["Version"] = str(raw.get("DatasetVersion") or raw.get("Version"))
    return entry


def _plain(obj: Any) -> Any:
    """JSON-ready values: numpy scalars/arrays and paths become Python numbers, lists and strings."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj
