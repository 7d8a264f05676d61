"""Synthetic cache-like data with planted regional atrophy, a block atlas, and a tiny trained model.

Grid 16^3 at 6 mm (the ``tiny`` preset's grid). The atlas tiles the grid into 4x4x4 blocks of 4^3
voxels (64 regions). Class "AD" has lower T1w intensity in two planted blocks; fMRI is noise with
a slow drift. A model trained on this should look at the planted blocks; the tests check that the
explanations find them among the top 5 of 64 regions (chance: about 1 in 200 for both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

GRID = 16
BLOCK = 4
AFFINE = np.array([[6.0, 0, 0, -45.0], [0, 6.0, 0, -63.0], [0, 0, 6.0, -36.0], [0, 0, 0, 1]])
PLANTED = [(1, 2, 1), (2, 1, 2)]  # block coordinates of the atrophy


def block_index(i: int, j: int, k: int) -> int:
    return 1 + i * 16 + j * 4 + k


PLANTED_NAMES = [f"block_{i}{j}{k}" for i, j, k in PLANTED]


def block_atlas() -> tuple[np.ndarray, pd.DataFrame]:
    """Integer labels (16^3) and the look-up table (index, name)."""
    grid = np.zeros((GRID,) * 3, dtype=np.int16)
    names = []
    for i in range(4):
        for j in range(4):
            for k in range(4):
                idx = block_index(i, j, k)
                grid[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK, k * BLOCK:(k + 1) * BLOCK] = idx
                names.append({"index": idx, "name": f"block_{i}{j}{k}"})
    return grid, pd.DataFrame(names)


def write_bids_atlas(folder: Path) -> Path:
    """A user atlas in the BIDS atlas layout: ``..._dseg.nii.gz`` with ``..._dseg.tsv`` next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    grid, labels = block_atlas()
    dseg = folder / "atlas-Blocks_space-MNI152NLin2009aSym_res-6_dseg.nii.gz"
    nib.Nifti1Image(grid, AFFINE).to_filename(dseg)
    labels.to_csv(folder / "atlas-Blocks_space-MNI152NLin2009aSym_res-6_dseg.tsv", sep="\t", index=False)
    return dseg


def make_arrays(rng: np.random.Generator, label: int, frames: int, effect: float = 1.0) -> dict[str, np.ndarray]:
    """fmri (X,Y,Z,T), smri (X,Y,Z), mask (X,Y,Z) as float16/uint8, like the tensor cache stores them."""
    smri = 1.0 + 0.3 * rng.normal(size=(GRID,) * 3)
    for i, j, k in PLANTED:
        smri[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK, k * BLOCK:(k + 1) * BLOCK] -= effect * label
    drift = np.sin(np.linspace(0, 3, frames))
    fmri = rng.normal(size=(GRID,) * 3 + (frames,)) + drift
    return {"fmri": fmri.astype(np.float16), "smri": smri.astype(np.float16),
            "mask": np.ones((GRID,) * 3, dtype=np.uint8)}


def make_entries(cache_root: Path, labels: dict[str, int], frames: int, seed: int = 0,
                 preproc: dict[str, Any] | None = None) -> list[Any]:
    """One run per participant (``labels``: participant -> class index), stored in the real tensor cache."""
    from m2m_bids.preproc.cache import TensorCache
    from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance

    cache = TensorCache(cache_root)
    rng = np.random.default_rng(seed)
    entries = []
    for participant, label in labels.items():
        meta = EntryMeta(participant=participant, bold=BoldRecord(task="rest", repetition_time=2.0),
                         geometry=Geometry(affine=AFFINE.tolist(), grid_shape=(GRID,) * 3, space="MNI152NLin2009aSym",
                                           resolution_mm=float(AFFINE[0, 0])),
                         provenance=Provenance(preproc=dict(preproc or {})))
        key = TensorCache.make_key({"participant": participant, "seed": seed}, dict(preproc or {}))
        entries.append(cache.put(key, make_arrays(rng, label, frames), meta))
    return entries


def tiny_model(frames: int, modalities: tuple[str, ...] = ("fmri", "smri"), arch: str = "m2m") -> torch.nn.Module:
    """The ``tiny`` preset with two Swin blocks per stage (the second one shifted, with its mask) and
    the M2M alignment on: token grids 8^3 and 4^3, so every last-stage token is one atlas block."""
    from m2m_bids.models import create_model

    torch.manual_seed(0)
    return create_model(arch, num_classes=2, img_size=(GRID,) * 3, frames=frames, modalities=modalities,
                        preset="tiny", patch_size=2, depths=(2, 2), num_heads=(1, 2))


def train(model: torch.nn.Module, entries: list[Any], labels: list[int], steps: int, lr: float = 1e-3,
          align_weight: float = 0.1) -> float:
    """AdamW steps on whole runs (cross-entropy + ``align_weight`` x the M2M loss, set here rather than
    taken from the trainer's default schedule); returns the final training accuracy."""
    mods = model.config.modalities
    fmri = torch.stack([torch.from_numpy(e.load("fmri").astype(np.float32)) for e in entries])[:, None]
    smri = torch.stack([torch.from_numpy(e.load("smri").astype(np.float32)) for e in entries])[:, None, ..., None]
    y = torch.tensor(labels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(y), generator=gen)[:8]
        kwargs = {k: v[idx] for k, v in (("fmri", fmri), ("smri", smri)) if k in mods}
        out = model(**kwargs)
        loss = torch.nn.functional.cross_entropy(out.logits, y[idx])
        if out.align_loss is not None:
            loss = loss + align_weight * out.align_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        kwargs = {k: v for k, v in (("fmri", fmri), ("smri", smri)) if k in mods}
        return float((model(**kwargs).logits.argmax(1) == y).float().mean())


def write_bundle(model: torch.nn.Module, folder: Path, *, train_participants: list[str],
                 preproc: dict[str, Any]) -> Path:
    """A bundle in the layout of :func:`m2m_bids.training.outputs.write_bundle` (weights + card)."""
    import hashlib

    from m2m_bids.models import model_info
    from m2m_bids.training.checkpoint import save_weights

    folder.mkdir(parents=True, exist_ok=True)
    weights = save_weights(folder / "weights.safetensors", model.state_dict())
    card = {"card_version": 1, "arch": model.config.arch, "model": model_info(model),
            "modalities": list(model.config.modalities), "classes": ["CN", "AD"], "positive_class": "AD",
            "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()},
            "tabular": {"columns": [], "numeric": {}, "categorical": {}, "feature_names": []},
            "preproc": preproc, "splits": {"final": {"train": train_participants, "val": []}}}
    (folder / "model-card.json").write_text(json.dumps(card, indent=2))
    return folder
