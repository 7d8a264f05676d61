"""Registration and coverage QC figures, their thresholds, and the refusal of participants below them.

Why: a failed registration or a partial-coverage scan still yields tensors of the right shape, and
the model is then trained and explained on a brain that is not where the atlas says. Each cache
entry stores four figures (:class:`~m2m_bids.preproc.entrymeta.QCFigures`); a participant whose figures cross a threshold is
refused with the figure, its value and the threshold (exit 65) unless the user overrides QC.

Thresholds were set on the shared real scans (docs/preprocessing.md): visually good registrations
reach a template correlation of 0.61-0.69 (affine) and 0.75-0.81 (SyN) and a brain Dice of
0.94-0.98; a pitched scan that failed stays at 0.24-0.38, and a 66 mm partial scan covers 16-20 %
of the template brain. The BOLD cost separates poorly (correct 0.92-0.97, 10-20 mm off 0.96-0.97),
so its limit only catches a coregistration that shares no information with the T1w.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.preproc.brain import dice


@dataclass(frozen=True)
class Threshold:
    """One QC figure's limit: ``value >= limit`` passes (``<=`` when ``lower_is_better``)."""

    figure: str
    limit: float
    lower_is_better: bool
    meaning: str

    def passes(self, value: float) -> bool:
        return value <= self.limit if self.lower_is_better else value >= self.limit


#: The documented limits (docs/preprocessing.md, "Registration and coverage QC").
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold("template_correlation", 0.5, False,
              "Pearson r of the normalised T1w with the MNI template inside the template brain mask"),
    Threshold("brain_dice", 0.8, False, "Dice of the T1w's extracted brain, on the grid, with the template brain mask"),
    Threshold("template_coverage", 0.9, False, "fraction of the template brain inside the T1w's field of view"),
    Threshold("bold_t1w_cost", 0.985, True,
              "1 - normalised mutual information of the mean BOLD and the T1w inside the brain, after coregistration"),
)


def anatomical_qc(t1w: np.ndarray, template: np.ndarray, template_mask: np.ndarray, coverage: np.ndarray,
                  brain: np.ndarray) -> dict[str, float]:
    """Template correlation, brain-mask Dice and template coverage of a T1w on the grid."""
    inside = template_mask > 0
    a, b = t1w[inside].astype(np.float64), template[inside].astype(np.float64)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    return {"template_correlation": round(corr, 4),
            "brain_dice": round(dice(brain > 0, inside), 4),
            "template_coverage": round(float((coverage & inside).sum()) / max(int(inside.sum()), 1), 4)}


def normalised_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """2 I(A;B) / (H(A) + H(B)) in [0, 1] over paired samples (histograms on fixed bins: deterministic)."""
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    p = joint / max(joint.sum(), 1.0)
    pa, pb = p.sum(axis=1), p.sum(axis=0)

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    ha, hb, hab = entropy(pa), entropy(pb), entropy(p.ravel())
    return 2.0 * (ha + hb - hab) / (ha + hb) if ha + hb > 0 else 0.0


def failures(figures: dict[str, float]) -> list[str]:
    """One sentence per figure present in ``figures`` that crosses its threshold."""
    out = []
    for limit in THRESHOLDS:
        value = figures.get(limit.figure)
        if value is not None and not limit.passes(float(value)):
            relation = "above" if limit.lower_is_better else "below"
            out.append(f"{limit.figure} = {float(value):.3f} is {relation} the threshold {limit.limit} ({limit.meaning})")
    return out


def check_participant(label: str, qc_by_run: dict[str, dict[str, float]], source: str) -> None:
    """Raise the refusal (exit 65) when any run's figures cross a threshold."""
    problems = [f"{run}: {text}" for run, figures in sorted(qc_by_run.items()) for text in failures(figures)]
    if problems:
        raise AppError(f"sub-{label} fails registration/coverage QC: " + "; ".join(problems), ExitCode.DATA_ERROR,
                       path=source,
                       hint="look at the registration figure (--save-preproc writes figures/*desc-reg_T1w.png); "
                            "exclude the participant, or pass --qc-override to use it anyway")
