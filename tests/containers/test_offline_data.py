"""The templates and atlases baked into the images load with no network (the image build runs the same script)."""

from __future__ import annotations

import os
import subprocess
import sys

from container_recipes import REPO

SCRIPT = REPO / "scripts" / "container" / "verify_offline_data.py"


def test_templates_and_atlases_load_offline() -> None:
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NIPYPE_NO_ET": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import verify_offline_data as verify
    finally:
        sys.path.remove(str(SCRIPT.parent))
    lines = done.stdout.splitlines()
    assert len(lines) == len(verify.all_checks(with_validator=True))
    assert all(line.startswith("ok ") for line in lines)
    assert any("MNI152" in line and "(67, 79, 64)" in line for line in lines)  # the 3 mm target grid
    for atlas in verify.ATLASES:
        assert any(f"atlas {atlas}:" in line for line in lines)


def test_socket_guard_blocks_downloads() -> None:
    """The guard the script installs turns any download attempt into an error, not a hang."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import verify_offline_data as v; v.block_network()\n"
            "import urllib.request\n"
            "try:\n    urllib.request.urlopen('http://example.org', timeout=5)\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(SCRIPT.parent)], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "NO_PROXY": "*"})
    assert done.returncode == 3 and "network access attempted" in done.stdout
