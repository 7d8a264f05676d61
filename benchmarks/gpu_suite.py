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
3. ``sync``: CUDA syncs of the project's ``train_one_epoch`` (1 vs 3 steps, sync debug mode).
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

GRID = 96
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
        except torch.OutOfMemoryError:
            self.record(section, {**name, "status": "oom"})
        except Exception as err:  # one failing row must not end the suite
            self.record(section, {**name, "status": "error", "error": f"{type(err).__name__}: {err}"[:300]})
        finally:
            gc.collect()
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


def build(target: str, batch: int, dtype: torch.dtype, checkpointing: bool | None,
          swift_ref: Callable[[], nn.Module] | None) -> tuple[nn.Module, dict[str, torch.Tensor], bool]:
    """(model, one batch of inputs on the GPU in the compute dtype, checkpointing used)."""
    if target in ("encoder", "swift-ref"):
        frames = 20
        if target == "encoder":
            ckpt = bool(checkpointing)
            cfg = build_config("swift", {"preset": "swift4", "patch_size": 6, "embed_dim": 24, "frames": frames,
                                         "img_size": (GRID,) * 3, "modalities": ("fmri",), "grad_checkpointing": ckpt})
            encoder = SwinEncoder4D(cfg)
            model: nn.Module = Classifier(encoder, encoder.out_dim)
        else:
            ckpt = False
            ref = swift_ref()  # type: ignore[misc]
            model = Classifier(ref, ref.num_features if hasattr(ref, "num_features") else 192)
        inputs = {"fmri": torch.randn(batch, 1, GRID, GRID, GRID, frames, device="cuda", dtype=dtype)}
        return model.cuda(), inputs, ckpt
    frames = int(target.split("-")[1])
    overrides = {"preset": "paper"}
    if checkpointing is not None:
        overrides["grad_checkpointing"] = checkpointing
    model = create_model("m2m", num_classes=2, img_size=GRID, frames=frames, n_tabular=4, **overrides).cuda()
    inputs = {"fmri": torch.randn(batch, 1, GRID, GRID, GRID, frames, device="cuda", dtype=dtype),
              "smri": torch.randn(batch, 1, GRID, GRID, GRID, 1, device="cuda", dtype=dtype),
              "tabular": torch.randn(batch, 4, device="cuda", dtype=dtype)}
    return model, inputs, bool(model.config.grad_checkpointing)


def time_training(target: str, batch: int, precision: str, compiled: bool, steps: int,
                  checkpointing: bool | None = None, swift_ref: Callable[[], nn.Module] | None = None) -> dict:
    """Samples/s and peak memory of full training steps (forward, CE (+ alignment), backward, AdamW)."""
    amp = {"bf16": torch.bfloat16, "fp32": None}[precision]
    torch.manual_seed(0)
    model, inputs, ckpt = build(target, batch, amp or torch.float32, checkpointing, swift_ref)
    model.train()
    run = torch.compile(model, dynamic=False) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    labels = torch.zeros(batch, dtype=torch.long, device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            out = run(**inputs)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = F.cross_entropy(logits.float(), labels)
            if not isinstance(out, torch.Tensor) and out.align_loss is not None:
                loss = loss + 0.1 * out.align_loss.float()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"samples_per_s": round(batch * steps / seconds, 2), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "warmup_s": round(warm, 1), "checkpointing": ckpt}


def swift_ref_factory(folder: Path, kwargs: dict[str, Any]) -> Callable[[], nn.Module]:
    """A constructor of the SwiFT reference ``SwinTransformer4D`` from a checkout of its repository."""
    sys.path.insert(0, str(folder))
    module = importlib.import_module("project.module.models.swin4d_transformer_ver7")
    return lambda: module.SwinTransformer4D(**kwargs)


# -- sections --------------------------------------------------------------------------------------
def attention_section(suite: Suite) -> None:
    spec = importlib.util.spec_from_file_location("attention_bench", HERE / "attention.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    for precision in ("bf16", "fp32"):
        args = bench.parse_args(["--device", "cuda", "--preset", "paper", "--grid", str(GRID), "--frames", "20",
                                 "--batch-size", "16", "--dtype", precision])
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        for shape in bench.stage_shapes(args):
            name = {"stage": shape["stage"], "precision": precision, "tokens": shape["tokens"],
                    "head_dim": shape["head_dim"], "windows": shape["windows"]}

            def measure(shape=shape) -> dict[str, Any]:
                seconds = {k: bench.time_kernel(k, shape, args, dtype) for k in ["matmul", "sdpa", *bench.BACKENDS]}
                timed = {k: s for k, s in seconds.items() if isinstance(s, float)}
                return {"ms": {k: round(s * 1000, 3) if isinstance(s, float) else s for k, s in seconds.items()},
                        "fastest": min(timed, key=timed.get) if timed else None,
                        "auto": bench.attention_kernel(shape["tokens"], "cuda")}

            suite.run("attention", name, measure)


def train_section(suite: Suite, args: argparse.Namespace) -> None:
    ref = None
    if args.swift_ref is not None:
        try:
            ref = swift_ref_factory(args.swift_ref, args.swift_ref_kwargs)
        except Exception as err:
            suite.record("train", {"target": "swift-ref", "status": "error", "error": f"import: {err}"[:300]})
    targets = ["encoder", "m2m-20", "m2m-128"] + (["swift-ref"] if ref else [])
    for precision in ("bf16", "fp32"):
        for target in targets:
            for batch in args.batches:
                suite.run("train", {"target": target, "batch": batch, "precision": precision, "compile": False},
                          lambda t=target, b=batch, p=precision: time_training(t, b, p, False, args.steps, swift_ref=ref))
    suite.run("train", {"target": "m2m-128", "batch": 32, "precision": "bf16", "compile": False,
                        "note": "checkpointing off (fit check)"},
              lambda: time_training("m2m-128", 32, "bf16", False, args.steps, checkpointing=False))
    for precision in ("bf16", "fp32"):
        for batch in (16, *[b for b in args.batches if b != 16]):
            for target in targets:
                torch._dynamo.reset()
                suite.run("train", {"target": target, "batch": batch, "precision": precision, "compile": True},
                          lambda t=target, b=batch, p=precision: time_training(t, b, p, True, args.steps, swift_ref=ref),
                          need_s=90.0)


def sync_section(suite: Suite) -> None:
    from m2m_bids.config import Train
    from m2m_bids.training.distributed import Dist
    from m2m_bids.training.loop import train_one_epoch

    def measure() -> dict[str, Any]:
        import warnings

        model = create_model("m2m", num_classes=2, img_size=16, frames=4, n_tabular=2, preset="tiny").cuda()
        batch = {"fmri": torch.randn(2, 1, 4, 16, 16, 16).half(), "smri": torch.randn(2, 1, 16, 16, 16, 1).half(),
                 "tabular": torch.randn(2, 2), "label": torch.tensor([0, 1])}
        batch = {k: v.cuda() for k, v in batch.items()}
        opt = torch.optim.AdamW(model.parameters())
        cfg, dist = Train(batch_size=2, precision="bf16"), Dist(0, 0, 1, torch.device("cuda"))
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        counts = {}
        for n in (1, 1, 3):  # the first epoch initialises lazily
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    train_one_epoch(model, [batch] * n, opt, scaler, step=0, total_steps=10, cfg=cfg, dist=dist,
                                    loss_weights=None, steps_per_epoch=n)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            counts[n] = sum("synchroniz" in str(w.message) for w in caught)
        return {"syncs_1_step": counts[1], "syncs_3_steps": counts[3], "per_step": counts[3] != counts[1]}

    suite.run("sync", {"target": "m2m-tiny"}, measure)


def loader_section(suite: Suite, args: argparse.Namespace) -> None:
    import numpy as np

    from m2m_bids.config import Train
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.training.data import EpochSampler, WindowDataset, as_batch, make_records
    from m2m_bids.training.distributed import Dist
    from m2m_bids.training.loop import train_one_epoch
    from m2m_bids.training.resident import ResidentBatches

    batch, frames, dist = 16, 20, Dist(0, 0, 1, torch.device("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        cache, rng, entries = TensorCache(Path(tmp)), np.random.default_rng(0), []
        for i in range(8):
            fmri = rng.standard_normal((GRID, GRID, GRID, 300), dtype=np.float32).astype(np.float16)
            smri = rng.standard_normal((GRID,) * 3, dtype=np.float32).astype(np.float16)
            entries.append(cache.put(f"{i + 1:064x}", {"fmri": fmri, "smri": smri}, {"participant": f"{i:02d}"}))
        tab = {f"{i:02d}": np.zeros(4, np.float32) for i in range(8)}
        records = make_records(entries, {p: int(p) % 2 for p in tab}, tab)
        ds = WindowDataset(records, frames=frames, modalities=("fmri", "smri", "tabular"), train=True,
                           samples_per_run=batch * 4)
        sampler = EpochSampler(len(ds), seed=0)
        cfg = Train(batch_size=batch, precision="bf16", num_workers=8)
        model = create_model("m2m", num_classes=2, img_size=GRID, frames=frames, n_tabular=4, preset="paper").cuda()
        opt = torch.optim.AdamW(model.parameters(), fused=True)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        synthetic = [{k: v.cuda() for k, v in ds.__getitems__(list(range(batch))).items()}] * (len(ds) // batch)
        sources = {
            "synthetic in-memory": lambda: synthetic,
            "streamed (8 workers, pinned)": lambda: torch.utils.data.DataLoader(
                ds, batch_size=batch, sampler=sampler, num_workers=8, collate_fn=as_batch, pin_memory=True,
                persistent_workers=True, prefetch_factor=4, drop_last=True),
            "resident on the GPU": lambda: ResidentBatches(ds, sampler, batch, dist.device, drop_last=True),
        }
        for name, make in sources.items():
            def measure(make=make) -> dict[str, Any]:
                loader = make()
                train_one_epoch(model, loader, opt, scaler, step=0, total_steps=100, cfg=cfg, dist=dist,
                                loss_weights=None, steps_per_epoch=len(loader))  # warm-up epoch
                torch.cuda.reset_peak_memory_stats()
                stats, _ = train_one_epoch(model, loader, opt, scaler, step=0, total_steps=100, cfg=cfg, dist=dist,
                                           loss_weights=None, steps_per_epoch=len(loader))
                return {"samples_per_s": round(stats["samples_per_s"], 2),
                        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}

            suite.run("loader", {"data": name, "target": "m2m-20", "batch": batch, "precision": "bf16"}, measure,
                      need_s=60.0)


def script_section(suite: Suite, section: str, argv: list[str], timeout: float) -> None:
    def measure() -> dict[str, Any]:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=max(10.0, min(timeout, suite.left())), cwd=HERE.parent)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        return {"rc": proc.returncode, "seconds": round(time.perf_counter() - started, 1), "output_tail": tail}

    suite.run(section, {"script": argv[0]}, measure, need_s=30.0)


def guarded(suite: Suite, section: str, fn: Callable[[], None]) -> None:
    """Run a section that needs more than torch; record it as skipped where an import is missing."""
    try:
        fn()
    except ImportError as err:
        suite.record(section, {"status": f"skipped (needs {err.name}: not installed here)"})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_suite.py needs a CUDA device", file=sys.stderr)
        return 2
    torch.set_float32_matmul_precision("high")  # TF32, as training enables it
    suite = Suite(args.out, args.budget)
    suite.record("env", {"status": "ok", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                         "cuda": torch.version.cuda, "memory_gib": round(torch.cuda.mem_get_info()[1] / 2**30, 1)})
    try:
        attention_section(suite)
        train_section(suite, args)
        guarded(suite, "sync", lambda: sync_section(suite))
        guarded(suite, "loader", lambda: loader_section(suite, args))
        script_section(suite, "apply", ["benchmarks/apply.py", "--device", "cuda"], 120.0)
        script_section(suite, "explain", ["benchmarks/explain_truth.py", "--device", "cuda"], 180.0)
    finally:
        suite.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
