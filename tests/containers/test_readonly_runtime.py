"""The image's environment lets m2m run with a read-only root, a read-only HOME and a tmpfs /tmp.

Emulates ``docker run --read-only --tmpfs /tmp -v bids:/bids:ro -v out:/out IMAGE /bids /out ...``
(see readonly_sandbox.py): the variables are the Dockerfile's real ENV lines, every filesystem but
one scratch tree is read-only, and afterwards nothing may have appeared outside OUTPUT_DIR, the
work dir and the tmpfs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from readonly_sandbox import Sandbox, changed, container_env, protected_trees, run_read_only, snapshot

import m2m_bids

PACKAGE_DIR = Path(m2m_bids.__file__).resolve().parent

#: What the runner does at start-up, plus the tools that keep caches or temp files: matplotlib
#: (font cache), tempfile (antspyx, nipype interfaces) and the deno-based validator. nilearn,
#: nipype and torch run for real in the end-to-end test below.
PROBE = textwrap.dedent(
    """
    import json, os, subprocess, sys, tempfile
    from pathlib import Path
    work = Path(sys.argv[1])
    from m2m_bids.runtime import configure_caches, CACHE_VARIABLES
    moved = configure_caches(work)
    handle, scratch = tempfile.mkstemp(suffix=".nii.gz")
    os.close(handle); os.unlink(scratch)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(); ax.plot([0, 1]); fig.savefig(work / "figure.png"); plt.close(fig)
    done = subprocess.run(["bids-validator-deno", "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    print(json.dumps({"moved": moved, "caches": {k: os.environ[k] for k in CACHE_VARIABLES}}))
    """
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: worker processes put AF_UNIX sockets (<108 bytes) in TMPDIR."""
    root = Path(tempfile.mkdtemp(prefix="m2m-ro-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _probe(box: Sandbox, tmpfs_writable: bool) -> tuple[dict, list[str]]:
    env = container_env(box, tmpfs_writable=tmpfs_writable)
    work = box.writable / "out" / "work"
    work.mkdir(parents=True)
    protected = protected_trees(box.home, box.cwd, package_dir=PACKAGE_DIR)
    before = snapshot(*protected)
    done = run_read_only(box, [sys.executable, "-c", PROBE, str(work)], env, timeout=180)
    assert done.returncode == 0, f"probe failed under a read-only root:\n{done.stderr[-3000:]}"
    assert changed(before, snapshot(*protected)) == []
    return json.loads(done.stdout.strip().splitlines()[-1]), [str(work)]


def test_runtime_writes_only_to_tmpfs_and_work_dir(tmp_path: Path) -> None:
    """With the tmpfs (the documented ``--read-only --tmpfs /tmp``), caches stay where the ENV says."""
    box = Sandbox.create(tmp_path)
    report, _ = _probe(box, tmpfs_writable=True)
    assert report["moved"] == {}, "the Dockerfile's cache locations should be usable as they are"
    for name, value in report["caches"].items():
        assert Path(value).is_relative_to(box.tmpfs), f"{name}={value} is not on the tmpfs"
    assert (box.writable / "out" / "work" / "figure.png").is_file()


def test_runtime_falls_back_to_work_dir_without_tmpfs(tmp_path: Path) -> None:
    """``--read-only`` without ``--tmpfs``: /tmp is read-only too, so caches move to the work dir."""
    box = Sandbox.create(tmp_path)
    report, (work,) = _probe(box, tmpfs_writable=False)
    assert set(report["moved"]) == set(report["caches"]), report
    for value in report["caches"].values():
        assert Path(value).is_relative_to(work)


PIPELINE_MODULES = ("m2m_bids.synth", "m2m_bids.bids.layout", "m2m_bids.bids.derivatives", "m2m_bids.preproc.api")


@pytest.mark.integration
def test_participant_run_read_only(short_tmp: Path) -> None:
    """The app's fast end-to-end case: a tiny synthetic dataset, participant level, read-only root."""
    missing = [name for name in PIPELINE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"pipeline not wired yet (missing {', '.join(missing)})")
    from m2m_bids.synth import SynthSpec, generate_dataset

    box = Sandbox.create(short_tmp)
    bids = short_tmp / "bids"  # outside the writable tree: the input is read-only, like -v bids:/bids:ro
    generate_dataset(bids, SynthSpec.preset("tiny", n_participants=2, classes=("CN", "AD"), seed=0))
    out = box.writable / "out"
    env = container_env(box)
    protected = protected_trees(box.home, box.cwd, bids, package_dir=PACKAGE_DIR)
    before = snapshot(*protected)
    entry = Path(sys.executable).parent / "m2m"  # the console script, as the image's ENTRYPOINT
    command = [str(entry)] if entry.is_file() else [sys.executable, "-m", "m2m_bids"]
    done = run_read_only(box, [*command, str(bids), str(out), "participant",
                               "--skip-bids-validation", "--preset", "tiny", "--nprocs", "1"], env, timeout=300)
    assert done.returncode == 0, f"m2m participant failed under a read-only root:\n{done.stderr[-3000:]}"
    assert changed(before, snapshot(*protected)) == []
    description = json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))
    assert description["GeneratedBy"][0]["Container"]["Type"] == "docker"  # from M2M_CONTAINER_TYPE
    assert any((out / "work" / "tensor-cache").rglob("*")), "nothing reached the tensor cache"
    assert not (out / "work" / ".cache").exists(), "the Dockerfile's cache locations were not usable"
    assert (box.tmpfs / "m2m").is_dir()
    outside = [p for p in box.writable.iterdir() if p.name not in {"out", "tmpfs"}]
    assert outside == []


def test_sandbox_catches_a_write_to_home(tmp_path: Path) -> None:
    """Negative control: the emulation really stops (or at least sees) a write outside the tmpfs."""
    box = Sandbox.create(tmp_path)
    before = snapshot(box.home)
    done = run_read_only(box, [sys.executable, "-c", "import os; open(os.path.join(os.environ['HOME'], 'x'), 'w')"],
                         container_env(box), timeout=60)
    assert done.returncode != 0 or changed(before, snapshot(box.home)) != []
