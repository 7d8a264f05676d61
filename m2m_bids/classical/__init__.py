"""Classical (non-deep) baselines behind ``--arch``, trained under the same folds and metrics.

``connectome-logreg``: AAL2 ROI time series -> Fisher-z correlation matrix (upper triangle) +
regional mean T1w -> standardisation -> L2 logistic regression (:mod:`m2m_bids.classical.api`).
Group training dispatches here when ``cfg.model.arch`` is in :data:`CLASSICAL_ARCHS`.
"""

#: Arch names handled by :func:`m2m_bids.classical.api.train_classical` instead of the torch loop.
CLASSICAL_ARCHS = frozenset({"connectome-logreg"})


def is_classical(arch: str) -> bool:
    """Whether ``arch`` names a classical baseline (no torch model, no model card for ``apply``)."""
    return arch in CLASSICAL_ARCHS


__all__ = ["CLASSICAL_ARCHS", "is_classical"]
