"""Baseline architectures from the papers, registered behind ``--arch`` like ``m2m``.

Importing this package registers ``cnn-lstm``, ``cnn-gru``, ``cnn3d``, ``lstm3d`` and ``gru3d``
(:mod:`m2m_bids.models.baselines.cnn_rnn`), ``masan`` and ``siamese`` (one module each). The
classical ``connectome-logreg`` baseline is not a torch model; it lives in :mod:`m2m_bids.classical`.
"""

from m2m_bids.models.baselines import cnn_rnn as _cnn_rnn  # noqa: F401  (registers the CNN-RNN archs)
from m2m_bids.models.baselines import masan as _masan  # noqa: F401  (registers masan)
from m2m_bids.models.baselines import siamese as _siamese  # noqa: F401  (registers "siamese")
