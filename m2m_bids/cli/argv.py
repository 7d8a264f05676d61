"""Command-line spellings that click does not support natively, normalised before parsing.

BIDS Apps take space-separated lists (``--participant-label 01 02``, argparse ``nargs='+'``) while
click wants a repeated flag (``--participant-label 01 --participant-label 02``). We accept both by
rewriting the first form into the second, and accept ``--flag=value`` as click does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.textinput import read_text_input

#: A BIDS label: letters and digits only (the part after ``sub-``).
BIDS_LABEL = re.compile(r"[0-9A-Za-z]+")

#: Other spellings of options (fMRIPrep's and argparse-style underscores) -> the one the parser
#: declares. Rewritten before parsing, so ``--help`` lists each option once, uncut at 80 columns.
ALIASES: dict[str, str] = {
    "--participant_label": "--participant-label",
    "--exclude_participant_label": "--exclude-participant-label",
    "--session_label": "--session-label",
    "--session-id": "--session-label",
    "--session_id": "--session-label",
    "--task-id": "--task",
    "--task_id": "--task",
    "--bids_filter_file": "--bids-filter-file",
    "--skip_bids_validation": "--skip-bids-validation",
    "--skip-bids-validator": "--skip-bids-validation",
    "--skip_bids_validator": "--skip-bids-validation",
    "--work_dir": "--work-dir",
    "--nthreads": "--nprocs",
    "--n-cpus": "--nprocs",
    "--n_cpus": "--nprocs",
    "--omp_nthreads": "--omp-nthreads",
    "--mem-gb": "--mem",
    "--mem_gb": "--mem",
    "--mem-mb": "--mem",
    "--mem_mb": "--mem",
    "--config": "--config-file",
    "--seed": "--random-seed",
    "--tabular_columns": "--tabular-columns",
}

#: Options that take one or more values (after :func:`canonical_flags`). Values run until the next ``-`` token.
MULTI_VALUE_FLAGS: frozenset[str] = frozenset({
    "--participant-label", "--exclude-participant-label", "--session-label", "-t", "--task",
    "-d", "--derivatives", "--classes", "--tabular-columns", "--modalities",
})


def canonical_flags(argv: Sequence[str]) -> list[str]:
    """``--participant_label 01`` -> ``--participant-label 01`` (also in ``--flag=value`` form)."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + list(argv[i:])
        name, eq, value = token.partition("=")
        out.append(ALIASES[name] + eq + value if name in ALIASES else token)
    return out


def expand_multi_value_flags(argv: Sequence[str]) -> list[str]:
    """``[--participant-label, 01, 02]`` -> ``[--participant-label, 01, --participant-label, 02]``.

    A negative number is a value, not a flag; ``--`` ends option parsing as usual.
    """
    out: list[str] = []
    flag: str | None = None
    taken = 0
    for i, token in enumerate(argv):
        if token == "--":
            out.extend(argv[i:])
            return out
        if token.startswith("-") and not _is_number(token):
            flag, taken = (token, 0) if token in MULTI_VALUE_FLAGS else (None, 0)
            out.append(token)
            continue
        if flag is not None:
            if taken:
                out.append(flag)
            taken += 1
        out.append(token)
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def split_values(values: Sequence[str] | None) -> list[str]:
    """Flatten repeated and comma-separated values: ``["01,02", "03"]`` -> ``["01", "02", "03"]``."""
    result: list[str] = []
    for value in values or []:
        result.extend(v.strip() for v in value.split(",") if v.strip())
    return result


def read_label_values(values: Sequence[str] | None, option: str = "--participant-label") -> list[str]:
    """Participant labels from the command line; a value naming an existing file is a label list.

    The execution spec allows ``--participant-label labels.txt`` with one label per line (blank
    lines and ``#`` comments ignored; a participants.tsv-like file contributes its first column).
    A file whose lines are not BIDS labels (``/etc/passwd``, a binary file) is refused without
    echoing its content, and an empty label is refused rather than read as "no filter".
    """
    if values is not None and any(not v.strip(" ,") for v in values):
        raise AppError(f"{option} was given an empty label", ExitCode.USAGE,
                       hint=f"name the participants (e.g. {option} 01 02) or leave the option out to select all")
    labels: list[str] = []
    for value in split_values(values):
        path = Path(value)
        if path.is_file():
            labels.extend(_labels_from_file(path, option))
        else:
            labels.append(value)
    return labels


def _labels_from_file(path: Path, option: str) -> list[str]:
    labels = []
    text = read_text_input(path, "participant label file", option=option)
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line or line.lower().startswith("participant_id"):
            continue
        label = line.split("\t")[0].split()[0]
        if not BIDS_LABEL.fullmatch(strip_prefix(label, "sub")):
            raise AppError(f"line {number} of the participant label file is not a participant label", ExitCode.USAGE,
                           path=str(path), hint="the file must hold one label per line (letters and digits, "
                                                "e.g. 01 or sub-01), or be a participants.tsv")
        labels.append(label)
    return labels


def parse_mem_gb(value: str | None) -> float | None:
    """``16``/``16G``/``16GB`` -> 16.0; ``16000M``/``16000MB`` -> 16.0; ``1T`` -> 1000.0.

    A bare number is read as GB, or as MB when it is above 1000 (fMRIPrep's ``--mem-mb`` habit).
    """
    if value is None:
        return None
    text = value.strip().upper().removesuffix("B")
    units = {"G": 1.0, "M": 1e-3, "T": 1e3}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    number = float(text)
    return number / 1000 if number > 1000 else number


def parse_name_path(values: Sequence[str] | None) -> dict[str, Path]:
    """``fmriprep=/data/fmriprep`` (or a bare path, named after its folder) -> ``{"fmriprep": Path}``."""
    result: dict[str, Path] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            path, name = name, Path(name).name
        result[name.strip()] = Path(path.strip())
    return result
