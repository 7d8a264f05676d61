"""The small real participants of bids-real (sub-03, sub-04) through MultiProc on the tiny grid.

sub-03 is a whole-head 2 mm T1w with shading and SliceTiming: brain extraction, registration and
QC must pass. sub-04 is a 66 mm partial-coverage T1w: it must be refused (exit 65), not cached
into training as a brain shrunk into a box. The QC table is printed (``pytest -s``).
Skipped where ../shared/data/bids-real is absent (it is not shipped with the package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m2m_bids.bids.layout import collect_participants
from m2m_bids.config import Preset
from m2m_bids.preflight import build_config
from m2m_bids.exitcodes import ExitCode
from m2m_bids.preproc.api import preprocess_participants

from m2m_bids.testing import BIDS_REAL  # noqa: E402


@pytest.mark.skipif(not BIDS_REAL.is_dir(), reason="bids-real test data not present")
def test_small_real_participants(tmp_path: Path) -> None:
    """sub-03 (SliceTiming, 2 mm whole-head T1w) passes QC; sub-04 (partial coverage) is refused."""
    cfg = build_config({"execution": {"bids_dir": BIDS_REAL, "output_dir": tmp_path / "out",
                                      "analysis_level": "participant", "participant_label": ["03", "04"],
                                      "nprocs": 2, "omp_nthreads": 1, "skip_bids_validation": True}},
                       preset=Preset.tiny)
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    assert not problems and [p.label for p in participants] == ["03", "04"]
    sub03, sub04 = preprocess_participants(participants, cfg)
    assert sub03.error is None, sub03.error
    entry = sub03.entries[0]
    fmri = entry.load("fmri")
    assert fmri.shape == (16, 16, 16, 20) and np.isfinite(np.asarray(fmri, dtype=np.float32)).all()
    assert entry.meta.bold.slice_timing.corrected is True  # sub-03 has SliceTiming
    assert entry.meta.qc.template_correlation >= 0.5 and entry.meta.qc.brain_dice >= 0.8
    assert entry.load("brain_mask").sum() > 0.8 * entry.load("mask").sum()
    assert sub04.error is not None and sub04.error.code == ExitCode.DATA_ERROR and "sub-04" in sub04.error.render()
    table = pd.read_csv(tmp_path / "out" / "group" / "desc-regqc_table.tsv", sep="\t")
    print("\n" + table.to_string(index=False))
