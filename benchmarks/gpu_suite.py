"""Every GPU measurement of the data path and the models in one run (H100/H200, under 8 minutes).

    python benchmarks/gpu_suite.py --out "$OUT"                       # torch alone is enough
    python benchmarks/gpu_suite.py --out "$OUT" --swift-ref /path/to/SwiFT   # + the SwiFT reference

Sections, in this order, until ``--budget`` seconds are spent (the rest is recorded as skipped):

1. ``attention``: the window-attention kernels (SDPA backends vs batched matmul) on the paper
   preset's real window shapes, bf16 and fp32 (``benchmarks/attention.py``).
2. ``train``: training samples/s and peak memory of the SwiFT encoder (96^3 x 20, embed 24, 4 stages)
   and of M2M-AlignNet (paper preset, 96^3 x 20 and x 128) at batch 8/16/32, fp32/bf16, eager; then
   compiled (bf16 first); M2M at x 128 bf16 batch 32 also without checkpointing (the fit check).
   With ``--swift-ref`` the public SwiFT reference model runs the same encoder rows, so the ratio
   comes from one run.
3. ``sync``: CUDA syncs of the project's ``train_one_epoch`` (1 vs 3 steps, sync debug mode);
   ``tests``: the CUDA-only tests of ``tests/training/test_dataflow.py`` (needs pytest).
4. ``loader``: project training epochs fed by the real loader (streamed by workers, and resident
   on the GPU) vs synthetic in-memory batches.
5. ``apply`` / ``explain``: ``benchmarks/apply.py`` and ``benchmarks/explain_truth.py`` on cuda.

Sections 1-2 need torch only. Sections 3-5 import the rest of m2m_bids (numpy, pydantic, ...) and
are recorded as skipped, with the import error, where it is missing. Rows go to
``$OUT/gpu_suite.jsonl`` as they are measured and a table to ``$OUT/gpu_suite.md`` at the end.

The SwiFT reference cannot be downloaded on the GPU machine: clone it beforehand next to the
project (``git clone https://github.com/Transconnectome/SwiFT``) so that it travels with the
working tree, and pass its folder. Its model is imported from
``project/module/models/swin4d_transformer_ver7.py`` (``SwinTransformer4D``) with the keyword
arguments of ``--swift-ref-kwargs`` (JSON; defaults: SwiFT's 96^3 x 20 configuration).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from m2m_bids.models import create_model  # noqa: E402  (torch only)
from m2m_bids.models.config import build_config  # noqa: E402
from m2m_bids.models.swin4d import SwinEncoder4D  # noqa: E402

SECTIONS = ("attention", "train", "sync", "tests", "loader", "apply", "explain")
SWIFT_REF_KWARGS = {"img_size": [96, 96, 96, 20], "in_chans": 1, "embed_dim": 24, "window_size": [4, 4, 4, 4],
                    "first_window_size": [4, 4, 4, 4], "patch_size": [6, 6, 6, 1], "depths": [2, 2, 6, 2],
                    "num_heads": [3, 6, 12, 24], "c_multiplier": 2, "last_layer_full_MSA": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.jsonl / gpu_suite.md")
    p.add_argument("--budget", type=float, default=450.0, help="seconds; later sections are skipped after")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--steps", type=int, default=4, help="timed steps per row (after 2 warm-up steps)")
    p.add_argument("--swift-ref", type=Path, help="a checkout of github.com/Transconnectome/SwiFT")
    p.add_argument("--swift-ref-kwargs", type=json.loads, default=SWIFT_REF_KWARGS)
    p.add_argument("--grid", type=int, default=96, help="cubic grid (smaller only for a smoke run)")
    p.add_argument("--frames", type=int, nargs=2, default=[20, 128], help="the short and the long window")
    p.add_argument("--device", default="cuda", help="cuda; cpu runs a smoke test of the script itself")
    p.add_argument("--only", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="run these sections only")
    return p.parse_args(argv)


class Suite:
    """Runs measurements against a deadline and records every row (including errors and skips)."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget
        self.rows: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu_suite.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (closed in finish)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, section: str, row: dict[str, Any]) -> None:
        row = {"section": section, **row}
        self.rows.append(row)
        self.log.write(json.dumps(row, default=str) + "\n")
        self.log.flush()
        print(json.dumps(row, default=str), flush=True)

    def run(self, section: str, name: dict[str, Any], fn: Callable[[], dict[str, Any]], need_s: float = 5.0) -> None:
        """``fn()``'s row under ``name``; 'skipped' past the budget, 'oom' / 'error' on failure."""
        if self.left() < need_s:
            self.record(section, {**name, "status": "skipped (time budget)"})
            return
        try:
            self.record(section, {**name, "status": "ok", **fn()})
        except torch.cuda.OutOfMemoryError:
            self.record(section, {**name, "status": "oom"})
        except Exception as err:  # one failing row must not end the suite
            self.record(section, {**name, "status": "error", "error": f"{type(err).__name__}: {err}"[:300]})
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def finish(self) -> None:
        self.log.close()
        lines = ["| section | row | status | samples/s | peak GiB | notes |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            keys = ("target", "batch", "precision", "compile", "checkpointing", "kernel", "stage", "data")
            label = " ".join(f"{k}={r[k]}" for k in keys if k in r)
            notes = r.get("error") or r.get("note") or ""
            lines.append(f"| {r['section']} | {label} | {r['status']} | {r.get('samples_per_s', '')} | "
                         f"{r.get('peak_gib', '')} | {notes} |")
        (self.out / "gpu_suite.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- models ----------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """An encoder with a GAP + Linear head: what SwiFT trains for classification."""

    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(channels, 2)

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        z = self.encoder(fmri)
        return self.head(z.flatten(2).mean(-1) if z.shape[1] == self.head.in_features else z.mean(dim=(1, 2, 3, 4)))


def build(target: str, batch: int, dtype: torch.dtype, checkpointing: bool | None, args: argparse.Namespace,
          swift_ref: Callable[[], nn.Module] | None) -> tuple[nn.Module, dict[str, torch.Tensor], bool]:
    """(model, one batch of inputs on the device in the compute dtype, checkpointing used).

    Targets: ``encoder`` and ``swift-ref`` (short window), ``m2m-short`` and ``m2m-long``."""
    grid, device = args.grid, args.device
    if target in ("encoder", "swift-ref"):
        frames = args.frames[0]
        if target == "encoder":
            ckpt = bool(checkpointing)
            cfg = build_config("swift", {"preset": "swift4", "patch_size": 6, "embed_dim": 24, "frames": frames,
                                         "img_size": (grid,) * 3, "modalities": ("fmri",), "grad_checkpointing": ckpt})
            encoder = SwinEncoder4D(cfg)
            model: nn.Module = Classifier(encoder, encoder.out_dim)
        else:
            ckpt = False
            ref = swift_ref()  # type: ignore[misc]
            model = Classifier(ref, ref.num_features if hasattr(ref, "num_features") else 192)
        inputs = {"fmri": torch.randn(batch, 1, grid, grid, grid, frames, device=device, dtype=dtype)}
        return model.to(device), inputs, ckpt
    frames = args.frames[0] if target == "m2m-short" else args.frames[1]
    overrides: dict[str, Any] = {"preset": "paper"}
    if checkpointing is not None:
        overrides["grad_checkpointing"] = checkpointing
    model = create_model("m2m", num_classes=2, img_size=grid, frames=frames, n_tabular=4, **overrides).to(device)
    inputs = {"fmri": torch.randn(batch, 1, grid, grid, grid, frames, device=device, dtype=dtype),
              "smri": torch.randn(batch, 1, grid, grid, grid, 1, device=device, dtype=dtype),
              "tabular": torch.randn(batch, 4, device=device, dtype=dtype)}
    return model, inputs, bool(model.config.grad_checkpointing)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def time_training(target: str, batch: int, precision: str, compiled: bool, args: argparse.Namespace,
                  checkpointing: bool | None = None, swift_ref: Callable[[], nn.Module] | None = None) -> dict:
    """Samples/s and peak memory of full training steps (forward, CE (+ alignment), backward, AdamW)."""
    amp = {"bf16": torch.bfloat16, "fp32": None}[precision]
    device = args.device
    torch.manual_seed(0)
    model, inputs, ckpt = build(target, batch, amp or torch.float32, checkpointing, args, swift_ref)
    model.train()
    run = torch.compile(model, dynamic=False) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    labels = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            out = run(**inputs)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = F.cross_entropy(logits.float(), labels)
            if not isinstance(out, torch.Tensor) and out.align_loss is not None:
                loss = loss + 0.1 * out.align_loss.float()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(2):
        step()
    _sync(device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"samples_per_s": round(batch * args.steps / seconds, 2), "peak_gib": _peak_gib(device),
            "warmup_s": round(warm, 1), "checkpointing": ckpt}


def swift_ref_factory(folder: Path, kwargs: dict[str, Any]) -> Callable[[], nn.Module]:
    """A constructor of the SwiFT reference ``SwinTransformer4D`` from a checkout of its repository."""
    sys.path.insert(0, str(folder))
    module = importlib.import_module("project.module.models.swin4d_transformer_ver7")
    return lambda: module.SwinTransformer4D(**kwargs)


# -- sections --------------------------------------------------------------------------------------
def attention_section(suite: Suite, args: argparse.Namespace) -> None:
    spec = importlib.util.spec_from_file_location("attention_bench", HERE / "attention.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    for precision in ("bf16", "fp32"):
        bargs = bench.parse_args(["--device", args.device, "--preset", "paper", "--grid", str(args.grid),
                                  "--frames", str(args.frames[0]), "--batch-size", "16", "--dtype", precision])
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        kernels = ["matmul", "sdpa", *bench.BACKENDS] if args.device == "cuda" else ["matmul", "sdpa"]
        for shape in bench.stage_shapes(bargs):
            name = {"stage": shape["stage"], "precision": precision, "tokens": shape["tokens"],
                    "head_dim": shape["head_dim"], "windows": shape["windows"]}

            def measure(shape=shape) -> dict[str, Any]:
                seconds = {k: bench.time_kernel(k, shape, bargs, dtype) for k in kernels}
                timed = {k: s for k, s in seconds.items() if isinstance(s, float)}
                return {"ms": {k: round(s * 1000, 3) if isinstance(s, float) else s for k, s in seconds.items()},
                        "fastest": min(timed, key=timed.get) if timed else None,
                        "auto": bench.attention_kernel(shape["tokens"], args.device)}

            suite.run("attention", name, measure)


def swift_reference(suite: Suite, args: argparse.Namespace) -> Callable[[], nn.Module] | None:
    """The SwiFT reference constructor when ``--swift-ref`` is given and imports; else None (recorded)."""
    if args.swift_ref is None:
        suite.record("train", {"target": "swift-ref", "status": "skipped (no --swift-ref checkout given)"})
        return None
    try:
        return swift_ref_factory(args.swift_ref, args.swift_ref_kwargs)
    except Exception as err:
        suite.record("train", {"target": "swift-ref", "status": "error", "error": f"import: {err}"[:300]})
        return None


def train_rows(suite: Suite, args: argparse.Namespace, ref: Callable[[], nn.Module] | None, *, precision: str,
               compiled: bool, batches: list[int]) -> None:
    """One row per target and batch size at ``precision``, eager or compiled."""
    targets = ["encoder", *(["swift-ref"] if ref else []), "m2m-short", "m2m-long"]
    for batch in batches:
        for target in targets:
            if compiled:
                torch._dynamo.reset()
            suite.run("train", {"target": target, "batch": batch, "precision": precision, "compile": compiled},
                      lambda t=target, b=batch: time_training(t, b, precision, compiled, args, swift_ref=ref),
                      need_s=90.0 if compiled else 10.0)


def fit_check(suite: Suite, args: argparse.Namespace) -> None:
    """The long-window M2M at the largest batch without checkpointing: does it fit?"""
    batch = max(args.batches)
    suite.run("train", {"target": "m2m-long", "batch": batch, "precision": "bf16", "compile": False,
                        "note": "checkpointing off (fit check)"},
              lambda: time_training("m2m-long", batch, "bf16", False, args, checkpointing=False))


def sync_section(suite: Suite, args: argparse.Namespace) -> None:
    from m2m_bids.config import Train
    from m2m_bids.training.distributed import Dist
    from m2m_bids.training.loop import train_one_epoch

    def measure() -> dict[str, Any]:
        import warnings

        device = torch.device(args.device)
        model = create_model("m2m", num_classes=2, img_size=16, frames=4, n_tabular=2, preset="tiny").to(device)
        batch = {"fmri": torch.randn(2, 1, 4, 16, 16, 16).half(), "smri": torch.randn(2, 1, 16, 16, 16, 1).half(),
                 "tabular": torch.randn(2, 2), "label": torch.tensor([0, 1])}
        batch = {k: v.to(device) for k, v in batch.items()}
        opt = torch.optim.AdamW(model.parameters())
        cfg, dist = Train(batch_size=2, precision="bf16"), Dist(0, 0, 1, device)
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        counts = {}
        for n in (1, 1, 3):  # the first epoch initialises lazily
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    train_one_epoch(model, [batch] * n, opt, scaler, step=0, total_steps=10, cfg=cfg, dist=dist,
                                    loss_weights=None, steps_per_epoch=n)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
            counts[n] = sum("synchroniz" in str(w.message) for w in caught)
        return {"syncs_1_step": counts[1], "syncs_3_steps": counts[3], "per_step": counts[3] != counts[1]}

    suite.run("sync", {"target": "m2m-tiny"}, measure)


def loader_section(suite: Suite, args: argparse.Namespace) -> None:
    import numpy as np

    from m2m_bids.config import Train
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import EntryMeta
    from m2m_bids.training.data import EpochSampler, WindowDataset, as_batch, make_records
    from m2m_bids.training.distributed import Dist
    from m2m_bids.training.loop import train_one_epoch
    from m2m_bids.training.resident import ResidentBatches

    grid, frames, dist = args.grid, args.frames[0], Dist(0, 0, 1, torch.device(args.device))
    batch = 16 if args.device == "cuda" else 2
    with tempfile.TemporaryDirectory() as tmp:
        cache, rng, entries = TensorCache(Path(tmp)), np.random.default_rng(0), []
        for i in range(6):  # 6 runs of 200 frames: 2.1 GB at 96^3, resident on any 80 GB card
            fmri = rng.standard_normal((grid, grid, grid, 200), dtype=np.float32).astype(np.float16)
            smri = rng.standard_normal((grid,) * 3, dtype=np.float32).astype(np.float16)
            entries.append(cache.put(f"{i + 1:064x}", {"fmri": fmri, "smri": smri}, EntryMeta(participant=f"{i:02d}")))
        tab = {f"{i:02d}": np.zeros(4, np.float32) for i in range(len(entries))}
        records = make_records(entries, {p: int(p) % 2 for p in tab}, tab)
        ds = WindowDataset(records, frames=frames, modalities=("fmri", "smri", "tabular"), train=True,
                           samples_per_run=batch * 4 if args.device == "cuda" else 1)
        sampler = EpochSampler(len(ds), seed=0)
        cfg = Train(batch_size=batch, precision="bf16", num_workers=8)
        model = create_model("m2m", num_classes=2, img_size=grid, frames=frames, n_tabular=4,
                             preset="paper").to(dist.device)
        opt = torch.optim.AdamW(model.parameters())
        scaler = torch.amp.GradScaler(dist.device.type, enabled=False)
        first = ds.__getitems__(list(range(batch)))
        synthetic = [{k: v.to(dist.device) for k, v in first.items()}] * (len(ds) // batch)
        sources = {
            "synthetic in-memory": lambda: synthetic,
            "streamed (8 workers, pinned)": lambda: torch.utils.data.DataLoader(
                ds, batch_size=batch, sampler=sampler, num_workers=8, collate_fn=as_batch,
                pin_memory=dist.device.type == "cuda",
                persistent_workers=True, prefetch_factor=4, drop_last=True),
            "resident on the device": lambda: ResidentBatches(ds, sampler, batch, dist.device, drop_last=True),
        }
        for name, make in sources.items():
            def measure(make=make) -> dict[str, Any]:
                loader = make()
                train_one_epoch(model, loader, opt, scaler, step=0, total_steps=100, cfg=cfg, dist=dist,
                                loss_weights=None, steps_per_epoch=len(loader))  # warm-up epoch
                if dist.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                stats, _ = train_one_epoch(model, loader, opt, scaler, step=0, total_steps=100, cfg=cfg, dist=dist,
                                           loss_weights=None, steps_per_epoch=len(loader))
                return {"samples_per_s": round(stats["samples_per_s"], 2), "peak_gib": _peak_gib(args.device)}

            suite.run("loader", {"data": name, "target": "m2m-short", "batch": batch, "precision": "bf16"}, measure,
                      need_s=60.0)


def script_section(suite: Suite, section: str, argv: list[str], timeout: float) -> None:
    def measure() -> dict[str, Any]:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=max(10.0, min(timeout, suite.left())), cwd=HERE.parent)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        return {"rc": proc.returncode, "seconds": round(time.perf_counter() - started, 1), "output_tail": tail}

    suite.run(section, {"script": " ".join(argv)}, measure, need_s=30.0)


def guarded(suite: Suite, section: str, fn: Callable[[], None]) -> None:
    """Run a section that needs more than torch; record it as skipped where an import is missing."""
    try:
        fn()
    except ImportError as err:
        suite.record(section, {"status": f"skipped (needs {err.name}: not installed here)"})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_suite.py needs a CUDA device (--device cpu only smoke-tests the script)", file=sys.stderr)
        return 2
    torch.set_float32_matmul_precision("high")  # TF32, as training enables it
    suite = Suite(args.out, args.budget)
    suite.record("env", {"status": "ok", "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                         "torch": torch.__version__, "cuda": torch.version.cuda, "grid": args.grid,
                         "frames": args.frames})
    only = set(args.only)
    train = "train" in only
    middle = sorted(args.batches)[len(args.batches) // 2]
    try:  # most wanted first: the budget cuts the tail
        if "attention" in only:
            attention_section(suite, args)
        ref = swift_reference(suite, args) if train else None
        if train:
            train_rows(suite, args, ref, precision="bf16", compiled=False, batches=args.batches)
        if "sync" in only:
            guarded(suite, "sync", lambda: sync_section(suite, args))
        if "tests" in only:
            script_section(suite, "tests", ["-m", "pytest", "-p", "no:cacheprovider", "-q",
                                            "tests/training/test_dataflow.py", "-k", "cuda or gpu"], 120.0)
        if "loader" in only:
            guarded(suite, "loader", lambda: loader_section(suite, args))
        if train:
            train_rows(suite, args, ref, precision="bf16", compiled=True, batches=[middle])
            train_rows(suite, args, ref, precision="fp32", compiled=False, batches=args.batches)
            fit_check(suite, args)
        if "apply" in only:
            script_section(suite, "apply", ["benchmarks/apply.py", "--device", args.device], 120.0)
        if "explain" in only:
            script_section(suite, "explain", ["benchmarks/explain_truth.py", "--device", args.device], 180.0)
        if train:
            rest = [b for b in args.batches if b != middle]
            train_rows(suite, args, ref, precision="bf16", compiled=True, batches=rest)
            train_rows(suite, args, ref, precision="fp32", compiled=True, batches=args.batches)
    finally:
        suite.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
