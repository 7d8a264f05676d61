"""BIDS validation of the input (and of our outputs, in tests) with bids-validator-deno.

The schema-based Deno validator (PyPI ``bids-validator-deno``, which ships its own ``deno``
runtime, so it works offline) exits 16 on errors, the BIDS-Apps code for "invalid BIDS".

Restricting validation to the selected participants: the validator has no subject filter, and its
config can only silence issue codes. We therefore validate a *view* of the dataset, a temporary
folder of symbolic links to the top-level files and to the selected ``sub-*`` folders only. A
SLURM array task that processes one participant then neither pays for, nor fails on, the others.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2m_bids.bids.layout import available_labels, select_labels
from m2m_bids.entity_labels import strip_prefix
from m2m_bids.exitcodes import AppError, ExitCode

log = logging.getLogger(__name__)

VALIDATOR = "bids-validator-deno"
#: Folders left out of the view: other pipelines' outputs (ours may be BIDS_DIR/derivatives/m2m).
VIEW_SKIPS = frozenset({"derivatives", ".git", ".datalad", ".heudiconv"})
DEFAULT_TIMEOUT_S = 900.0


@dataclass
class ValidationReport:
    """Errors and warnings as readable lines (``CODE location: message``), plus the raw issues."""

    dataset: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    returncode: int = 0
    issues: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self, limit: int = 30) -> None:
        """Raise :class:`AppError` (INVALID_BIDS, 16) listing the errors; warnings never fail."""
        if self.ok:
            return
        shown = "\n".join(f"  - {line}" for line in self.errors[:limit])
        more = f"\n  ... and {len(self.errors) - limit} more" if len(self.errors) > limit else ""
        raise AppError(f"the dataset is not valid BIDS ({len(self.errors)} error(s) from {VALIDATOR}):\n"
                       f"{shown}{more}", ExitCode.INVALID_BIDS, path=str(self.dataset),
                       hint=f"fix the files listed (run `{VALIDATOR} {self.dataset}` for details), or pass "
                            "--skip-bids-validation at your own risk")


def validator_command() -> list[str]:
    """The validator's executable: next to this Python (a venv that is not activated), else on PATH."""
    local = Path(sys.executable).parent / VALIDATOR
    found = str(local) if local.is_file() else shutil.which(VALIDATOR)
    if found is None:
        raise AppError(f"{VALIDATOR} is not installed", ExitCode.FAILURE,
                       hint=f"pip install {VALIDATOR}, or pass --skip-bids-validation")
    return [found]


def validate_bids_dir(bids_dir: str | os.PathLike[str], participants: Iterable[str] | None = None, *,
                      extra_args: Iterable[str] = (), tmp_dir: Path | None = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> ValidationReport:
    """Validate ``bids_dir``, restricted to ``participants`` (labels, ``sub-`` optional) when given."""
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise AppError("BIDS_DIR does not exist or is not a folder", ExitCode.NO_INPUT, path=str(bids_dir))
    labels = [strip_prefix(p, "sub") for p in participants or []]
    if not labels:
        return run_validator(bids_dir, extra_args=extra_args, timeout_s=timeout_s, shown_as=bids_dir)
    labels = select_labels(available_labels(bids_dir), labels, [])  # unknown label: 66, not a validator error
    try:
        if tmp_dir is not None:
            tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="m2m-bids-view-", dir=tmp_dir) as tmp:
            view = make_view(bids_dir, labels, Path(tmp) / bids_dir.name)
            return run_validator(view, extra_args=extra_args, timeout_s=timeout_s, shown_as=bids_dir)
    except OSError as err:  # no writable temporary folder (read-only container without --tmpfs)
        log.warning("cannot build a per-participant view for validation (%s); validating the whole dataset", err)
        return run_validator(bids_dir, extra_args=extra_args, timeout_s=timeout_s, shown_as=bids_dir)


def make_view(bids_dir: Path, labels: list[str], view: Path) -> Path:
    """A folder of symlinks: every top-level entry except unselected ``sub-*`` and other pipelines."""
    view.mkdir(parents=True)
    keep = {f"sub-{lab}" for lab in labels}
    for entry in bids_dir.iterdir():
        name = entry.name
        if name in VIEW_SKIPS or (name.startswith("sub-") and name not in keep):
            continue
        if name.startswith(".") and name != ".bidsignore":
            continue
        (view / name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return view


def run_validator(dataset: Path, *, extra_args: Iterable[str] = (), timeout_s: float = DEFAULT_TIMEOUT_S,
                  shown_as: Path | None = None) -> ValidationReport:
    """Run the validator with JSON output on ``dataset`` and parse its issues."""
    command = [*validator_command(), "--format", "json", "--no-color", *extra_args, str(dataset)]
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    log.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as err:
        raise AppError(f"{VALIDATOR} did not finish within {timeout_s:.0f} s", ExitCode.TEMP_FAIL,
                       path=str(shown_as or dataset), hint="retry, or pass --skip-bids-validation") from err
    report = ValidationReport(shown_as or dataset, returncode=done.returncode)
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise AppError(f"{VALIDATOR} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}",
                       ExitCode.FAILURE, path=str(shown_as or dataset),
                       hint="pass --skip-bids-validation to proceed without validation") from err
    _fill(report, data)
    if done.returncode not in (0, 16):
        log.warning("%s exited with %d", VALIDATOR, done.returncode)
    if done.returncode == 16 and not report.errors:
        report.errors.append(f"{VALIDATOR} exited 16 without listing an error: {done.stderr[-500:]}")
    return report


def _fill(report: ValidationReport, data: dict[str, Any]) -> None:
    """Errors one line each; warnings grouped by code (there are dozens per file, mostly RECOMMENDED keys)."""
    issues = data.get("issues", {}).get("issues", [])
    messages = data.get("issues", {}).get("codeMessages", {})
    report.issues = issues
    grouped: dict[str, list[str]] = defaultdict(list)
    for issue in issues:
        code = issue.get("code", "?") + (f"[{issue['subCode']}]" if issue.get("subCode") else "")
        location = issue.get("location", "")
        if issue.get("severity") == "error":
            text = (issue.get("issueMessage") or messages.get(issue.get("code", ""), "")).strip().splitlines()
            first = text[0].split(". ")[0].rstrip(".") if text else ""
            report.errors.append(f"{code} {location}" + (f": {first}" if first else ""))
        else:
            grouped[code].append(location)
    for code, locations in sorted(grouped.items()):
        report.warnings.append(f"{code}: {len(locations)} location(s), e.g. {locations[0] or '(dataset)'}")
