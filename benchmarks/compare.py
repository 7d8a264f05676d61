"""Compare ``--arch`` choices on one dataset: same preprocessing, same folds, same metrics.

Generates a synthetic BIDS dataset with planted AD effects (``m2m_bids.synth``) — or takes an
existing one with ``--bids`` (e.g. ../shared/data/bids-real, for robustness) — preprocesses it
once through the real participant level (the tensor cache is shared), then runs the real group level
(``m2m BIDS OUT group --arch X``) once per arch with the same seed, so every arch is tested on exactly
the same participants per fold. Writes ``compare.tsv``, ``compare.md`` (a markdown table for the
docs) and ``compare.svg`` (ROC-AUC per fold and mean ± sd per arch).

    python benchmarks/compare.py /tmp/compare --n-participants 16 --folds 4 --epochs 10 \\
        --archs m2m swift cnn-lstm cnn-gru cnn3d lstm3d gru3d connectome-logreg
    python benchmarks/compare.py /tmp/compare-real --bids ../shared/data/bids-real --folds 2 \\
        --participant-label 01 02 03 04 10 --extra-config benchmarks/compare-bids-real.toml

Training time is the wall time of the group level (cache verification, CV folds, final model,
metrics figures; group explanations and report are switched off), on the ``--device`` given.

``--train-seeds 0 1 2`` repeats every arch's group level with those ``--random-seed`` values on the
same data (the dataset is generated with ``--seed``): each seed draws other folds and initial weights,
so the spread over seeds is what a result would move by when rerun. With several seeds a row's
``mean ± sd`` is over the seeds' cross-validated means; with one it is over that seed's folds.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_ARCHS = ("m2m", "swift", "cnn-lstm", "cnn-gru", "cnn3d", "lstm3d", "gru3d", "masan", "siamese",
                 "connectome-logreg", "connectome-svc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    p.add_argument("--n-participants", type=int, default=16)
    p.add_argument("--synth-preset", default="tiny", help="SynthSpec preset: tiny, small, realistic")
    p.add_argument("--app-preset", default="tiny", help="m2m --preset (grid, model size, epochs)")
    p.add_argument("--effect-size", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seeds", type=int, nargs="+", default=None,
                   help="--random-seed of the group runs (folds, weights); default: --seed")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="--omp-nthreads of every m2m run (1 keeps CPU runs fast on a busy machine)")
    p.add_argument("--pet", action="store_true", help="the synthetic dataset also has FDG PET (siamese reads it)")
    p.add_argument("--bids", type=Path, default=None,
                   help="an existing BIDS dataset instead of a synthetic one (--n-participants etc. ignored)")
    p.add_argument("--participant-label", nargs="+", default=None,
                   help="only these participants (e.g. the ones whose runs pass preprocessing)")
    p.add_argument("--extra-config", type=Path, default=None,
                   help="TOML appended to the run's config file (preproc/train options for this dataset)")
    return p.parse_args(argv)


def run_m2m(argv: list[str]) -> None:
    """The real command line in-process; a non-zero exit stops the comparison."""
    from m2m_bids.cli.app import main as m2m_main

    try:
        m2m_main(argv)
    except SystemExit as done:
        if done.code:
            raise SystemExit(f"m2m {' '.join(argv)} exited with {done.code}") from None


def prepare(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """Synthetic dataset + one participant-level run; returns the BIDS dir and the shared CLI options."""
    from m2m_bids.synth import SynthSpec, generate_dataset

    bids = args.bids.resolve() if args.bids else args.out_dir / "bids"
    if args.bids is None and not (bids / "dataset_description.json").is_file():
        spec = SynthSpec.preset(args.synth_preset, n_participants=args.n_participants, classes=("CN", "AD"),
                                seed=args.seed, effect_size=args.effect_size, pet=args.pet)
        generate_dataset(bids, spec)
    config = args.out_dir / "compare-config.toml"  # time training, not the group explanations/report
    extra = args.extra_config.read_text(encoding="utf-8") if args.extra_config else ""
    config.write_text("[interpret]\nreports = false\n" + extra, encoding="utf-8")
    common = ["--config-file", str(config), "--preset", args.app_preset, "--classes", "CN,AD",
              "--cache-dir", str(args.out_dir / "cache"), "--work-dir", str(args.out_dir / "work"),
              "--device", args.device]
    if args.threads:
        common += ["--omp-nthreads", str(args.threads)]
    if args.participant_label:
        common += ["--participant-label", *args.participant_label]
    run_m2m([str(bids), str(args.out_dir / "preprocessed"), "participant", *common, "--random-seed", str(args.seed)])
    return bids, common


def params_of(out: Path, arch: str) -> int | None:
    """Trainable parameters of the final model (coefficients + intercepts for the classical one)."""
    bundle = out / "models" / f"model-{arch}"
    if (bundle / "model-card.json").is_file():
        return int(json.loads((bundle / "model-card.json").read_text())["model"]["params"])
    if (bundle / "classical-model.json").is_file():
        model = json.loads((bundle / "classical-model.json").read_text())["model"]
        return sum(len(row) for row in model["coef"]) + len(model["intercept"])
    return None


def run_seed(args: argparse.Namespace, bids: Path, common: list[str], arch: str, seed: int) -> dict[str, Any]:
    """One group-level run of ``arch`` with ``--random-seed seed``; its metrics and wall time.

    A finished run (``runs/<name>-seconds.txt`` beside its BIDS-Derivatives folder) is read back,
    not retrained, so an interrupted comparison resumes where it stopped. The run of the data seed is
    ``runs/<arch>``, others ``runs/<arch>-seed<k>``.
    """
    name = arch if seed == args.seed else f"{arch}-seed{seed}"
    out = args.out_dir / "runs" / name
    timing = args.out_dir / "runs" / f"{name}-seconds.txt"
    if not timing.is_file():
        started = time.perf_counter()
        run_m2m([str(bids), str(out), "group", *common, "--random-seed", str(seed), "--arch", arch,
                 "--folds", str(args.folds), "--epochs", str(args.epochs)])
        timing.write_text(f"{time.perf_counter() - started:.1f}\n", encoding="utf-8")
    metrics = json.loads((out / "group" / "metrics.json").read_text())
    return {"out": out, "seconds": float(timing.read_text(encoding="utf-8")), "metrics": metrics}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(np.mean(arr)), float(np.std(arr, ddof=1)) if len(arr) > 1 else float("nan")


def train_one(args: argparse.Namespace, bids: Path, common: list[str], arch: str) -> dict[str, Any]:
    """Every ``--train-seeds`` run of ``arch``; returns its row of the comparison table."""
    seeds = args.train_seeds or [args.seed]
    runs = [run_seed(args, bids, common, arch, seed) for seed in seeds]
    row: dict[str, Any] = {"arch": arch, "params": params_of(runs[0]["out"], arch), "seeds": len(seeds),
                           "train_seconds": round(sum(r["seconds"] for r in runs) / len(runs), 1)}
    for name in ("roc_auc", "pr_auc", "accuracy"):
        if len(runs) == 1:
            summary = runs[0]["metrics"]["summary"][name]
            row[f"{name}_mean"], row[f"{name}_sd"] = summary["mean"], summary["sd"]
        else:
            row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd([r["metrics"]["summary"][name]["mean"] for r in runs])
    card = runs[0]["out"] / "models" / f"model-{arch}" / "model-card.json"
    if card.is_file() and json.loads(card.read_text())["model"]["config"].get("alignment") and arch == "m2m":
        train = json.loads(card.read_text())["train"]
        row["alignment"] = f"lambda {train['align_weight']:g}, ramp {train.get('align_ramp', 0):g} of the epochs"
    row["roc_auc_seed_means"] = [r["metrics"]["summary"]["roc_auc"]["mean"] for r in runs]
    row["roc_auc_folds"] = [r["metrics"]["per_fold"][k]["roc_auc"]
                            for r in runs for k in sorted(r["metrics"]["per_fold"])]
    return row


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None and not math.isnan(sd) else f"{mean:.3f}"


def _seed_cells(row: dict[str, Any]) -> str:
    return f" {row['seeds']} | {' '.join(f'{v:.2f}' for v in row['roc_auc_seed_means'])} |"


def write_table(rows: list[dict[str, Any]], out_dir: Path, header: str) -> Path:
    """``compare.tsv`` (numbers) and ``compare.md`` (the docs table)."""
    import pandas as pd

    table = pd.DataFrame(rows)
    table.assign(roc_auc_seed_means=[" ".join(f"{v:.4f}" for v in r["roc_auc_seed_means"]) for r in rows]).drop(
        columns=["roc_auc_folds"]).to_csv(out_dir / "compare.tsv", sep="\t", index=False,
                                                  float_format="%.4f", na_rep="n/a")
    several = any(r["seeds"] > 1 for r in rows)
    seed_col = " seeds | ROC-AUC per seed |" if several else ""
    lines = [header, "", f"| arch | ROC-AUC | PR-AUC | accuracy | params | training time (s) |{seed_col}",
             "|---|---|---|---|---|---|" + ("---|---|" if several else "")]
    for r in rows:
        params = f"{r['params']:,}" if r["params"] is not None else "n/a"
        lines.append(f"| `{r['arch']}` | {_pm(r['roc_auc_mean'], r['roc_auc_sd'])} | "
                     f"{_pm(r['pr_auc_mean'], r['pr_auc_sd'])} | {_pm(r['accuracy_mean'], r['accuracy_sd'])} | "
                     f"{params} | {r['train_seconds']:.0f} |" + (_seed_cells(r) if several else ""))
    lines += [f"\n`{r['arch']}` alignment schedule (model card): {r['alignment']}." for r in rows if r.get("alignment")]
    path = out_dir / "compare.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_figure(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """ROC-AUC per arch: mean ± sd bar, one dot per fold, the chance line."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.0 + 0.9 * len(rows), 4))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    means = [r["roc_auc_mean"] for r in rows]
    sds = [0.0 if r["roc_auc_sd"] is None or math.isnan(r["roc_auc_sd"]) else r["roc_auc_sd"] for r in rows]
    ax.bar(x, means, yerr=sds, color="#9ecae1", edgecolor="#3182bd", capsize=3)
    for i, r in enumerate(rows):
        folds = [v for v in r["roc_auc_folds"] if v is not None]
        ax.scatter(np.full(len(folds), i) + np.linspace(-0.15, 0.15, len(folds)), folds, s=10, color="#08519c")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [r["arch"] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("ROC-AUC (test folds)")
    fig.tight_layout()
    path = out_dir / "compare.svg"
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    bids, common = prepare(args)
    rows = [train_one(args, bids, common, arch) for arch in args.archs]
    data = (f"dataset {args.bids}" if args.bids else
            f"{args.n_participants} synthetic participants (CN/AD, `{args.synth_preset}` data"
            f"{' with FDG PET' if args.pet else ''}, effect size {args.effect_size})")
    seeds = args.train_seeds or [args.seed]
    spread = ("mean ± sd over the seeds' cross-validated means" if len(seeds) > 1 else "mean ± sd over the folds")
    header = (f"{data}, `--preset {args.app_preset}`, {args.folds} folds, {args.epochs} epochs, data seed "
              f"{args.seed}, training seeds {' '.join(map(str, seeds))} ({spread}), device {args.device} "
              f"({platform.processor() or platform.machine()}); training time is the mean per seed; "
              f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    md = write_table(rows, args.out_dir, header)
    svg = write_figure(rows, args.out_dir)
    sys.stdout.write(md.read_text(encoding="utf-8") + f"\nfigure: {svg}\n")


if __name__ == "__main__":
    main()
