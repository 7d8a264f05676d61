"""Training-step throughput and peak memory of the SwiFT encoder and of M2M-AlignNet.

Runs on CUDA when available, else on the CPU (use a reduced ``--img``/``--frames`` there). One row
per (target, precision, compile) combination: samples/s over ``--steps`` timed steps after
``--warmup`` steps (forward + loss + backward + AdamW step), and peak memory (CUDA: max allocated;
CPU: peak resident set size of the process, which includes Python and the libraries).

Examples:
    python benchmarks/model.py                                  # GPU, paper sizes
    python benchmarks/model.py --device cpu --img 48 --frames 8 --m2m-frames 8 --batch 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from m2m_bids.models import create_model
from m2m_bids.models.config import build_config
from m2m_bids.models.flops import example_inputs
from m2m_bids.models.swin4d import SwinEncoder4D


class EncoderClassifier(nn.Module):
    """The SwiFT encoder alone with a GAP + Linear head (what SwiFT trains for classification)."""

    def __init__(self, encoder: SwinEncoder4D) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, 2)

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(fmri).mean(dim=(1, 2, 3, 4)))


def build(target: str, args: argparse.Namespace) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Model and one batch of random inputs for ``target`` ('encoder' or 'm2m')."""
    img = (args.img,) * 3
    if target == "encoder":
        cfg = build_config("swift", {"preset": args.encoder_preset, "embed_dim": args.embed_dim,
                                     "patch_size": args.patch_size, "img_size": img,
                                     "frames": args.frames, "modalities": ("fmri",),
                                     "grad_checkpointing": args.checkpointing})
        model: nn.Module = EncoderClassifier(SwinEncoder4D(cfg))
        inputs = {"fmri": torch.randn(args.batch, 1, *img, args.frames)}
    else:
        model = create_model("m2m", num_classes=2, img_size=img, frames=args.m2m_frames,
                             preset="paper", patch_size=args.patch_size,
                             grad_checkpointing=args.checkpointing, modalities=("fmri", "smri"))
        inputs = example_inputs(model, args.batch)
    return model, inputs


def train_step_fn(model: nn.Module, opt: torch.optim.Optimizer, target: str, dtype: torch.dtype | None,
                  device: torch.device):
    """A closure doing one optimisation step; compiled as a whole model when asked."""
    labels = None

    def step(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        nonlocal labels
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(**inputs)
            logits = out if target == "encoder" else out.logits
            if labels is None:
                labels = torch.zeros(logits.shape[0], dtype=torch.long, device=device)
            loss = F.cross_entropy(logits.float(), labels)
            if target != "encoder" and out.align_loss is not None:
                loss = loss + out.align_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_one(target: str, precision: str, compiled: bool, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model, inputs = build(target, args)
    model.to(device).train()
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if compiled:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = train_step_fn(model, opt, target, torch.bfloat16 if precision == "bf16" else None, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step(inputs)
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(inputs)
    _sync(device)
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    frames = args.frames if target == "encoder" else args.m2m_frames
    return {"target": target, "input": f"{args.img}^3x{frames}", "batch": args.batch,
            "precision": precision, "compile": compiled, "samples_per_s": args.batch * args.steps / elapsed,
            "peak_mem_gib": peak, "warmup_s": warm_s, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--targets", nargs="+", default=["encoder", "m2m"], choices=["encoder", "m2m"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--img", type=int, default=96, help="cubic spatial size in voxels")
    p.add_argument("--frames", type=int, default=20, help="frames for the encoder benchmark")
    p.add_argument("--m2m-frames", type=int, default=128, help="frames for the M2M benchmark (paper: 128)")
    p.add_argument("--patch-size", type=int, default=6)
    p.add_argument("--embed-dim", type=int, default=24)
    p.add_argument("--encoder-preset", default="swift4", help="swift4 (4 stages, SwiFT default) or default")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing per block")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| target | input | batch | precision | compile | samples/s | peak mem GiB | warm-up s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for target in args.targets:
        for precision in args.precisions:
            for comp in args.compile:
                r = run_one(target, precision, comp == "on", args, device)
                rows.append(r)
                print(f"| {r['target']} | {r['input']} | {r['batch']} | {r['precision']} | {comp} | "
                      f"{r['samples_per_s']:.2f} | {r['peak_mem_gib']:.2f} | {r['warmup_s']:.1f} |",
                      flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "name": name, "torch": torch.__version__, "rows": rows}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
