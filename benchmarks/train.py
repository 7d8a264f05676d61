"""Training-step throughput and peak memory: precision x torch.compile x data source.

Each configuration runs in a fresh subprocess (clean peak-memory counters) and reports samples/s
of full training steps (forward, CE + alignment loss, backward, clipping, AdamW) after warm-up.

    # the paper's size on a GPU (96^3 grid, 128 frames, patch 6):
    python benchmarks/train.py --device cuda --grid 96 --frames 128 --model-preset paper --batch-size 2
    # a reduced size on the CPU:
    python benchmarks/train.py --device cpu --grid 32 --frames 8 --batch-size 2 --steps 5

``--data memory`` feeds tensors already in memory; ``--data cache`` reads windows from a synthetic
tensor cache through the real DataLoader (workers, pinned memory, fp16 mmap) as training does.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--arch", default="m2m")
    p.add_argument("--model-preset", default="default", help="models preset: default, paper, tiny, swift4")
    p.add_argument("--grid", type=int, default=96)
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--data", nargs="+", default=["memory", "cache"], choices=["memory", "cache"])
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--output", type=Path, help="write all results as JSON here")
    p.add_argument("--single", help=argparse.SUPPRESS)  # internal: one configuration, JSON on stdout
    return p.parse_args(argv)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _batches(args: argparse.Namespace, data: str, tmp: Path):
    """An endless iterator of training batches, from memory or through the cache loader."""
    import numpy as np
    import torch

    g, t, b = args.grid, args.frames, args.batch_size
    if data == "memory":
        # a few distinct batches: one repeated batch is overfitted within steps, and the resulting
        # tiny (denormal) values slow CPU kernels, which would misstate the step time; fMRI is
        # time-first (B, 1, T, X, Y, Z) as the loader delivers it
        batches = [{"fmri": torch.randn(b, 1, t, g, g, g).half(), "smri": torch.randn(b, 1, g, g, g, 1).half(),
                    "tabular": torch.randn(b, 4), "label": torch.randint(0, 2, (b,))} for _ in range(4)]
        return itertools.cycle(batches)
    from m2m_bids.config import Train
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import EntryMeta
    from m2m_bids.training.data import EpochSampler, WindowDataset, make_records
    from m2m_bids.training.distributed import Dist
    from m2m_bids.training.loop import make_loader

    cache, rng, entries = TensorCache(tmp / "cache"), np.random.default_rng(0), []
    for i in range(max(4, 2 * b)):
        key = f"{i:064x}"
        entries.append(cache.put(key, {"fmri": rng.normal(size=(g, g, g, 2 * t)).astype(np.float16),
                                       "smri": rng.normal(size=(g, g, g)).astype(np.float16)},
                                  EntryMeta(participant=f"{i:02d}")))
    tab = {f"{i:02d}": np.zeros(4, np.float32) for i in range(len(entries))}
    records = make_records(entries, {p: int(p) % 2 for p in tab}, tab)
    ds = WindowDataset(records, frames=t, modalities=("fmri", "smri", "tabular"), train=True, samples_per_run=64)
    dist = Dist(0, 0, 1, torch.device(args.device))
    loader = make_loader(ds, EpochSampler(len(ds)), b, Train(num_workers=args.num_workers), dist)
    return itertools.cycle(loader)


def run_single(args: argparse.Namespace, precision: str, compiled: bool, data: str) -> dict:
    """Time ``args.steps`` training steps of one configuration in this process."""
    import resource

    import torch
    import torch.nn.functional as F

    from m2m_bids.model_inputs.atlas import build_model
    from m2m_bids.models import model_info
    from m2m_bids.training.loop import amp_dtype, autocast, forward

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = {} if args.model_preset == "default" else {"preset": args.model_preset}
    model = build_model(args.arch, num_classes=2, img_size=(args.grid,) * 3, frames=args.frames, n_tabular=4,
                        **overrides).to(device)
    params = model_info(model)["params"]
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = amp_dtype(precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        batches = _batches(args, data, Path(tmp))
        times, begun = [], time.perf_counter()
        for i in range(args.warmup + args.steps):
            started = time.perf_counter()
            batch = next(batches)
            with autocast(device, dtype):
                out = forward(step_model, batch, device)
                loss = F.cross_entropy(out.logits.float(), batch["label"].to(device))
                if out.align_loss is not None:
                    loss = loss + out.align_loss.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - started)
            elif i == args.warmup - 1:
                warmup_s = time.perf_counter() - begun  # includes torch.compile and cache creation
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    step_s = sorted(times)[len(times) // 2]
    return {"precision": precision, "compile": compiled, "data": data, "device": str(device),
            "params": params, "grid": args.grid, "frames": args.frames, "batch_size": args.batch_size,
            "median_step_s": step_s, "warmup_s": warmup_s, "samples_per_s": args.batch_size / step_s,
            "peak_mem_mib": peak, "peak_mem_kind": "cuda allocated" if device.type == "cuda" else "process RSS"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.warmup = max(1, args.warmup)
    if args.single:
        precision, compiled, data = args.single.split(",")
        print(json.dumps(run_single(args, precision, compiled == "on", data)))
        return 0
    results = []
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for precision, compiled, data in itertools.product(args.precision, args.compile, args.data):
        cmd = [sys.executable, __file__, *base, "--single", f"{precision},{compiled},{data}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            row = {"precision": precision, "compile": compiled == "on", "data": data,
                   "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(row)
        print(_row(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


def _row(r: dict) -> str:
    head = f"{r['precision']:>5} compile={'on ' if r['compile'] else 'off'} data={r['data']:<6}"
    if "error" in r:
        return f"{head} ERROR {r['error'][:120]}"
    return (f"{head} {r['samples_per_s']:8.2f} samples/s  step {r['median_step_s'] * 1000:8.1f} ms  "
            f"peak {r['peak_mem_mib']:8.0f} MiB ({r['peak_mem_kind']})  warm-up {r['warmup_s']:6.1f} s  "
            f"params {r['params']:,}")


if __name__ == "__main__":
    sys.exit(main())
