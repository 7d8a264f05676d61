"""Find each selected participant's T1w, BOLD runs and optional PET with pybids, and check them.

Selection follows the BIDS-Apps contract and fMRIPrep's conventions:

* ``--participant-label`` (with or without ``sub-``) must name participants of the dataset: an
  unknown label is ``NO_INPUT`` (66) with the list of available labels.
* ``--exclude-participant-label`` removes participants; excluding everyone is ``NO_MATCH`` (18).
* ``--session-label`` and ``--task`` restrict the files; files without a session are kept
  (execution spec: "files lacking the entity are still included").
* ``--bids-filter-file`` is JSON keyed by query name, ``{"t1w": {...}, "bold": {...}, "pet": {...}}``, with
  pybids entity filters; ``null`` means "entity absent" and ``"*"`` "any value".
* Filters that select no file for any participant are ``NO_MATCH`` (18).

Only the selected subjects are indexed (the others are excluded by an ignore pattern), so a
large dataset costs the time of the participants actually processed, e.g. one SLURM array task.
Problems with one participant's data are returned, not raised, so the others go on.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from m2m_bids.bids.inputs import BoldRun, ParticipantInputs, PetImage, SessionInputs
from m2m_bids.bids.participants import empty_participants, phenotype_row, read_participants
from m2m_bids.bids.validation import ParticipantProblem, check_bold, check_t1w
from m2m_bids.config import Execution, Preproc
from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode

log = logging.getLogger(__name__)

__all__ = ["ParticipantProblem", "available_labels", "build_layout", "build_queries", "collect_participants",
           "select_labels"]

NIFTI_EXTENSIONS = [".nii", ".nii.gz"]

#: The base pybids queries; the filter file's entries for the same name are merged over them.
DEFAULT_QUERIES: dict[str, dict[str, Any]] = {
    "t1w": {"datatype": "anat", "suffix": "T1w", "extension": NIFTI_EXTENSIONS},
    "bold": {"datatype": "func", "suffix": "bold", "extension": NIFTI_EXTENSIONS},
    "pet": {"datatype": "pet", "suffix": "pet", "extension": NIFTI_EXTENSIONS},  # optional
}

#: Short BIDS keys users write in filter files, mapped to pybids entity names.
ENTITY_ALIASES = {"sub": "subject", "ses": "session", "acq": "acquisition", "ce": "ceagent",
                  "rec": "reconstruction", "dir": "direction"}

#: Entities of a file name (what derivatives are named after); suffix/extension/datatype are not.
NON_NAME_ENTITIES = frozenset({"suffix", "extension", "datatype"})

#: Folders never indexed: other pipelines' outputs (OUTPUT_DIR may be BIDS_DIR/derivatives/m2m) etc.
IGNORED_FOLDERS = re.compile(r"^/(code|models|sourcedata|stimuli|derivatives)(/|$)")


def available_labels(bids_dir: Path) -> list[str]:
    """Participant labels of the dataset: its ``sub-*`` folders (no ``sub-``), sorted."""
    return sorted(strip_prefix(p.name, "sub") for p in bids_dir.glob("sub-*") if p.is_dir() and len(p.name) > 4)


def select_labels(available: list[str], include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """Apply ``--participant-label`` and ``--exclude-participant-label`` to the dataset's labels."""
    include, exclude = list(include), list(exclude)
    if not available:
        raise AppError("the dataset has no participants (no sub-<label> folders)", ExitCode.NO_INPUT,
                       hint="BIDS_DIR must be the root of a BIDS dataset (the folder with dataset_description.json)")
    unknown = [lab for lab in include if lab not in available]
    if unknown:
        raise AppError(
            f"participant label(s) not in the dataset: {', '.join(unknown)}; available: "
            f"{_short_list(available)}", ExitCode.NO_MATCH,
            hint="labels are the part after 'sub-' (both '01' and 'sub-01' are accepted)")
    chosen = list(dict.fromkeys(include)) if include else list(available)
    for lab in exclude:
        if lab not in available:
            log.warning("--exclude-participant-label %s: no such participant in the dataset", lab)
    chosen = [lab for lab in chosen if lab not in set(exclude)]
    if not chosen:
        raise AppError("no participant is left after --exclude-participant-label", ExitCode.NO_MATCH,
                       hint="check --participant-label and --exclude-participant-label")
    return chosen


def _short_list(labels: list[str], limit: int = 30) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" ... ({len(labels)} in all)" if len(labels) > limit else "")


def build_layout(bids_dir: Path, labels: list[str]) -> Any:
    """A pybids layout indexing only ``labels`` (and the top-level files), without validation."""
    from bids import BIDSLayout, BIDSLayoutIndexer

    chosen = "|".join(re.escape(lab) for lab in labels)
    others = re.compile(rf"^/sub-(?!(?:{chosen})(?:/|$))")
    indexer = BIDSLayoutIndexer(validate=False, ignore=[IGNORED_FOLDERS, others], index_metadata=True)
    try:
        return BIDSLayout(str(bids_dir), validate=False, derivatives=False, indexer=indexer)
    except Exception as err:  # pybids raises ValueError, BIDSValidationError, JSON errors ...
        raise AppError(f"pybids cannot index the dataset: {err}", ExitCode.INVALID_BIDS, path=str(bids_dir),
                       hint="run bids-validator on the dataset and fix what it reports") from err


def build_queries(execution: Execution) -> dict[str, dict[str, Any]]:
    """The pybids filters for ``t1w``, ``bold`` and ``pet``: defaults, then the filter file, then ``--task``."""
    from bids.layout import Query

    unknown = sorted(set(execution.bids_filters) - set(DEFAULT_QUERIES))
    if unknown:
        log.warning("--bids-filter-file: ignoring the query name(s) %s (this app uses %s)", ", ".join(unknown),
                    ", ".join(DEFAULT_QUERIES))
    queries: dict[str, dict[str, Any]] = {}
    for name, base in DEFAULT_QUERIES.items():
        query = dict(base)
        for key, value in execution.bids_filters.get(name, {}).items():
            query[ENTITY_ALIASES.get(key, key)] = _query_value(value, Query)
        queries[name] = query
    if execution.task:
        if "task" in queries["bold"]:
            log.warning("--task %s overrides the bold task filter of --bids-filter-file", " ".join(execution.task))
        queries["bold"]["task"] = list(execution.task)
    return queries


def _query_value(value: Any, query: Any) -> Any:
    """fMRIPrep's filter-file semantics: ``null`` -> entity absent, ``"*"`` -> any value."""
    if value is None:
        return query.NONE
    if value == "*":
        return query.ANY
    if isinstance(value, list):
        return [_query_value(v, query) for v in value]
    return value


def _get(layout: Any, query: dict[str, Any], labels: list[str]) -> dict[str, list[Any]]:
    """One pybids query for all ``labels`` (one per participant costs ~35 ms each), grouped by label."""
    try:
        files = layout.get(subject=labels, return_type="object", **query)
    except (ValueError, TypeError) as err:
        raise AppError(f"invalid BIDS filter: {err}", ExitCode.USAGE,
                       hint="filter keys are pybids entity names (subject, session, task, run, acquisition, ...)"
                       ) from err
    grouped: dict[str, list[Any]] = {label: [] for label in labels}
    for f in files:
        grouped.setdefault(str(f.entities["subject"]), []).append(f)
    return grouped


def _query_all(layouts: dict[str, Any], query: dict[str, Any]) -> dict[str, list[Any]]:
    """Run ``query`` once per distinct layout (normally one shared by every participant)."""
    by_layout: dict[int, list[str]] = defaultdict(list)
    for label, layout in layouts.items():
        by_layout[id(layout)].append(label)
    found: dict[str, list[Any]] = {}
    for labels in by_layout.values():
        found.update({lab: files for lab, files in _get(layouts[labels[0]], query, labels).items() if lab in labels})
    return found


def _keep_session(files: list[Any], sessions: list[str]) -> list[Any]:
    if not sessions:
        return files
    return [f for f in files if f.entities.get("session") is None or str(f.entities["session"]) in sessions]


def _name_entities(bids_file: Any) -> dict[str, str]:
    return {k: str(v) for k, v in bids_file.get_entities().items() if k not in NON_NAME_ENTITIES}


def collect_participants(execution: Execution, preproc: Preproc, *, scan_voxels: bool = True,
                         anat_only: bool = False) -> tuple[list[ParticipantInputs], list[ParticipantProblem]]:
    """Select participants and gather their checked inputs; problems are returned, not raised.

    ``anat_only`` (the model needs no fMRI, :func:`m2m_bids.backends.needs_fmri`): a
    usable T1w is enough. A session whose BOLD is missing or unusable (too short, unreadable, ...)
    is kept T1w-only with the reason (:attr:`SessionInputs.no_bold`, logged as a warning) instead of
    refusing the participant.

    Raises :class:`AppError` for what concerns the whole run: a missing BIDS_DIR (66), unknown
    labels (18), a selection that leaves nobody (18), a session label that no selected file has
    (18) or filters matching no file at all (18).
    ``scan_voxels`` streams every image once to catch truncated files and NaN/inf voxels.
    """
    bids_dir = Path(execution.bids_dir)
    if not bids_dir.is_dir():
        raise AppError("BIDS_DIR does not exist or is not a folder", ExitCode.NO_INPUT, path=str(bids_dir),
                       hint="check the path (inside a container: the mounted path, e.g. /data)")
    if not (bids_dir / "dataset_description.json").is_file():
        log.warning("%s has no dataset_description.json; is it the root of a BIDS dataset?", bids_dir)
    labels = select_labels(available_labels(bids_dir), execution.participant_label,
                           execution.exclude_participant_label)
    queries = build_queries(execution)
    try:
        phenotype = read_participants(bids_dir)
    except AppError as err:  # preprocessing does not need it; group training re-reads it and fails there
        log.warning("participants.tsv not used: %s", err.render())
        phenotype = empty_participants()
    layouts, problems = _layouts(bids_dir, labels)
    participants: list[ParticipantInputs] = []
    matched = {"t1w": 0, "bold": 0}
    t1w_files, bold_files = _query_all(layouts, queries["t1w"]), _query_all(layouts, queries["bold"])
    pet_files = _query_all(layouts, queries["pet"])
    _check_sessions(execution.session_label, [*t1w_files.values(), *bold_files.values()])
    for label, layout in layouts.items():
        all_t1w = t1w_files[label]
        t1w = _keep_session(all_t1w, execution.session_label)
        bold = _keep_session(bold_files[label], execution.session_label)
        if bold and not t1w and all_t1w:  # longitudinal data often has the T1w at baseline only
            log.info("sub-%s: no T1w in the selected session(s); using one of another session", label)
            t1w = all_t1w
        matched["t1w"] += len(t1w)
        matched["bold"] += len(bold)
        if not (t1w or bold) and execution.session_label:
            log.warning("sub-%s has none of the sessions %s: skipped", label, ", ".join(execution.session_label))
            continue
        pet = _keep_session(pet_files.get(label, []), execution.session_label)
        found, issues = _participant_inputs(layout, label, (t1w, bold, pet), preproc, scan_voxels, anat_only)
        problems.extend(issues)
        if found is not None:
            participants.append(ParticipantInputs(label, found, phenotype_row(phenotype, label)))
    _raise_if_nothing_matched({k: v for k, v in matched.items() if k == "t1w" or not anat_only}, labels, execution)
    log.info("%d participant(s) with usable inputs, %d problem(s)", len(participants), len(problems))
    return participants, problems


def _layouts(bids_dir: Path, labels: list[str]) -> tuple[dict[str, Any], list[ParticipantProblem]]:
    """One layout for all; if pybids fails (e.g. a broken sidecar JSON), one per participant, so the
    participant with the broken file is reported and the others go on."""
    try:
        layout = build_layout(bids_dir, labels)
        return {label: layout for label in labels}, []
    except AppError:
        if len(labels) == 1:
            raise
    layouts: dict[str, Any] = {}
    problems: list[ParticipantProblem] = []
    for label in labels:
        try:
            layouts[label] = build_layout(bids_dir, [label])
        except AppError as err:
            found = re.search(r"filename='([^']+)'", err.message)
            problems.append(ParticipantProblem(label, err.message, found.group(1) if found else err.path,
                                               "fix the file (JSON sidecars must be valid JSON)", ExitCode.DATA_ERROR))
    if not layouts:
        build_layout(bids_dir, labels)  # a dataset-wide problem (e.g. a top-level sidecar): raise it
    return layouts, problems


def _check_sessions(wanted: list[str], file_lists: list[list[Any]]) -> None:
    """A ``--session-label`` that no selected T1w or BOLD file carries is a selection that matched
    nothing (18), even though session-less files stay selected; one of several missing is a warning."""
    if not wanted:
        return
    present = {str(f.entities["session"]) for files in file_lists for f in files
               if f.entities.get("session") is not None}
    missing = [ses for ses in wanted if ses not in present]
    if len(missing) == len(wanted):
        have = f"its sessions are {', '.join(sorted(present))}" if present else "it has no sessions"
        raise AppError(f"--session-label {' '.join(missing)} matches no file of the selected participants; {have}",
                       ExitCode.NO_MATCH, hint="check the session labels (the part after 'ses-') or drop --session-label")
    for ses in missing:
        log.warning("--session-label %s: no selected file has this session", ses)


def _raise_if_nothing_matched(matched: dict[str, int], labels: list[str], execution: Execution) -> None:
    """No T1w (or no BOLD) for anyone: NO_MATCH (18) if filters are in play, else NO_INPUT (66)."""
    for name, count in matched.items():
        if count:
            continue
        what = "T1w image" if name == "t1w" else "BOLD run"
        filtered = bool(execution.session_label or execution.bids_filters.get(name)
                        or (name == "bold" and execution.task))
        who = _short_list([f"sub-{lab}" for lab in labels])
        if filtered:
            raise AppError(f"the selection matched no {what} for {who}{_selection_text(execution)}",
                           ExitCode.NO_MATCH,
                           hint="check --session-label, --task and --bids-filter-file against the file names")
        raise AppError(f"no {what} found for {who}", ExitCode.NO_INPUT,
                       hint="m2m-bids needs a T1w (anat/*_T1w.nii.gz) and BOLD runs (func/*_bold.nii.gz)")


def _selection_text(execution: Execution) -> str:
    parts = []
    if execution.session_label:
        parts.append(f"sessions {', '.join(execution.session_label)}")
    if execution.task:
        parts.append(f"tasks {', '.join(execution.task)}")
    if execution.bids_filters:
        parts.append(f"filters {execution.bids_filters}")
    return f" (with {'; '.join(parts)})" if parts else ""


def _participant_inputs(layout: Any, label: str, files: tuple[list[Any], list[Any], list[Any]], preproc: Preproc,
                        scan_voxels: bool, anat_only: bool = False
                        ) -> tuple[tuple[SessionInputs, ...] | None, list[ParticipantProblem]]:
    """Group one participant's files (T1w, BOLD, PET) into sessions and check each file.

    With ``anat_only`` BOLD problems do not refuse the participant: the run is left out with a
    warning, and a session left without runs is kept T1w-only with the reason."""
    t1w, bold, pet = files
    where = str(Path(layout.root) / f"sub-{label}")
    hint = "check the file names (sub-<label>[_ses-<label>]_T1w.nii.gz in anat/, *_bold.nii.gz in func/), " \
           "and --session-label, --task and --bids-filter-file"
    missing = []
    if not t1w:
        missing.append(ParticipantProblem(label, "no T1w image matches the selection", where, hint,
                                          ExitCode.NO_INPUT))
    if not bold and not anat_only:
        missing.append(ParticipantProblem(label, "no BOLD run matches the selection", where, hint,
                                          ExitCode.NO_INPUT))
    if missing:
        return None, missing
    by_session: dict[str | None, list[Any]] = defaultdict(list)
    for f in sorted(bold, key=lambda f: f.path):
        by_session[_session(f)].append(f)
    for anat_file in t1w if anat_only else []:  # T1w sessions without BOLD (a session-less T1w serves them all)
        if _session(anat_file) is not None or not by_session:
            by_session.setdefault(_session(anat_file), [])
    sessions: list[SessionInputs] = []
    problems: list[ParticipantProblem] = []
    checked_t1w: dict[str, list[ParticipantProblem]] = {}
    for session in sorted(by_session, key=lambda s: s or ""):
        anat = _pick_t1w(t1w, session, label)
        if anat.path not in checked_t1w:
            checked_t1w[anat.path] = check_t1w(Path(anat.path), label, scan_voxels=scan_voxels,
                                               max_gb=preproc.max_image_gb)
            problems.extend(checked_t1w[anat.path])
        runs, unusable = [], []
        for f in by_session[session]:
            metadata = layout.get_metadata(f.path)
            n_vols, tr, issues = check_bold(Path(f.path), metadata, label, min_volumes=preproc.min_volumes,
                                            dummy_scans=preproc.dummy_scans, scan_voxels=scan_voxels,
                                            max_gb=preproc.max_image_gb)
            (unusable if anat_only else problems).extend(issues)
            if not issues and n_vols is not None and tr is not None:
                runs.append(BoldRun(Path(f.path), _name_entities(f), dict(metadata), n_vols, tr))
        for issue in unusable:
            log.warning("sub-%s: BOLD run left out (the model needs no fMRI): %s (%s)", label, issue.message,
                        issue.path)
        no_bold = None
        if not runs:
            no_bold = ("; ".join(f"{Path(i.path or '').name}: {i.message}" for i in unusable)
                       or "no BOLD run matches the selection")
            log.warning("sub-%s%s: no usable BOLD (%s): T1w only", label, f" ses-{session}" if session else "", no_bold)
        pet_image = _session_pet(layout, pet, session, label)
        if pet_image is not None:
            problems.extend(_check_pet(pet_image, label))
        sessions.append(SessionInputs(session, Path(anat.path), tuple(runs), _name_entities(anat), pet_image,
                                      no_bold=no_bold))
    return (None if problems else tuple(sessions)), problems


def _session_pet(layout: Any, pet: list[Any], session: str | None, label: str) -> PetImage | None:
    """The session's PET (same session entity), or ``None``: PET is optional."""
    candidates = [f for f in sorted(pet, key=lambda f: f.path) if _session(f) == session]
    if not candidates:
        return None
    if len(candidates) > 1:
        log.warning("sub-%s: %d PET images for session %s; using %s (choose another with "
                    "--bids-filter-file, e.g. {\"pet\": {\"tracer\": \"FDG\"}})", label, len(candidates),
                    session or "-", Path(candidates[0].path).name)
    chosen = candidates[0]
    return PetImage(Path(chosen.path), _name_entities(chosen), dict(layout.get_metadata(chosen.path)))


def _check_pet(pet: PetImage, label: str) -> list[ParticipantProblem]:
    """A PET must be a readable 3D/4D image whose FrameDuration (if given) has one value per frame."""
    import nibabel as nib

    hint = ("fix the file or its sidecar, or leave PET out with --bids-filter-file "
            "'{\"pet\": {\"datatype\": \"none\"}}'")
    try:
        shape = nib.load(str(pet.path)).shape
    except Exception as err:  # noqa: BLE001 - nibabel raises many types
        return [ParticipantProblem(label, f"cannot read the PET image: {err}", str(pet.path), hint,
                                   ExitCode.DATA_ERROR)]
    if len(shape) not in (3, 4):
        return [ParticipantProblem(label, f"the PET image is {len(shape)}D {shape}, not 3D or 4D", str(pet.path),
                                   hint, ExitCode.DATA_ERROR)]
    n_frames = shape[3] if len(shape) == 4 else 1
    durations = pet.frame_durations
    if durations is not None and (len(durations) != n_frames or min(durations) <= 0):
        return [ParticipantProblem(label, f"FrameDuration has {len(durations)} value(s) for {n_frames} frame(s) "
                                   "(or a value <= 0)", str(pet.path), hint, ExitCode.DATA_ERROR)]
    return []


def _session(bids_file: Any) -> str | None:
    value = bids_file.entities.get("session")
    return None if value is None else str(value)


def _pick_t1w(t1w: list[Any], session: str | None, label: str) -> Any:
    """The session's own T1w, else a session-less one, else the first of another session."""
    ordered = sorted(t1w, key=lambda f: f.path)
    for candidates in ([f for f in ordered if _session(f) == session], [f for f in ordered if _session(f) is None],
                       ordered):
        if candidates:
            if len(candidates) > 1:
                log.warning("sub-%s: %d T1w images for session %s; using %s (choose another with "
                            "--bids-filter-file, e.g. {\"t1w\": {\"run\": 2}})", label, len(candidates),
                            session or "-", Path(candidates[0].path).name)
            chosen = candidates[0]
            if _session(chosen) != session:
                log.info("sub-%s: session %s has no T1w; using %s", label, session, Path(chosen.path).name)
            return chosen
    raise AssertionError("called with an empty T1w list")  # pragma: no cover - guarded by the caller
