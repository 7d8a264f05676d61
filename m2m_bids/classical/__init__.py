"""Classical (non-deep) baselines behind ``--arch``, trained under the same folds and metrics.

``connectome-logreg`` and ``connectome-svc``: AAL2 ROI time series -> Fisher-z correlation matrix
(upper triangle) + regional mean T1w -> standardisation -> ANOVA-F selection -> L2 logistic
regression, or linear SVC with Platt-scaled probabilities (:mod:`m2m_bids.classical.api`).
Group training dispatches here when ``cfg.model.arch`` is in :data:`CLASSICAL_ARCHS`; the
participant level applies a bundle holding :data:`CARD_FILE` (:mod:`m2m_bids.classical.apply`).
"""

from pathlib import Path

#: Arch names handled by :func:`m2m_bids.classical.api.train_classical` instead of the torch loop.
CLASSICAL_ARCHS = frozenset({"connectome-logreg", "connectome-svc"})
#: The file of a classical model bundle (``models/model-<arch>/``), in place of ``model-card.json``.
CARD_FILE = "classical-model.json"


def is_classical(arch: str) -> bool:
    """Whether ``arch`` names a classical baseline (no torch model; its bundle is :data:`CARD_FILE`)."""
    return arch in CLASSICAL_ARCHS


def is_classical_bundle(bundle_dir: Path) -> bool:
    """Whether ``bundle_dir`` holds a classical model (applied without torch) rather than a model card."""
    return (Path(bundle_dir) / CARD_FILE).is_file()


__all__ = ["CARD_FILE", "CLASSICAL_ARCHS", "is_classical", "is_classical_bundle"]
