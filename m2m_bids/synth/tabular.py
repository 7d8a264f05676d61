"""participants.tsv for a synthetic cohort: diagnosis, demographics, MMSE and CSF biomarkers.

Each column lives in a physiological range (:data:`RANGES`) and is drawn on the logit scale of that
range: the literature-like class mean and sd of :data:`~m2m_bids.synth.spec.TABULAR` are mapped to
that scale (the sd by the delta method). A class moves from the CN distribution (effect size 0: no
tabular group difference) to its literature distribution (effect size 1: the class median is the
literature mean) and stays there for larger effect sizes: a clinical gap wider than real cohorts
show (MMSE 0 for every AD participant) would not be realistic, so effect sizes above 1 strengthen the
imaging effects only. Values stay inside their range with no pile-up at a bound, and the spread never
goes negative.
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


#: Physiological range of every column (open interval of the logit scale): a cohort's ages, the
#: MMSE scale, and CSF concentrations within the span that immunoassays report.
RANGES: dict[str, tuple[float, float]] = {
    "age": (50.0, 95.0), "MMSE": (0.0, 30.5), "tTau": (50.0, 1500.0), "Abeta42": (150.0, 2000.0)}


def _to_logit(column: str, value: float) -> tuple[float, float]:
    """A value and the derivative of the map at it: ``logit((x - lo) / (hi - lo))``."""
    lo, hi = RANGES[column]
    p = (value - lo) / (hi - lo)
    return float(np.log(p / (1.0 - p))), 1.0 / ((hi - lo) * p * (1.0 - p))


def _from_logit(column: str, z: np.ndarray | float) -> np.ndarray:
    lo, hi = RANGES[column]
    return lo + (hi - lo) / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _class_params(column: str, diagnosis: str, effect_size: float) -> tuple[float, float]:
    """Mean and sd on the column's logit scale for a class at the given effect size (CN is the reference).

    Mean and sd move from CN's towards the class's by ``min(effect_size, 1)`` of the way, so the sd
    stays positive and the distribution realistic at any effect size.
    """
    ref_mean, ref_slope = _to_logit(column, TABULAR[column]["CN"][0])
    mean, slope = _to_logit(column, TABULAR[column][diagnosis][0])
    ref_sd, sd = TABULAR[column]["CN"][1] * ref_slope, TABULAR[column][diagnosis][1] * slope
    reach = min(effect_size, 1.0)
    return ref_mean + reach * (mean - ref_mean), ref_sd + reach * (sd - ref_sd)


def tabular_parameters(effect_size: float) -> dict[str, dict[str, dict[str, float]]]:
    """The distributions actually used, for the ground-truth record (logit scale, range, median)."""
    record: dict[str, dict[str, dict[str, float]]] = {}
    for col in TABULAR:
        lo, hi = RANGES[col]
        record[col] = {}
        for cls in TABULAR[col]:
            mean, sd = _class_params(col, cls, effect_size)
            record[col][cls] = {"logit_mean": mean, "logit_sd": sd, "low": lo, "high": hi,
                                "median": float(_from_logit(col, mean))}
    return record


def participants_table(labels: list[str], diagnoses: list[str], effect_size: float,
                       rng: np.random.Generator) -> pd.DataFrame:
    """One row per participant; values rounded the way a clinic records them."""
    rows = []
    for label, dx in zip(labels, diagnoses):
        draw = {col: float(_from_logit(col, rng.normal(*_class_params(col, dx, effect_size))))
                for col in TABULAR}
        rows.append({
            "participant_id": f"sub-{label}",
            "diagnosis": dx,
            "age": int(round(draw["age"])),
            "sex": "F" if rng.random() < 0.55 else "M",
            "MMSE": min(int(round(draw["MMSE"])), 30),
            "tTau": round(draw["tTau"], 1),
            "Abeta42": round(draw["Abeta42"], 1),
        })
    return pd.DataFrame(rows)


def ratio_summary(table: pd.DataFrame) -> dict[str, float]:
    """Fraction of each class with tTau/Abeta42 above the cut-off (recorded as ground truth)."""
    ratio = table["tTau"] / table["Abeta42"]
    above = ratio > TAU_ABETA_CUTOFF
    return {str(dx): round(float(above[table["diagnosis"] == dx].mean()), 4)
            for dx in sorted(table["diagnosis"].unique())}
