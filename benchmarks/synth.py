"""Time the synthetic dataset generator per preset (wall and CPU seconds, output size).

Example: ``python benchmarks/synth.py --preset realistic --n-participants 1``; numbers go to
docs/performance.md under "## Synthetic data".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from m2m_bids.synth import SynthSpec, generate_dataset


def main() -> None:
    """Generate one dataset per requested preset into a temporary folder and report timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", nargs="+", default=["tiny", "small"])
    parser.add_argument("--n-participants", type=int, default=8)
    parser.add_argument("--fmriprep-derivatives", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="write here instead of a temp dir")
    args = parser.parse_args()
    for name in args.preset:
        spec = SynthSpec.preset(name, n_participants=args.n_participants,
                                fmriprep_derivatives=args.fmriprep_derivatives)
        with tempfile.TemporaryDirectory() as tmp:
            out = (args.keep or Path(tmp)) / f"synth-{name}"
            wall, cpu = time.perf_counter(), time.process_time()
            generate_dataset(out, spec, force=True)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(json.dumps({"preset": name, "n_participants": spec.n_participants,
                              "derivatives": spec.fmriprep_derivatives, "wall_s": round(wall, 2),
                              "cpu_s": round(cpu, 2), "mb": round(size / 2**20, 1)}))


if __name__ == "__main__":
    main()
