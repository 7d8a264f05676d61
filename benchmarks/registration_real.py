#!/usr/bin/env python
"""T1w brain extraction + registration on the shared real scans: QC figures and time per participant.

For each T1w: deepbet brain extraction (and its Dice against the input's own non-zero region for
the skull-stripped sub-05..08), then the pipeline's T1w steps with the default affine and with SyN
(the reference registration), each followed by the grid resampling and the QC figures of
:mod:`m2m_bids.preproc.regqc`. Prints a Markdown table (docs/preprocessing.md).

    python benchmarks/registration_real.py [--bids ../shared/data/bids-real] [--threads 2] [--out /tmp/m2m-reg-real]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from m2m_bids.preproc import images, steps
from m2m_bids.preproc.brain import dice, predict_brain

RES, SHAPE = 3.0, [64, 64, 64]
#: The skull-stripped T1w scans of the shared real set.
STRIPPED = {"sub-05", "sub-06", "sub-07", "sub-08"}


def run_participant(t1w: Path, out: Path, threads: int, methods: list[str]) -> dict:
    """QC figures and seconds of one T1w through prepare -> register (each method) -> grid."""
    row: dict = {"participant": t1w.name.split("_")[0]}
    img = images.load_ras(str(t1w), ndim=3)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if row["participant"] in STRIPPED:  # skull-stripped input: compare with its own brain
        start = time.perf_counter()
        row["deepbet_dice_vs_stripped"] = round(dice(predict_brain(img, threads), data > 0), 4)
        row["deepbet_s"] = round(time.perf_counter() - start, 1)
    work = out / row["participant"]
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepared, brain, record = steps.t1w_prepare(str(t1w), RES, threads, str(work))
    row["prepare_s"] = round(time.perf_counter() - start, 1)
    row.update(json.loads(Path(record).read_text()))
    for method in methods:
        folder = work / method
        folder.mkdir(exist_ok=True)
        start = time.perf_counter()
        transform = steps.t1w_register(prepared, brain, method, RES, SHAPE, 0, str(folder))
        row[f"{method}_s"] = round(time.perf_counter() - start, 1)
        *_, qc = steps.t1w_to_grid(prepared, brain, record, transform, RES, SHAPE, str(folder))
        for name, value in json.loads(Path(qc).read_text()).items():
            if name in ("template_correlation", "brain_dice", "template_coverage"):
                row[f"{method}_{name}"] = value
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/bids-real")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["affine", "syn"])
    parser.add_argument("--participants", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/m2m-reg-real"))
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # as the pipeline runs ANTs (reproducible)
    files = sorted(args.bids.glob("sub-*/anat/*_T1w.nii.gz"))
    if args.participants:
        files = [f for f in files if f.name.split("_")[0] in {f"sub-{p}" for p in args.participants}]
    rows = []
    for file in files:
        rows.append(run_participant(file, args.out, args.threads, args.methods))
        print(json.dumps(rows[-1]), flush=True)
    cols = sorted({k for r in rows for k in r} - {"participant"})
    print("| participant | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['participant']} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
