"""Registration/coverage QC: figures on known cases, the refusal (exit 65) and its override, the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.exitcodes import ExitCode
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta, Geometry, Provenance, QCFigures
from m2m_bids.preproc.grid import make_grid
from m2m_bids.preproc.template import grid_template
from m2m_bids.preproc.qcreport import apply_qc, write_group_qc, write_participant_qc
from m2m_bids.preproc.regqc import anatomical_qc, normalised_mutual_information

GRID = make_grid(6.0, (16, 16, 16))


def _entry(cache: TensorCache, label: str, qc: dict[str, float]):
    template = grid_template("t1", GRID)
    mask = (grid_template("mask", GRID) > 0).astype(np.uint8)
    tensors = {"fmri": np.zeros((16, 16, 16, 2)), "smri": template * mask, "mask": mask, "brain_mask": mask}
    meta = EntryMeta(participant=label, bold=BoldRecord(task="rest"), qc=QCFigures(**qc),
                     geometry=Geometry(affine=GRID.affine.tolist(), grid_shape=GRID.shape, resolution_mm=6.0),
                     provenance=Provenance(source_t1w=f"/data/sub-{label}/anat/sub-{label}_T1w.nii.gz"))
    return cache.put(TensorCache.make_key({"participant": label}, {"qc": qc}), tensors, meta)


def test_anatomical_figures_on_known_cases() -> None:
    template, inside = grid_template("t1", GRID), grid_template("mask", GRID) > 0
    perfect = anatomical_qc(template, template, inside, np.ones_like(inside), inside)
    assert perfect == {"template_correlation": 1.0, "brain_dice": 1.0, "template_coverage": 1.0}
    half = np.zeros_like(inside)
    half[:, :, 8:] = True  # a partial-coverage scan: the upper half of the grid only
    shifted = np.roll(template, 3, axis=1)  # 18 mm off
    partial = anatomical_qc(shifted * half, template, inside, half, np.roll(inside, 3, axis=1) & half)
    assert partial["template_coverage"] < 0.7 and partial["brain_dice"] < 0.7 and partial["template_correlation"] < 0.5


def test_normalised_mutual_information_orders_alignment() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert normalised_mutual_information(a, -2 * a + 1) > 0.9  # any monotone relation: fully dependent
    assert normalised_mutual_information(a, rng.normal(size=5000)) < 0.1


def test_refusal_names_participant_figure_and_threshold_unless_overridden(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path / "cache")
    good = _entry(cache, "01", {"template_correlation": 0.8, "brain_dice": 0.93, "template_coverage": 1.0,
                                "bold_t1w_cost": 0.8})
    partial = _entry(cache, "04", {"template_correlation": 0.05, "brain_dice": 0.1, "template_coverage": 0.15,
                                   "bold_t1w_cost": 0.8})
    assert apply_qc("01", [good], override=False) is None
    refusal = apply_qc("04", [partial], override=False)
    assert refusal is not None and refusal.code == ExitCode.DATA_ERROR == 65
    text = refusal.render()
    for expected in ("sub-04", "template_coverage = 0.150", "threshold 0.9", "template_correlation = 0.050",
                     "threshold 0.5", "--qc-override", "sub-04_T1w.nii.gz"):
        assert expected in text, expected
    assert "bold_t1w_cost" not in text  # only the failing figures are named
    assert apply_qc("04", [partial], override=True) is None

    out = tmp_path / "out"
    writer = DerivativesWriter(out)
    for label, entry in (("01", good), ("04", partial)):
        table = write_participant_qc(writer, label, [entry])
        assert (out / f"sub-{label}" / "figures" / f"sub-{label}_desc-regqc_T1w.png").stat().st_size > 1000
        assert pd.read_csv(table, sep="\t")["passed"].tolist() == [label == "01"]
    from m2m_bids.reports.participant import render_participant

    html = render_participant(out, "04", [], "m2m", in_training=False).read_text()
    assert "Preprocessing quality control" in html and "template_coverage" in html and "0.150" in html
    assert "sub-04_desc-regqc_T1w.png" in html  # the overlay figure
    group = pd.read_csv(write_group_qc(writer), sep="\t")
    assert group["participant_id"].tolist() == ["sub-01", "sub-04"]
    assert group["template_coverage"].tolist() == [1.0, 0.15]
