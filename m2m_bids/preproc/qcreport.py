"""Registration/coverage QC outputs: the per-participant table and overlay figure, the group table,
and the refusal of participants below the thresholds (:mod:`m2m_bids.preproc.regqc`).

Written for every preprocessed participant (not only with ``--save-preproc``), from the cache
entries, so a cached participant gets them too:

* ``OUTPUT_DIR/sub-<id>/figures/sub-<id>_desc-regqc_table.tsv``: one row per run, one column per
  figure plus ``passed``; the participant report shows it beside
* ``OUTPUT_DIR/sub-<id>/figures/sub-<id>[_ses-<id>]_desc-regqc_T1w.png``: the normalised T1w with
  its own brain outline (cyan) and the template brain outline (red), three orthogonal slices;
* ``OUTPUT_DIR/group/desc-regqc_table.tsv``: every participant's rows, rebuilt from the
  participant tables (several jobs may share OUTPUT_DIR).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.exitcodes import AppError
from m2m_bids.io_utils import file_lock, output_lock
from m2m_bids.preproc.cache import CacheEntry
from m2m_bids.preproc.grid import make_grid
from m2m_bids.preproc.qc import DPI, _figure
from m2m_bids.preproc.regqc import THRESHOLDS, check_participant, failures
from m2m_bids.preproc.template import grid_template

log = logging.getLogger(__name__)

FIGURES = tuple(t.figure for t in THRESHOLDS)
TABLE_SUFFIX = "_desc-regqc_table.tsv"


def run_label(entry: CacheEntry) -> str:
    """``ses-X_task-Y_run-Z`` of an entry (its identity in the tables and messages)."""
    meta = entry.meta
    parts = [f"ses-{meta.session}" if meta.session else "", f"task-{meta.task}" if meta.bold else "anat",
             f"run-{meta.run}" if meta.run else ""]
    return "_".join(p for p in parts if p)


def participant_rows(label: str, entries: list[CacheEntry]) -> pd.DataFrame:
    """One row per run: the QC figures (empty where the input brings none, e.g. fMRIPrep) and ``passed``."""
    rows = []
    for entry in entries:
        figures = entry.meta.qc.present()
        rows.append({"participant_id": f"sub-{label}", "run": run_label(entry),
                     **{name: figures.get(name) for name in FIGURES}, "passed": not failures(figures)})
    return pd.DataFrame(rows, columns=["participant_id", "run", *FIGURES, "passed"])


def overlay_figure(entry: CacheEntry) -> Figure:
    """The normalised T1w on the grid, its brain outline (cyan) and the template's (red)."""
    t1w = np.asarray(entry.load("smri"), dtype=np.float32)
    geometry = entry.meta.geometry
    if geometry is None:
        raise ValueError(f"cache entry {entry.key} records no grid geometry")
    grid = make_grid(geometry.resolution_mm, list(geometry.grid_shape))
    template = grid_template("mask", grid)
    brain = np.asarray(entry.load("brain_mask")) if "brain_mask" in entry.names else None
    fig, axes = _figure(1, 3, (9, 3.2))
    centre = [n // 2 for n in t1w.shape]
    for col in range(3):
        take: list = [slice(None)] * 3
        take[col] = centre[col]
        ax = axes[0][col]
        ax.imshow(np.rot90(t1w[tuple(take)]), cmap="gray")
        ax.contour(np.rot90(template[tuple(take)]), levels=[0.5], colors="r", linewidths=0.8)
        if brain is not None:
            ax.contour(np.rot90(brain[tuple(take)]), levels=[0.5], colors="c", linewidths=0.6)
        ax.set_axis_off()
    qc = entry.meta.qc.present()
    fig.suptitle(", ".join(f"{k} {qc[k]:.2f}" for k in FIGURES if qc.get(k) is not None), fontsize=8)
    return fig


def write_participant_qc(writer: DerivativesWriter, label: str, entries: list[CacheEntry]) -> Path:
    """The participant's QC table and one overlay figure per session; returns the table's path."""
    sessions: dict[str | None, CacheEntry] = {}
    for entry in entries:
        sessions.setdefault(entry.meta.session, entry)
    for session, entry in sessions.items():
        writer.save_figure(overlay_figure(entry), writer.figure_path({"sub": label, "ses": session, "desc": "regqc"},
                                                                      "T1w", ".png"), dpi=DPI)
    return writer.save_tsv(participant_rows(label, entries),
                           writer.figure_path({"sub": label, "desc": "regqc"}, "table", ".tsv"))


def write_group_qc(writer: DerivativesWriter) -> Path:
    """``group/desc-regqc_table.tsv`` from every participant table under OUTPUT_DIR (rebuilt under a
    lock: several participant jobs may finish at once)."""
    with file_lock(output_lock(writer.output_dir, "regqc")):
        tables = sorted(writer.output_dir.glob(f"sub-*/figures/sub-*{TABLE_SUFFIX}"))
        frames = [pd.read_csv(t, sep="\t") for t in tables]
        group = pd.concat(frames, ignore_index=True) if frames else participant_rows("", [])
        return writer.save_tsv(group, writer.output_path("group", "desc-regqc_table.tsv"))


def apply_qc(label: str, entries: list[CacheEntry], override: bool) -> AppError | None:
    """The refusal of a participant whose QC figures cross a threshold (``None`` when it passes or
    ``override`` is set; an overridden failure is logged as a warning)."""
    qc_by_run = {run_label(e): e.meta.qc.present() for e in entries}
    source = str(entries[0].meta.provenance.source_t1w or "") if entries else ""
    try:
        check_participant(label, qc_by_run, source)
    except AppError as err:
        if override:
            log.warning("sub-%s: %s (used anyway: --qc-override)", label, err.message)
            return None
        log.error("sub-%s: %s", label, err.render())
        return err
    return None
