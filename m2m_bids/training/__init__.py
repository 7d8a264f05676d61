"""Group-level training: labels, tabular features, subject-level splits, the loop, DDP, checkpoints, metrics.

Entry point: :func:`m2m_bids.training.api.train_group` (imported lazily by the runner so that the
participant level never pays for torch's training stack). See docs/training.md.
"""
