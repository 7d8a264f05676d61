"""Preprocessing: nipype workflows from raw BIDS (or fMRIPrep derivatives) to cached MNI tensors.

Public entry points: :func:`m2m_bids.preproc.api.preprocess_participants` (returns
:class:`~m2m_bids.preproc.api.ParticipantResult`) and the tensor cache
(:class:`~m2m_bids.preproc.cache.TensorCache`, :class:`~m2m_bids.preproc.cache.CacheEntry`).
Submodules are imported lazily by callers: importing this package pulls in neither nipype nor torch.
"""
