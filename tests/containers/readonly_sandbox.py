"""Run a command the way the container runs it: read-only everywhere except the tmpfs and outputs.

``docker run --read-only --tmpfs /tmp -v out:/out`` leaves the app exactly two kinds of writable
place: the tmpfs and the mounted output/work directories. No engine runs in CI, so we emulate it:

* preferred: a private mount namespace (``unshare -m``, root or unprivileged user namespaces) in
  which every real filesystem is remounted read-only and only one scratch directory stays
  writable. Any write elsewhere (HOME, the package, the virtual environment, the BIDS input, the
  current directory) fails with EROFS, exactly as in the container.
* fallback (no namespaces): HOME and the current directory get mode 0o555 and the caller compares
  snapshots of the protected trees; as root, permissions do not stop writes, so the snapshots are
  what catches them.

The environment comes from the Dockerfile's ``ENV`` lines (see :func:`container_env`), so the test
checks the variables the image really sets.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from container_recipes import dockerfile_instructions, final_stage_env

SKIP_MOUNT_PREFIXES = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Sandbox:
    """Paths of one emulated container run (all under pytest's tmp_path)."""

    writable: Path  # the only writable tree: holds tmpfs/, out/ (and work/ inside it)
    tmpfs: Path     # stands for the container's /tmp
    home: Path      # stands for the image's HOME: exists, read-only
    cwd: Path       # stands for WORKDIR when /tmp is not the tmpfs: read-only

    @classmethod
    def create(cls, root: Path) -> Sandbox:
        box = cls(writable=root / "rw", tmpfs=root / "rw" / "tmpfs", home=root / "home", cwd=root / "cwd")
        for path in (box.writable, box.tmpfs, box.home, box.cwd):
            path.mkdir(parents=True, exist_ok=True)
        return box


def container_env(box: Sandbox, tmpfs_writable: bool = True) -> dict[str, str]:
    """The image's runtime ENV with ``/tmp`` mapped to the sandbox tmpfs and HOME to a read-only dir.

    PATH is the host's (the image's /opt/venv is this test run's interpreter). With
    ``tmpfs_writable=False`` /tmp maps into the read-only HOME tree instead: the
    ``docker run --read-only`` case without ``--tmpfs``, where the app must fall back to the work dir.
    """
    tmp_root = box.tmpfs if tmpfs_writable else box.home / "no-tmpfs"
    env: dict[str, str] = {}
    for key, value in final_stage_env(dockerfile_instructions()).items():
        if key == "PATH":
            continue
        if key == "HOME":
            env[key] = str(box.home)
            continue
        env[key] = re.sub(r"^/tmp(?=/|$)", str(tmp_root), value)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    env["LANG"] = "C.UTF-8"
    # Compute nodes are offline: any download attempt fails fast instead of hanging.
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[proxy] = "http://127.0.0.1:9"
    return env


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4]
            if "\\" in point or point.startswith(SKIP_MOUNT_PREFIXES):
                continue
            points.append(point)
    return sorted(set(points), key=len)


@functools.lru_cache(maxsize=1)
def namespace_available() -> bool:
    """Whether a private mount namespace with read-only remounts can be made here."""
    if shutil.which("unshare") is None or not Path("/proc/self/mountinfo").exists():
        return False
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    probe = subprocess.run([*prefix, "--", "sh", "-c", "mount --make-rprivate / && mount -o remount,bind,ro /"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def run_read_only(box: Sandbox, command: list[str], env: dict[str, str], timeout: float,
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with everything read-only except ``box.writable`` (see the module docstring)."""
    cwd = cwd or box.cwd
    if namespace_available():
        prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
        script = (
            'set -e; mount --make-rprivate /; mount --bind "$M2M_RW" "$M2M_RW"; '
            'for m in $M2M_MOUNTS; do mount -o remount,bind,ro "$m" 2>/dev/null || [ "$m" != / ]; done; '
            'cd "$M2M_CWD"; unset M2M_RW M2M_MOUNTS M2M_CWD; exec "$@"'
        )
        full_env = {**env, "M2M_RW": str(box.writable), "M2M_MOUNTS": " ".join(_mount_points()),
                    "M2M_CWD": str(cwd)}
        return subprocess.run([*prefix, "--", "sh", "-c", script, "sh", *command], env=full_env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    for path in (box.home, box.cwd):
        path.chmod(0o555)
    try:
        return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)
    finally:
        for path in (box.home, box.cwd):
            path.chmod(0o755)


def protected_trees(*extra: Path, package_dir: Path) -> tuple[Path, ...]:
    """Trees to snapshot. In a namespace the package is mounted read-only, so a write there fails
    outright; only without one is it compared (other processes editing a checkout are not ours)."""
    return (*extra, *(() if namespace_available() else (package_dir,)))


def snapshot(*roots: Path) -> dict[str, float]:
    """Path -> mtime of every file and directory under ``roots`` (to prove nothing was written)."""
    seen: dict[str, float] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                try:
                    seen[path] = os.lstat(path).st_mtime
                except FileNotFoundError:
                    continue
    return seen


def changed(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Files added or modified between two snapshots."""
    return sorted(p for p, mtime in after.items() if before.get(p) != mtime)
