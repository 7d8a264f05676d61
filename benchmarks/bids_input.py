"""Time the BIDS input layer: participant selection (with/without the voxel scan) and validation.

    python benchmarks/bids_input.py /work/shared/data/bids-real --repeat 3

Prints medians in seconds; numbers go to docs/performance.md (## BIDS input and output).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--participant-label", nargs="*", default=[])
    parser.add_argument("--min-volumes", type=int, default=2)
    args = parser.parse_args()

    from m2m_bids.bids.layout import collect_participants
    from m2m_bids.bids.validator import validate_bids_dir
    from m2m_bids.config import Execution, Preproc

    with tempfile.TemporaryDirectory() as out:
        ex = Execution(bids_dir=args.bids_dir, output_dir=Path(out), analysis_level="participant",
                       participant_label=args.participant_label)
        preproc = Preproc(min_volumes=args.min_volumes)
        found, problems = collect_participants(ex, preproc, scan_voxels=False)
        print(f"{len(found)} participant(s) usable, {len(problems)} problem(s)")
        rows = {
            "collect_participants (headers only)": lambda: collect_participants(ex, preproc, scan_voxels=False),
            "collect_participants (voxel scan)": lambda: collect_participants(ex, preproc),
            "validate_bids_dir (all)": lambda: validate_bids_dir(args.bids_dir),
        }
        if found:
            first = found[0].label
            rows[f"validate_bids_dir (sub-{first} only)"] = lambda: validate_bids_dir(args.bids_dir, [first])
        for name, fn in rows.items():
            print(f"{name}: {_median(fn, args.repeat):.2f} s")


if __name__ == "__main__":
    main()
