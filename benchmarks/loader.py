"""Training-loader throughput from the tensor cache: fMRI windows/s and GB/s delivered to the step.

Builds (or reuses, ``--cache``) a cache of ``--runs`` synthetic runs of ``--grid``^3 x ``--run-frames``
float16 (96^3 x 300 is 530 MB a run, the size of a real resting-state run on the paper grid), reads
every file once so the runs sit in the page cache (the steady state of a multi-epoch training), then
draws random ``--frames``-frame training windows through the project's ``WindowDataset`` and
``make_loader`` exactly as training does, for each ``--workers`` setting.

    python benchmarks/loader.py --cache /tmp/loader-cache --workers 0 2

Only the fMRI window is drawn (no T1w), so the numbers are the fMRI data path alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from m2m_bids.config import Train
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import EntryMeta
from m2m_bids.training.data import EpochSampler, WindowDataset, make_records
from m2m_bids.training.distributed import Dist
from m2m_bids.training.loop import make_loader


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="cache folder (built on first use)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--grid", type=int, default=96)
    p.add_argument("--run-frames", type=int, default=300)
    p.add_argument("--frames", type=int, default=20, help="window length")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--windows", type=int, default=200, help="windows timed per setting")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def build_cache(args: argparse.Namespace) -> list:
    """The cache entries of the benchmark runs (written once; reused on later calls)."""
    cache, entries = TensorCache(args.cache), []
    shape = (args.grid,) * 3 + (args.run_frames,)
    for i in range(args.runs):
        key = f"{i + 1:064x}"
        entry = cache.get(key, verify=False)
        if entry is None:
            rng = np.random.default_rng(i)
            fmri = rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
            entry = cache.put(key, {"fmri": fmri}, EntryMeta(participant=f"{i:02d}"))
        entries.append(entry)
    return entries


def warm_page_cache(entries: list) -> None:
    """Read every tensor file once so that timing measures memory, not the disk."""
    for entry in entries:
        for file in Path(entry.path).glob("*.npy"):
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def time_loader(dataset: WindowDataset, workers: int, args: argparse.Namespace) -> dict:
    """Windows/s over ``args.windows`` windows after one untimed batch (worker start-up excluded)."""
    dist = Dist(0, 0, 1, torch.device("cpu"))
    loader = make_loader(dataset, EpochSampler(len(dataset), seed=1), args.batch_size,
                         Train(num_workers=workers), dist)
    seen, started, window_bytes = 0, 0.0, 0
    for i, batch in enumerate(loader):
        if i == 0:
            started = time.perf_counter()
            window_bytes = batch["fmri"][0].numel() * batch["fmri"].element_size()
            continue
        seen += int(batch["fmri"].shape[0])
        if seen >= args.windows:
            break
    seconds = time.perf_counter() - started
    rate = seen / seconds
    return {"workers": workers, "windows": seen, "seconds": round(seconds, 3),
            "windows_per_s": round(rate, 1), "gb_per_s": round(rate * window_bytes / 1e9, 3),
            "window_mb": round(window_bytes / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    entries = build_cache(args)
    warm_page_cache(entries)
    tab = {f"{i:02d}": np.zeros(0, np.float32) for i in range(args.runs)}
    records = make_records(entries, {p: 0 for p in tab}, tab)
    n_draws = (args.windows // args.runs + 2 * args.batch_size) * 2
    dataset = WindowDataset(records, frames=args.frames, modalities=("fmri",), train=True,
                            samples_per_run=n_draws)
    results = []
    for workers in args.workers:
        row = time_loader(dataset, workers, args)
        results.append(row)
        print(f"workers={row['workers']}: {row['windows_per_s']:7.1f} windows/s  {row['gb_per_s']:6.3f} GB/s  "
              f"({row['windows']} windows of {row['window_mb']} MB in {row['seconds']} s)", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
