"""The classical baselines behind ``--arch``: their names, classifier and bundle file, in one table.

The torch models register themselves in :mod:`m2m_bids.models.registry`; these archs are
scikit-learn pipelines (:mod:`m2m_bids.classical.api`), so they are listed here, and the backend
table (:mod:`m2m_bids.backends`) reads both registries to route an arch to its backend.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The file of a classical model bundle (``models/model-<arch>/``), in place of ``model-card.json``.
CARD_FILE = "classical-model.json"


@dataclass(frozen=True)
class ClassicalArch:
    """One classical ``--arch``: the pipeline step holding its linear classifier, and whether its
    decision values are Platt-scaled into probabilities (a linear SVC has none of its own)."""

    name: str
    classifier_step: str
    platt: bool


ARCHS: dict[str, ClassicalArch] = {arch.name: arch for arch in (
    ClassicalArch("connectome-logreg", classifier_step="logisticregression", platt=False),
    ClassicalArch("connectome-svc", classifier_step="linearsvc", platt=True),
)}


def list_archs() -> list[str]:
    """Names of the classical baselines accepted by ``--arch``."""
    return sorted(ARCHS)
