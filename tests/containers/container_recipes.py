"""Read the real container recipes (Dockerfile, apptainer.def) so tests check the files users build.

No container engine runs in CI, so the tests parse the recipes instead: the Dockerfile into a list
of instructions (line continuations joined, comments dropped) and its ENV/ARG values, the Apptainer
definition into its ``%sections``.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
APPTAINER_DEF = REPO / "apptainer.def"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, e.g. ``Instruction("RUN", "pip install ...", stage=1)``."""

    keyword: str
    args: str
    stage: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order, with ``\\`` continuations joined and comment lines skipped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def _pairs(args: str) -> dict[str, str]:
    """``KEY=VALUE KEY2="a b"`` -> dict (the modern ENV/ARG/LABEL form)."""
    out: dict[str, str] = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        out[key] = value if sep else ""
    return out


def dockerfile_args(instructions: list[Instruction]) -> dict[str, str]:
    """Default values of every ``ARG`` (later stages win; all our ARGs agree across stages)."""
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            values.update(_pairs(ins.args))
    return values


def final_stage_env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV of the image that runs: the last stage only, with ``${ARG}`` defaults filled in."""
    args = dockerfile_args(instructions)
    last = max(ins.stage for ins in instructions)
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV" and ins.stage == last:
            for key, value in _pairs(ins.args).items():
                env[key] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), env.get(m.group(1), "")), value)
    return env


def apptainer_sections(path: Path = APPTAINER_DEF) -> dict[str, str]:
    """``{"header": ..., "post": ..., "environment": ...}`` from a definition file."""
    sections: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^%(\w+)\s*$", line)
        if match:
            current = match.group(1)
            sections[current] = []
            continue
        sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def apptainer_header(sections: dict[str, str]) -> dict[str, str]:
    """``Bootstrap``/``From`` keys of the header (comments skipped)."""
    header: dict[str, str] = {}
    for line in sections["header"].splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return header


def apptainer_arguments(sections: dict[str, str]) -> dict[str, str]:
    """Default build arguments of the ``%arguments`` section."""
    return _pairs(" ".join(line.strip() for line in sections.get("arguments", "").splitlines() if line.strip()))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def pip_installs(commands: str) -> list[list[str]]:
    """Every ``pip install`` in shell text, as the list of its arguments (options included)."""
    found = []
    for match in re.finditer(r"(?:^|[\s;&|(])(?:\S*/)?pip3?\s+install\s+([^\n;&|)]*)", commands):
        found.append(shlex.split(match.group(1)))
    return found


def install_targets(arguments: list[str]) -> list[str]:
    """What a ``pip install`` installs: its arguments minus options and their values."""
    takes_value = {"--index-url", "-i", "--extra-index-url", "-c", "--constraint", "-r", "--requirement",
                   "--target", "-t", "--prefix", "--root"}
    targets, skip = [], False
    for arg in arguments:
        if skip:
            skip = False
            continue
        if arg in takes_value:
            skip = True
            continue
        if not arg.startswith("-"):
            targets.append(arg)
    return targets
