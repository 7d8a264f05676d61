"""Parameters and forward FLOPs per model (torch.utils.flop_counter on the meta device, batch 1).

Compares with the paper's Table IV. FLOPs are reported two ways: ``linear`` = 2 x multiply-adds of
the nn.Linear layers (the convention that reproduces Table IV) and ``all`` = also the attention
matmuls. Counting a 96^3 x 128 forward takes about a second because nothing is allocated.

Examples:
    python benchmarks/flops.py                       # paper input: 96^3 (2 mm), patch 6, 128 frames
    python benchmarks/flops.py --img 64 --patch-size 4 --frames 20 --preset default
"""

from __future__ import annotations

import argparse

from m2m_bids.models.flops import count_flops

TABLE_IV = {"m2m": (1.24e6, 34.55e9), "swift-lf": (1.12e6, 32.86e9), "swift-ef": (0.52e6, 1.11e9)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["m2m", "swift-lf", "swift-ef", "swift"])
    p.add_argument("--img", type=int, default=96)
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--patch-size", type=int, default=6)
    p.add_argument("--preset", default="paper")
    p.add_argument("--n-tabular", type=int, default=0, help="tabular columns (0: fMRI + sMRI only)")
    p.add_argument("--num-classes", type=int, default=2)
    args = p.parse_args(argv)
    print(f"# input {args.img}^3 x {args.frames} frames, patch {args.patch_size}, preset {args.preset}, "
          f"tabular {args.n_tabular}; FLOPs per sample (batch 1), 2 FLOPs per multiply-add")
    print("| model | params | GFLOPs (2x Linear MACs) | GFLOPs (all matmuls) | paper params | paper GFLOPs "
          "| params dev | FLOPs dev |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs:
        r = count_flops(arch, num_classes=args.num_classes, img_size=(args.img,) * 3, frames=args.frames,
                        n_tabular=args.n_tabular, preset=args.preset, patch_size=args.patch_size)
        ref = TABLE_IV.get(arch)
        dev = (f"{100 * (r['params'] / ref[0] - 1):+.1f}% | {100 * (r['flops_linear'] / ref[1] - 1):+.1f}%"
               if ref else "- | -")
        paper = f"{ref[0] / 1e6:.2f} M | {ref[1] / 1e9:.2f}" if ref else "- | -"
        print(f"| {arch} | {r['params'] / 1e6:.3f} M | {r['flops_linear'] / 1e9:.2f} | "
              f"{r['flops_total'] / 1e9:.2f} | {paper} | {dev} |")


if __name__ == "__main__":
    main()
