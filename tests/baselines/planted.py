"""Synthetic cache entries on a real MNI grid (16^3 at 6 mm) with signals planted in AAL2 regions,
and :func:`arch_config`, a tiny CPU group-run configuration for any ``--arch``.

Unlike ``tests/training/synth_cache.py`` (cubes on a grid without an affine), these entries record
their grid geometry like real preprocessing does, so the atlas-based classical baseline can place
AAL2 on them. Class 1 ("AD") differs from class 0 ("CN") by up to three independent effects:

- ``atrophy``: lower T1w intensity in both hippocampi and parahippocampal gyri;
- ``decoupling``: precuneus and angular gyri share a fluctuation in CN but not in AD (the synthetic
  generator's "precuneus-angular" coupling loss);
- ``amplitude``: a larger BOLD fluctuation in the middle cingulate in AD (increased BOLD variability).

Every entry also holds the per-run maps ``gm``, ``falff``, ``alff``, ``bold_mean`` (and ``pet`` with
``pet=True``), drawn from their own random stream so the tensors above do not change, with two more
effects for AD:

- ``gm_atrophy``: lower grey-matter probability in the ``atrophy`` regions;
- ``hypometabolism``: lower ``falff``, ``alff`` and ``pet`` in both precunei (the FDG-PET hallmark).

Everything else is i.i.d. noise. Participants 3, 6, 9, ... have two sessions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from m2m_bids.atlases import load_atlas
from m2m_bids.config import Execution, ModelCfg, Preproc, RunConfig, Train
from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance
from m2m_bids.preproc.grid import make_grid

SHAPE = (16, 16, 16)
RESOLUTION = 6.0
ATROPHY = ("Hippocampus_L", "Hippocampus_R", "ParaHippocampal_L", "ParaHippocampal_R")
COUPLED_A = ("Precuneus_L", "Precuneus_R")
COUPLED_B = ("Angular_L", "Angular_R")
AMPLITUDE = ("Cingulate_Mid_L", "Cingulate_Mid_R")
HYPOMETABOLISM = ("Precuneus_L", "Precuneus_R")


def grid_masks() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The grid affine and the boolean masks of the planted region groups."""
    grid = make_grid(RESOLUTION, SHAPE)
    atlas = load_atlas("aal", target=nib.Nifti1Image(np.zeros(SHAPE, np.uint8), grid.affine))
    masks = {"atrophy": atlas.mask(list(ATROPHY)), "a": atlas.mask(list(COUPLED_A)),
             "b": atlas.mask(list(COUPLED_B)), "amplitude": atlas.mask(list(AMPLITUDE)),
             "hypometabolism": atlas.mask(list(HYPOMETABOLISM))}
    return grid.affine, masks


def make_run(rng: np.random.Generator, label: int, frames: int, masks: dict[str, np.ndarray], *,
             atrophy: float, decoupling: float, amplitude: float) -> dict[str, np.ndarray]:
    """fmri (X,Y,Z,T), smri (X,Y,Z) float16 and an all-ones mask for one run."""
    smri = rng.normal(0.0, 1.0, SHAPE)
    smri[masks["atrophy"]] -= atrophy * label
    fmri = rng.normal(0.0, 1.0, SHAPE + (frames,))
    shared = rng.normal(0.0, 1.0, frames)
    own = rng.normal(0.0, 1.0, frames)
    fmri[masks["a"]] += decoupling * shared
    fmri[masks["b"]] += decoupling * (own if label == 1 else shared)
    fmri[masks["amplitude"]] += amplitude * label * rng.normal(0.0, 1.0, frames)
    return {"fmri": fmri.astype(np.float16), "smri": smri.astype(np.float16),
            "mask": np.ones(SHAPE, dtype=np.uint8)}


def make_maps(rng: np.random.Generator, label: int, masks: dict[str, np.ndarray], *, gm_atrophy: float,
              hypometabolism: float, pet: bool) -> dict[str, np.ndarray]:
    """Per-run maps (X,Y,Z) float16; the effects are in units of the voxel noise SD."""
    def noisy(mean: float, sd: float, drop: np.ndarray | float = 0.0) -> np.ndarray:
        return (mean + sd * (rng.normal(0.0, 1.0, SHAPE) - drop)).astype(np.float16)

    hypo = hypometabolism * label * masks["hypometabolism"]
    maps = {"gm": np.clip(noisy(0.6, 0.1, gm_atrophy * label * masks["atrophy"]), 0, 1),
            "falff": noisy(0.3, 0.05, hypo), "alff": noisy(1.0, 0.2, hypo), "bold_mean": noisy(100.0, 10.0)}
    if pet:
        maps["pet"] = noisy(1.0, 0.1, hypo)
    return maps


def build_planted(cache: Any, n_per_class: int = 10, *, frames: int = 8, atrophy: float = 0.0,
                  decoupling: float = 0.0, amplitude: float = 0.0, gm_atrophy: float = 0.0,
                  hypometabolism: float = 0.0, pet: bool = False, seed: int = 0,
                  first: int = 1) -> tuple[list[Any], pd.DataFrame]:
    """Cache entries and a participants table (index: label; diagnosis CN/AD, age, sex).

    Participant labels count up from ``first`` (a second call with another ``first`` gives held-out people).
    """
    rng = np.random.default_rng(seed)
    map_rng = np.random.default_rng([seed, 1])  # own stream: the fmri/smri tensors stay as they were
    affine, masks = grid_masks()
    entries, rows = [], {}
    for i in range(2 * n_per_class):
        label, participant = i % 2, f"{i + first:02d}"
        for ses in (["1", "2"] if (i + 1) % 3 == 0 else ["1"]):
            meta = EntryMeta(participant=participant, session=ses, bold=BoldRecord(task="rest", repetition_time=2.0),
                             geometry=Geometry(affine=affine.tolist(), grid_shape=SHAPE, resolution_mm=RESOLUTION),
                             provenance=Provenance(params_hash="planted", preproc={"grid_shape": list(SHAPE)}))
            key = hashlib.sha256(f"planted-{seed}-{participant}-{ses}-{atrophy}-{decoupling}-{amplitude}-"
                                 f"{gm_atrophy}-{hypometabolism}-{pet}".encode())
            run = make_run(rng, label, frames, masks, atrophy=atrophy, decoupling=decoupling, amplitude=amplitude)
            run.update(make_maps(map_rng, label, masks, gm_atrophy=gm_atrophy, hypometabolism=hypometabolism,
                                 pet=pet))
            entries.append(cache.put(key.hexdigest(), run, meta))
        rows[participant] = {"diagnosis": ["CN", "AD"][label], "age": float(rng.normal(70, 5)),
                             "sex": ["F", "M"][int(rng.integers(2))]}
    return entries, pd.DataFrame.from_dict(rows, orient="index")


def arch_config(tmp_path: Path, arch: str, *, window_frames: int = 4, overrides: dict[str, Any] | None = None,
                **train: Any) -> RunConfig:
    """A CPU group run of ``arch`` (tiny model preset); ``train`` overrides Train fields."""
    values: dict[str, Any] = {"epochs": 8, "warmup_epochs": 1, "lr": 3e-3, "batch_size": 8, "num_workers": 0,
                              "folds": 3, "samples_per_run": 2, "tabular_columns": [], "checkpoint_every": 100}
    values.update(train)
    return RunConfig(execution=Execution(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out",
                                         analysis_level="group", device="cpu"),
                     preproc=Preproc(resolution_mm=6.0, grid_shape=[16, 16, 16]),  # the planted grid
                     model=ModelCfg(arch=arch, window_frames=window_frames,
                                    overrides={"preset": "tiny", **(overrides or {})}),
                     train=Train(**values))


def train_learns(entries: list[Any], phenotype: pd.DataFrame, cfg: RunConfig) -> tuple[Path, dict[str, Any]]:
    """A group run of ``cfg.model.arch`` that must learn the planted signal (CV ROC-AUC >= 0.8);
    returns the bundle folder and its model card."""
    from m2m_bids.training.api import train_group

    result = train_group(entries, phenotype, cfg, cfg.execution.output_dir)
    assert result.summary["roc_auc"]["mean"] >= 0.8, result.summary
    bundle = cfg.execution.output_dir / "models" / f"model-{cfg.model.arch}"
    return bundle, json.loads((bundle / "model-card.json").read_text())


def participant_config(cfg: RunConfig) -> RunConfig:
    """The same run at the participant level (to apply the bundle the group level wrote)."""
    return cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"analysis_level": "participant"})})
