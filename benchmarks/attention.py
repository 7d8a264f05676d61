"""Window-attention kernels of the 4D Swin encoder: SDPA backends vs explicit batched matmul.

For every stage of a model configuration, times forward + backward of the attention of one
(shifted, i.e. masked) block on the real window shapes -- ``(batch*heads, windows, tokens,
head_dim)`` with the ``(1, windows, tokens, tokens)`` additive mask -- with each kernel that accepts
it, and prints which is fastest. ``auto`` is what the encoder itself picks
(:func:`m2m_bids.models.swin4d.attention_kernel`). Needs torch only.

    python benchmarks/attention.py --device cpu --grid 48 --frames 8 --batch-size 1
    python benchmarks/attention.py --device cuda --grid 96 --frames 20 --batch-size 16 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from m2m_bids.models.config import build_config, stage_grids
from m2m_bids.models.swin4d import attention_kernel, clamp_window, matmul_attention, shift_mask

#: ``sdpa`` alone lets torch pick among all of these.
BACKENDS = {"sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa-flash": SDPBackend.FLASH_ATTENTION,
            "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa-math": SDPBackend.MATH}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="default", help="models preset (default, paper, tiny, swift4)")
    p.add_argument("--grid", type=int, default=96)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def stage_shapes(args: argparse.Namespace) -> list[dict]:
    """(batch*heads, windows, tokens, head_dim) and the shift mask of each stage's shifted block."""
    overrides = {"img_size": (args.grid,) * 3, "frames": args.frames}
    if args.preset != "default":
        overrides["preset"] = args.preset
    cfg = build_config("m2m", overrides)
    shapes, dim = [], cfg.embed_dim
    for i, grid in enumerate(stage_grids(cfg)):
        window = cfg.first_window_size if i == 0 else cfg.window_size
        grid4 = (*grid, args.frames)
        win, shift = clamp_window(grid4, window, tuple(w // 2 for w in window))
        padded = tuple(math.ceil(g / w) * w for g, w in zip(grid4, win))
        heads = cfg.num_heads[i]
        tokens = math.prod(win)
        shapes.append({"stage": i + 1, "windows": math.prod(p // w for p, w in zip(padded, win)), "tokens": tokens,
                       "heads": heads, "head_dim": dim // heads, "mask": shift_mask(padded, win, shift)})
        dim *= cfg.c_multiplier if i < cfg.num_stages - 1 else 1
    return shapes


def time_kernel(kernel: str, shape: dict, args: argparse.Namespace, dtype: torch.dtype) -> float | str:
    """Median seconds of forward + backward, or the reason the kernel refused the input."""
    device = torch.device(args.device)
    q, k, v = (torch.randn(args.batch_size * shape["heads"], shape["windows"], shape["tokens"], shape["head_dim"],
                           device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = None if shape["mask"] is None else shape["mask"].to(device, dtype).unsqueeze(0)

    def step() -> None:
        if kernel == "matmul":
            out = matmul_attention(q, k, v, mask, 0.0)
        else:
            backends = [BACKENDS[kernel]] if kernel in BACKENDS else list(BACKENDS.values())
            with sdpa_kernel(backends):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.sum().backward()

    try:
        step()
    except RuntimeError as err:
        return str(err).splitlines()[0][:100]
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    kernels = ["matmul", "sdpa"] if args.device == "cpu" else ["matmul", "sdpa", *BACKENDS]
    results = []
    for shape in stage_shapes(args):
        row = {k: v for k, v in shape.items() if k != "mask"}
        row.update(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                   auto=attention_kernel(shape["tokens"], args.device))
        row["seconds"] = {kernel: time_kernel(kernel, shape, args, dtype) for kernel in kernels}
        timed = {k: s for k, s in row["seconds"].items() if isinstance(s, float)}
        row["fastest"] = min(timed, key=timed.get) if timed else None
        results.append(row)
        cells = "  ".join(f"{k} {s * 1000:8.2f} ms" if isinstance(s, float) else f"{k} n/a"
                          for k, s in row["seconds"].items())
        print(f"stage {row['stage']}: {row['windows']} windows x {row['tokens']} tokens, head dim {row['head_dim']}, "
              f"{row['heads']} heads: {cells}  fastest {row['fastest']}  auto {row['auto']}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
