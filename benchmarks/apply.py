"""Time one participant's apply (load bundle, predict, maps, atlas tables, brain states, report).

Preprocessing is excluded: the participant's tensors are put in a real tensor cache first. The model
has random weights (speed does not depend on training). Default size is the paper's setting on our
grid: 64^3 at 3 mm, 20-frame windows over a 200-frame run (10 windows), default M2M-AlignNet.

    python benchmarks/apply.py --threads 2                      # CPU, 2 cores
    python benchmarks/apply.py --device cuda                    # GPU
    python benchmarks/apply.py --window-frames 128 --frames 256 # the paper preset's 128-frame windows
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m2m_bids.config import Preset, build_config


def _entry(root: Path, grid: int, frames: int, resolution: float, preproc: dict, seed: int = 0):
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance

    rng = np.random.default_rng(seed)
    affine = np.diag([resolution] * 3 + [1.0])
    affine[:3, 3] = -resolution * grid / 2
    tensors = {"fmri": rng.normal(size=(grid,) * 3 + (frames,)).astype(np.float16),
               "smri": rng.normal(size=(grid,) * 3).astype(np.float16),
               "mask": np.ones((grid,) * 3, np.uint8)}
    meta = EntryMeta(participant="bench", bold=BoldRecord(task="rest", repetition_time=2.0),
                     geometry=Geometry(affine=affine.tolist(), grid_shape=(grid,) * 3, space="MNI152NLin2009cAsym",
                                       resolution_mm=resolution),
                     provenance=Provenance(preproc=preproc))
    return TensorCache(root / "cache").put(TensorCache.make_key({"seed": seed, "grid": grid}, preproc), tensors, meta)


def _bundle(root: Path, args: argparse.Namespace, preproc: dict) -> Path:
    import hashlib

    from m2m_bids.model_inputs.atlas import build_model
    from m2m_bids.models import model_info
    from m2m_bids.training.checkpoint import save_weights

    overrides = json.loads(args.overrides) if args.overrides else {}
    model = build_model(args.arch, num_classes=2, img_size=(args.grid,) * 3, frames=args.window_frames,
                        modalities=("fmri", "smri"), **overrides)
    folder = root / "out" / "models" / f"model-{args.arch}"
    weights = save_weights(folder / "weights.safetensors", model.state_dict())
    card = {"arch": args.arch, "model": model_info(model), "classes": ["CN", "AD"],
            "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
            "preproc": preproc, "splits": {"final": {"train": [], "val": []}}}
    (folder / "model-card.json").write_text(json.dumps(card))
    return folder


def run(args: argparse.Namespace) -> dict:
    """Time the stages of :func:`m2m_bids.interpret.api.apply_model` for one participant."""
    from m2m_bids.interpret import api
    from m2m_bids.interpret.bundle import load_bundle

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="m2m-apply-bench-"))
    (root / "bids").mkdir()
    cfg = build_config({"execution": {"bids_dir": str(root / "bids"), "output_dir": str(root / "out"),
                                      "analysis_level": "participant", "device": args.device},
                        "preproc": {"grid_shape": [args.grid] * 3, "resolution_mm": args.resolution},
                        "model": {"window_frames": args.window_frames},
                        "interpret": {"atlas": args.atlas, "reports": not args.no_report}}, preset=Preset.default)
    preproc = cfg.preproc.model_dump(mode="json")
    entry = _entry(root, args.grid, args.frames, args.resolution, preproc)
    bundle_dir = _bundle(root, args, preproc)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*a, **kw)
        timings[f"{name}_wall_s"] = time.perf_counter() - wall
        timings[f"{name}_cpu_s"] = time.process_time() - cpu
        return result

    from m2m_bids.interpret.inference import score_run

    device = api.resolve_device(args.device)
    bundle = timed("load_bundle", load_bundle, bundle_dir, device)
    timed("predict_only", score_run, bundle.model, entry, saliency=False, device=device)
    timed("predict_plus_saliency", score_run, bundle.model, entry, saliency=True, device=device)
    failures = timed("apply_model_total", api.apply_model, bundle_dir, [entry], cfg)
    assert not failures, failures
    return {"arch": args.arch, "grid": args.grid, "frames": args.frames, "window_frames": args.window_frames,
            "windows": len(range(0, args.frames - args.window_frames + 1, args.window_frames)),
            "threads": args.threads, "device": args.device, "params": int(bundle.card["model"]["params"]),
            "note": "cpu_s = process CPU time (all threads); on a busy machine wall_s overstates",
            **{k: round(v, 2) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="m2m")
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--resolution", type=float, default=3.0)
    parser.add_argument("--frames", type=int, default=200, help="frames in the run")
    parser.add_argument("--window-frames", type=int, default=20)
    parser.add_argument("--overrides", default="", help='JSON model overrides, e.g. \'{"preset": "tiny"}\'')
    parser.add_argument("--atlas", default="aal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
