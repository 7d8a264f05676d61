"""The documentation site builds with no broken link, and what it tells users to type is real.

* ``mkdocs build --strict``: a broken link, a missing nav page or a bad anchor fails the build.
* docs/usage.md names every spelling of every option of ``m2m`` (taken from the click command
  itself, so the page cannot fall behind the code).
* every ``--flag`` given to ``m2m`` in the docs, the HPC scripts and the README exists.
* the SLURM scripts pass ``bash -n`` and, when installed, shellcheck.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from container_recipes import REPO

from m2m_bids.cli.app import app

DOCS = REPO / "docs"
HPC_SCRIPTS = sorted((DOCS / "hpc").glob("*.sbatch"))
LEVEL = re.compile(r"\s(participant|group)(?=\s|$)")


def _m2m_options() -> set[str]:
    command = typer.main.get_command(app)
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("-")}


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """No -q: mkdocs only counts the warnings it logs, so a quiet strict build passes broken links."""
    if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (part of the test extra)")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "usage" / "index.html").is_file()
    assert (tmp_path / "site" / "hpc" / "m2m-participant-array.sbatch").is_file()  # linked scripts are published


def test_usage_page_documents_every_option() -> None:
    usage = (DOCS / "usage.md").read_text(encoding="utf-8")
    missing = sorted(opt for opt in _m2m_options() if f"`{opt}`" not in usage)
    assert missing == [], f"docs/usage.md does not mention {missing}; add them to its tables"


def _command_lines(text: str) -> list[str]:
    """Shell commands in text: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(" #")[0] for line in joined.splitlines()]


def _m2m_flags_used() -> dict[str, set[str]]:
    """``--flags`` passed to m2m after its analysis level, per file that shows a command."""
    sources = [*DOCS.glob("*.md"), *HPC_SCRIPTS, REPO / "README.md"]
    used: dict[str, set[str]] = {}
    for path in sources:
        blocks = re.findall(r"```[^\n]*\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S) \
            if path.suffix == ".md" else [path.read_text(encoding="utf-8")]
        for line in (ln for block in blocks for ln in _command_lines(block)):
            if not re.search(r"(^|\s)(m2m|m2m_bids|\S+\.sif|\"?\$\{?M2M_SIF\}?\"?|m2m-bids:\S+)\s", line):
                continue
            level = LEVEL.search(line)
            if level:
                flags = re.findall(r"(?:^|\s)(--?[a-zA-Z][\w-]*)", line[level.end():])
                used.setdefault(path.name, set()).update(flags)
    return used


def test_commands_in_docs_use_real_options() -> None:
    used = _m2m_flags_used()
    assert {"quickstart.md", "hpc.md", "m2m-participant-array.sbatch", "m2m-group-torchrun.sbatch"} <= set(used)
    known = _m2m_options()
    wrong = {name: sorted(flags - known) for name, flags in used.items() if flags - known}
    assert wrong == {}, f"options shown in the docs that m2m does not have: {wrong}"


@pytest.mark.parametrize("script", HPC_SCRIPTS, ids=lambda p: p.name)
def test_hpc_scripts_are_valid_bash(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH" in script.read_text(encoding="utf-8")
    if shutil.which("shellcheck") is not None:
        lint = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, timeout=60,
                              check=False)
        assert lint.returncode == 0, lint.stdout


def test_hpc_scripts_follow_the_cluster_contract() -> None:
    """Array: one participant per task, --nv, shared cache. Group: torchrun over srun, NCCL, resume."""
    array = (DOCS / "hpc" / "m2m-participant-array.sbatch").read_text(encoding="utf-8")
    assert "SLURM_ARRAY_TASK_ID" in array and "--participant-label" in array and "--nv" in array
    assert "--cache-dir /cache" in array and "--cleanenv" in array and ":/bids:ro" in array
    group = (DOCS / "hpc" / "m2m-group-torchrun.sbatch").read_text(encoding="utf-8")
    assert re.search(r"srun .*apptainer exec --cleanenv --nv", group)
    assert "torchrun --nnodes" in group and "--rdzv-backend=c10d" in group and "-m m2m_bids" in group
    assert "APPTAINERENV_NCCL" in group and "--resume" in group and "--cache-dir /cache" in group


def test_synth_commands_in_docs_exist() -> None:
    if importlib.util.find_spec("m2m_bids.synth") is None:
        pytest.skip("m2m_bids.synth is not there yet")
    helptext = subprocess.run([sys.executable, "-c", "from m2m_bids.synth import main; main()", "--help"],
                              capture_output=True, text=True, timeout=60, check=False).stdout
    for path in DOCS.glob("*.md"):
        for line in _command_lines(path.read_text(encoding="utf-8")):
            if line.strip().startswith("m2m-synth"):
                for flag in re.findall(r"\s(--[\w-]+)", line):
                    assert flag in helptext, f"{path.name}: m2m-synth has no {flag}"
