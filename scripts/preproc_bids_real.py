#!/usr/bin/env python
"""Preprocess every participant of the real-data test set and report the outcome per participant.

Usage::

    python scripts/preproc_bids_real.py [--bids-dir ../shared/data/bids-real] [--out /tmp/m2m-real]
                                        [--preset default|tiny] [--nprocs 2] [--plugin MultiProc]

Each participant must either end in the tensor cache or fail with a specific message (which file,
what is wrong, what to do); a traceback counts as a failure of this script (exit 1). The table it
prints is what docs/preprocessing.md records.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from m2m_bids.bids.layout import collect_participants
from m2m_bids.config import Preset, build_config
from m2m_bids.preproc.api import preprocess_participants
from m2m_bids.runtime import configure_caches
from m2m_bids.testing import BIDS_REAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids-dir", type=Path, default=BIDS_REAL)
    parser.add_argument("--out", type=Path, default=Path("/tmp/m2m-real"))
    parser.add_argument("--preset", default="default", choices=[p.value for p in Preset])
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--plugin", default="MultiProc")
    parser.add_argument("--participant-label", nargs="*", default=[])
    parser.add_argument("--save-preproc", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)
    cfg = build_config({"execution": {"bids_dir": args.bids_dir, "output_dir": args.out,
                                      "analysis_level": "participant", "nprocs": args.nprocs,
                                      "participant_label": args.participant_label, "nipype_plugin": args.plugin,
                                      "save_preproc": args.save_preproc, "skip_bids_validation": True}},
                       preset=Preset(args.preset))
    configure_caches(cfg.execution.resolved_work_dir)
    start = time.monotonic()
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    rows = [(p.label, "rejected by the BIDS layer", p.message.replace("\n", " ")) for p in problems]
    for result in preprocess_participants(participants, cfg):
        if result.error is not None:
            rows.append((result.label, "failed (clear message)", result.error.message.replace("\n", " ")))
            continue
        entry = result.entries[0]
        meta, bold = entry.meta, entry.meta.bold
        rows.append((result.label, "cached" if result.cached else "preprocessed",
                     f"{len(result.entries)} run(s); fmri {tuple(entry.load('fmri').shape)}; "
                     f"brain voxels {meta.brain_voxels}; max FD {bold.motion.max_fd:.2f} mm; "
                     f"STC {'yes' if bold.slice_timing.corrected else 'no'}"))
    print("\n| participant | outcome | details |\n|---|---|---|")
    for label, outcome, details in sorted(rows):
        print(f"| sub-{label} | {outcome} | {details} |")
    print(f"\ntotal wall time {time.monotonic() - start:.1f} s (preset {args.preset}, nprocs {args.nprocs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
