"""Do the explanations find planted atrophy at full size? Train, apply, compare top regions with truth.

Cache-like tensors on the model grid (default 64^3 at 3 mm, MNI) are generated with lower T1w
intensity inside named AAL regions for class "AD" (the planted atrophy) and noise fMRI; an
M2M-AlignNet is trained on them (cross-entropy + ``--align-weight`` x the M2M loss, set here, not
taken from the trainer's default schedule), applied to held-out participants through the real
``apply_model``, and the planted regions are looked up in each participant's top-k saliency,
class-discriminative attention (``gradrollout``) and raw co-attention tables. The tiny CPU version of
this check is tests/interpret/test_apply.py.

    python benchmarks/explain_truth.py --device cuda                       # full size, GPU
    python benchmarks/explain_truth.py --grid 32 --resolution 6 --steps 60 --preset tiny   # CPU smoke
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from m2m_bids.config import Preset, build_config


def grid_affine(grid: int, resolution: float) -> np.ndarray:
    affine = np.diag([resolution] * 3 + [1.0])
    affine[:3, 3] = [-resolution * grid / 2, -resolution * grid / 2 - 18, -resolution * grid / 2 + 18]
    return affine


def make_tensors(rng: np.random.Generator, planted: np.ndarray, label: int, frames: int, effect: float) -> dict:
    brain = ndimage.gaussian_filter(rng.normal(size=planted.shape), 1.0) * 2 + 1.0
    smri = brain + 0.3 * rng.normal(size=planted.shape) - effect * label * planted
    fmri = rng.normal(size=planted.shape + (frames,))
    return {"fmri": fmri.astype(np.float16), "smri": smri.astype(np.float16),
            "mask": np.ones(planted.shape, np.uint8)}


def build_entries(root: Path, labels: dict[str, int], planted: np.ndarray, args, preproc: dict, seed: int) -> list:
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance

    cache = TensorCache(root / "cache")
    rng = np.random.default_rng(seed)
    entries = []
    for p, y in labels.items():
        meta = EntryMeta(participant=p, bold=BoldRecord(task="rest", repetition_time=2.0),
                         geometry=Geometry(affine=grid_affine(args.grid, args.resolution).tolist(),
                                           grid_shape=(args.grid,) * 3, space="MNI152NLin2009cAsym",
                                           resolution_mm=args.resolution),
                         provenance=Provenance(preproc=preproc))
        key = TensorCache.make_key({"p": p, "seed": seed}, preproc)
        entries.append(cache.put(key, make_tensors(rng, planted, y, args.frames, args.effect), meta))
    return entries


def train(model: torch.nn.Module, entries: list, y: list[int], args, device: torch.device) -> float:
    fmri = torch.stack([torch.from_numpy(np.asarray(e.load("fmri"))[..., :args.window_frames].astype(np.float32))
                        for e in entries])[:, None]
    smri = torch.stack([torch.from_numpy(np.asarray(e.load("smri")).astype(np.float32)) for e in entries])[:, None, ..., None]
    target = torch.tensor(y)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(args.steps):
        idx = torch.randperm(len(target), generator=gen)[:args.batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(fmri=fmri[idx].to(device), smri=smri[idx].to(device))
        loss = torch.nn.functional.cross_entropy(out.logits.float(), target[idx].to(device))
        if out.align_loss is not None:
            loss = loss + args.align_weight * out.align_loss.float()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int(model(fmri=fmri[i:i + 1].to(device), smri=smri[i:i + 1].to(device)).logits.argmax()
                          == target[i]) for i in range(len(target)))
    return correct / len(target)


def write_bundle(model: torch.nn.Module, folder: Path, train_ids: list[str], preproc: dict) -> Path:
    from m2m_bids.models import model_info
    from m2m_bids.training.checkpoint import save_weights

    weights = save_weights(folder / "weights.safetensors", model.state_dict())
    card = {"arch": model.config.arch, "model": model_info(model), "classes": ["CN", "AD"],
            "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
            "preproc": preproc, "splits": {"final": {"train": train_ids, "val": []}}}
    (folder / "model-card.json").write_text(json.dumps(card))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--resolution", type=float, default=3.0)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--window-frames", type=int, default=20)
    parser.add_argument("--participants", type=int, default=48)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--effect", type=float, default=1.0)
    parser.add_argument("--align-weight", type=float, default=0.1, help="weight of the M2M loss (0: alignment off)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--overrides", default="", help='JSON model overrides, e.g. \'{"patch_size": 2}\'')
    parser.add_argument("--regions", default="Hippocampus_L,Hippocampus_R,Precuneus_L")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args), indent=2))


def run(args: argparse.Namespace) -> dict:
    import nibabel as nib

    from m2m_bids.atlases import load_atlas
    from m2m_bids.interpret.api import apply_model
    from m2m_bids.models import create_model

    device = torch.device(args.device)
    root = Path(tempfile.mkdtemp(prefix="m2m-truth-"))
    (root / "bids").mkdir()
    affine = grid_affine(args.grid, args.resolution)
    atlas = load_atlas("aal", nib.Nifti1Image(np.zeros((args.grid,) * 3, np.uint8), affine))
    regions = args.regions.split(",")
    planted = atlas.mask(regions).astype(np.float32)
    cfg = build_config({"execution": {"bids_dir": str(root / "bids"), "output_dir": str(root / "out"),
                                      "analysis_level": "participant", "device": args.device},
                        "preproc": {"grid_shape": [args.grid] * 3, "resolution_mm": args.resolution},
                        "model": {"window_frames": args.window_frames}}, preset=Preset.default)
    preproc = cfg.preproc.model_dump(mode="json")
    train_labels = {f"{i:03d}": i % 2 for i in range(args.participants)}
    test_labels = {f"t{i:02d}": 1 for i in range(args.test)}
    t0 = time.perf_counter()
    train_entries = build_entries(root, train_labels, planted, args, preproc, seed=0)
    torch.manual_seed(0)
    model = create_model("m2m", num_classes=2, img_size=(args.grid,) * 3, frames=args.window_frames,
                         modalities=("fmri", "smri"), preset=args.preset, alignment=args.align_weight > 0,
                         **(json.loads(args.overrides) if args.overrides else {})).to(device)
    accuracy = train(model, train_entries, list(train_labels.values()), args, device)
    t_train = time.perf_counter() - t0
    bundle = write_bundle(model.cpu(), root / "out" / "models" / "model-m2m", list(train_labels), preproc)
    test_entries = build_entries(root, test_labels, planted, args, preproc, seed=1)
    t1 = time.perf_counter()
    failures = apply_model(bundle, test_entries, cfg)
    t_apply = time.perf_counter() - t1
    stats = ("saliency", "gradrollout", "attention")
    hits: dict[str, list[int]] = {stat: [] for stat in stats}
    ranks: dict[str, list[dict[str, int]]] = {stat: [] for stat in stats}
    for p in test_labels:
        for stat in hits:
            path = next((root / "out" / f"sub-{p}" / "anat").glob(f"*atlas-aal*_stat-{stat}_desc-T1w_table.tsv"), None)
            if path is not None:
                table = pd.read_csv(path, sep="\t", na_values=["n/a"])
                hits[stat].append(len(set(table.query("top")["name"]) & set(regions)))
                found = table[table["name"].isin(regions)]
                ranks[stat].append({str(r["name"]): int(r["rank"]) for _, r in found.dropna(subset=["rank"]).iterrows()})
    return {"grid": args.grid, "steps": args.steps, "train_accuracy": accuracy, "planted": regions,
            "planted_voxels": int(planted.sum()), "train_s": round(t_train, 1), "apply_s": round(t_apply, 1),
            "failures": {k: v.message for k, v in failures.items()},
            "planted_regions_in_top5_per_participant": hits, "planted_region_ranks": ranks,
            "regions_in_atlas": int(len(atlas.labels)), "output": str(root / "out")}


if __name__ == "__main__":
    main()
