"""Removal of the temporary folders that interrupted cache writes leave behind.

:meth:`~m2m_bids.preproc.cache.TensorCache.put` writes an entry into ``.tmp-<key>-<uuid>`` and
renames it into place; a job killed in between (``kill -9``, a node lost to the scheduler) leaves
the temporary folder. Readers never see it, but it holds a run's tensors and is never reused.
Other jobs may be writing into the same cache right now, so only folders untouched for
:data:`STALE_AFTER_S` are removed: no entry takes that long to write.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: Age (seconds since the last change) after which a temporary cache folder is abandoned.
STALE_AFTER_S = 6 * 3600


def remove_stale_temporaries(cache_root: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete ``.tmp-*`` folders below ``cache_root`` (two levels) older than ``max_age_s``; return them."""
    if not cache_root.is_dir():
        return []
    now = time.time()
    removed = []
    for tmp in [*cache_root.glob(".tmp-*"), *cache_root.glob("*/.tmp-*")]:
        try:
            if now - tmp.stat().st_mtime < max_age_s:
                continue
        except FileNotFoundError:  # its writer finished or another job removed it
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    if removed:
        log.info("removed %d abandoned temporary folder(s) from the tensor cache %s", len(removed), cache_root)
    return removed
