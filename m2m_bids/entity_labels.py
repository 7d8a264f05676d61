"""BIDS entity labels as the app stores them: ``01`` for ``sub-01``, ``pre`` for ``ses-pre``.

Users, ``participants.tsv`` and cache metadata write a label with or without its entity prefix
(``--participant-label sub-01`` and ``01`` mean the same participant); everything inside the app
compares bare labels, so every such value goes through :func:`strip_prefix` once, where it enters.
"""

from __future__ import annotations


def strip_prefix(label: str, entity: str) -> str:
    """``strip_prefix("sub-01", "sub") == "01"``; a bare label (``"01"``) is returned as it is.

    Surrounding whitespace is dropped (a stray space in a TSV cell or a label file is no part of
    the label). Only the exact ``<entity>-`` prefix is removed, once: ``"sub-sub-01"`` keeps one.
    """
    value = str(label).strip()
    prefix = f"{entity}-"
    return value[len(prefix):] if value.startswith(prefix) else value
