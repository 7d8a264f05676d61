"""Classical (non-deep) baselines behind ``--arch``, trained under the same folds and metrics.

``connectome-logreg`` and ``connectome-svc``: AAL2 ROI time series -> Fisher-z correlation matrix
(upper triangle) + regional mean T1w -> standardisation -> ANOVA-F selection -> L2 logistic
regression, or linear SVC with Platt-scaled probabilities (:mod:`m2m_bids.classical.api`).
The archs and their bundle file are listed in :mod:`m2m_bids.classical.registry`; the backend table
(:mod:`m2m_bids.backends`) sends group training here and a bundle holding that file to
:mod:`m2m_bids.classical.apply`.
"""
