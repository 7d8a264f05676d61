"""Synthetic cached datasets with a planted group difference, written through the real tensor cache.

Class 1 ("AD") has lower T1w intensity in one cube ("atrophy") and coupled BOLD signals in two
regions; class 0 ("CN") does not. Everything else is noise. Participants 3, 6, 9, ... have two
sessions, so subject-level splitting is exercised.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Provenance

GRID = 16
ATROPHY = (slice(4, 10), slice(4, 10), slice(4, 10))
REGION_A = (slice(2, 6), slice(9, 14), slice(4, 10))
REGION_B = (slice(10, 14), slice(9, 14), slice(4, 10))


def make_run(rng: np.random.Generator, label: int, frames: int, effect: float) -> dict[str, np.ndarray]:
    """One run's arrays: fmri (X,Y,Z,T) float16, smri (X,Y,Z) float16, mask (X,Y,Z) uint8."""
    smri = rng.normal(0.0, 1.0, (GRID,) * 3)
    smri[ATROPHY] -= effect * label
    fmri = rng.normal(0.0, 1.0, (GRID,) * 3 + (frames,))
    shared = rng.normal(0.0, 1.0, frames)
    other = shared if label == 1 else rng.normal(0.0, 1.0, frames)
    fmri[REGION_A] += shared
    fmri[REGION_B] += other
    mask = np.ones((GRID,) * 3, dtype=np.uint8)
    return {"fmri": fmri.astype(np.float16), "smri": smri.astype(np.float16), "mask": mask}


def build_dataset(cache: Any, n_per_class: int = 10, *, frames: int = 8, effect: float = 1.5,
                  seed: int = 0) -> tuple[list[Any], pd.DataFrame]:
    """Cache entries and a participants table (index: label) with diagnosis, age (with gaps), sex."""
    rng = np.random.default_rng(seed)
    entries, rows = [], {}
    n = 2 * n_per_class
    for i in range(n):
        label = i % 2
        participant = f"{i + 1:02d}"
        sessions = ["1", "2"] if (i + 1) % 3 == 0 else ["1"]
        for ses in sessions:
            meta = EntryMeta(participant=participant, session=ses, bold=BoldRecord(task="rest", repetition_time=2.0),
                             provenance=Provenance(params_hash="synthetic", preproc={"grid_shape": [GRID] * 3}))
            key = hashlib.sha256(f"{seed}-sub-{participant}_ses-{ses}_task-rest".encode()).hexdigest()
            entries.append(cache.put(key, make_run(rng, label, frames, effect), meta))
        rows[participant] = {"diagnosis": ["CN", "AD"][label],
                             "age": np.nan if i % 7 == 0 else float(rng.normal(70, 5)),
                             "sex": ["F", "M"][int(rng.integers(2))]}
    return entries, pd.DataFrame.from_dict(rows, orient="index")
