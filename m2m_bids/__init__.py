"""m2m-bids: a BIDS App for multimodal (T1w + BOLD + tabular) Alzheimer's-spectrum classification.

The package is organised by stage, one direction only: ``cli`` -> ``config`` -> ``bids`` (inputs)
-> ``preproc`` (nipype workflows, tensor cache) -> ``training`` / ``interpret`` -> ``bids.derivatives``.
Models (``m2m_bids.models``) import torch alone so they run on machines without the neuroimaging stack.
"""

__version__ = "0.1.0"
