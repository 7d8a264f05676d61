"""participants.tsv for a synthetic cohort: diagnosis, demographics, MMSE and CSF biomarkers.

Class means move away from the CN reference by ``effect_size`` times the literature-like gap in
:data:`~m2m_bids.synth.spec.TABULAR`; at effect size 0 every class is drawn from the CN
distribution, so no tabular group difference exists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from m2m_bids.synth.spec import TABULAR, TAU_ABETA_CUTOFF, SynthSpec

PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant label"},
    "diagnosis": {"Description": "Synthetic clinical group (planted by m2m-synth; not a real diagnosis)",
                  "Levels": {"CN": "cognitively normal", "MCI": "mild cognitive impairment",
                             "AD": "Alzheimer's disease dementia"}},
    "age": {"Description": "Age at the first scan", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "MMSE": {"Description": "Mini-Mental State Examination total score (0-30; lower is worse)"},
    "tTau": {"Description": "CSF total tau", "Units": "pg/mL"},
    "Abeta42": {"Description": "CSF amyloid-beta 1-42", "Units": "pg/mL"},
}


def class_counts(spec: SynthSpec) -> dict[str, int]:
    """Participants per class by largest remainder, so counts always sum to n_participants."""
    weights = np.asarray(spec.proportions or [1.0] * len(spec.classes), dtype=float)
    exact = weights / weights.sum() * spec.n_participants
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: spec.n_participants - counts.sum()]:
        counts[i] += 1
    return dict(zip(spec.classes, counts.tolist()))


def assign_diagnoses(spec: SynthSpec, rng: np.random.Generator) -> list[str]:
    """Diagnosis per participant (in label order), classes interleaved in a seeded random order."""
    labels = [c for c, n in class_counts(spec).items() for _ in range(n)]
    return [labels[i] for i in rng.permutation(len(labels))]


def _class_params(column: str, diagnosis: str, effect_size: float) -> tuple[float, float]:
    """Mean and sd of a column for a class at the given effect size (CN is the reference)."""
    ref_mean, ref_sd = TABULAR[column]["CN"]
    mean, sd = TABULAR[column][diagnosis]
    return ref_mean + effect_size * (mean - ref_mean), ref_sd + effect_size * (sd - ref_sd)


def tabular_parameters(effect_size: float) -> dict[str, dict[str, dict[str, float]]]:
    """The distributions actually used, for the ground-truth record."""
    return {col: {cls: dict(zip(("mean", "sd"), _class_params(col, cls, effect_size)))
                  for cls in TABULAR[col]} for col in TABULAR}


def participants_table(labels: list[str], diagnoses: list[str], effect_size: float,
                       rng: np.random.Generator) -> pd.DataFrame:
    """One row per participant; values rounded the way a clinic records them."""
    rows = []
    for label, dx in zip(labels, diagnoses):
        draw = {col: rng.normal(*_class_params(col, dx, effect_size)) for col in TABULAR}
        rows.append({
            "participant_id": f"sub-{label}",
            "diagnosis": dx,
            "age": int(np.clip(round(draw["age"]), 50, 95)),
            "sex": "F" if rng.random() < 0.55 else "M",
            "MMSE": int(np.clip(round(draw["MMSE"]), 0, 30)),
            "tTau": round(float(np.clip(draw["tTau"], 80.0, 1300.0)), 1),
            "Abeta42": round(float(np.clip(draw["Abeta42"], 200.0, 1700.0)), 1),
        })
    return pd.DataFrame(rows)


def ratio_summary(table: pd.DataFrame) -> dict[str, float]:
    """Fraction of each class with tTau/Abeta42 above the cut-off (recorded as ground truth)."""
    ratio = table["tTau"] / table["Abeta42"]
    above = ratio > TAU_ABETA_CUTOFF
    return {str(dx): round(float(above[table["diagnosis"] == dx].mean()), 4)
            for dx in sorted(table["diagnosis"].unique())}
