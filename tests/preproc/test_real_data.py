"""The small real participants of bids-real (sub-03, sub-04) through MultiProc on the tiny grid.

Skipped where ../shared/data/bids-real is absent (it is not shipped with the package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m2m_bids.bids.layout import collect_participants
from m2m_bids.config import Preset, build_config
from m2m_bids.preproc.api import preprocess_participants

from m2m_bids.testing import BIDS_REAL  # noqa: E402


@pytest.mark.skipif(not BIDS_REAL.is_dir(), reason="bids-real test data not present")
def test_small_real_participants(tmp_path: Path) -> None:
    """sub-03 (SliceTiming, 2 mm T1w) and sub-04 (big-endian T1w, 3-slice 4x4x8 mm BOLD) in parallel."""
    cfg = build_config({"execution": {"bids_dir": BIDS_REAL, "output_dir": tmp_path / "out",
                                      "analysis_level": "participant", "participant_label": ["03", "04"],
                                      "nprocs": 2, "omp_nthreads": 1, "skip_bids_validation": True}},
                       preset=Preset.tiny)
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    assert not problems and [p.label for p in participants] == ["03", "04"]
    results = preprocess_participants(participants, cfg)
    for result in results:
        assert result.error is None, result.error
        fmri = result.entries[0].load("fmri")
        assert fmri.shape == (16, 16, 16, 20) and np.isfinite(np.asarray(fmri, dtype=np.float32)).all()
    assert results[0].entries[0].meta["slice_timing"]["SliceTimingCorrected"] is True  # sub-03 has SliceTiming
    assert results[1].entries[0].meta["slice_timing"]["SliceTimingCorrected"] is False
