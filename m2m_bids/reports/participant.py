"""``OUTPUT_DIR/sub-<id>.html``: what the model predicted for a participant and where it looked.

Sections: prediction (probabilities), attention and saliency maps on the MNI template with their
top atlas regions, brain states (temporal score, connectivity), preprocessing QC figures found
under ``sub-<id>/figures/``, and the caveats a reader needs (docs/interpreting.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.reports.html import esc, figure, page, table


@dataclass
class MapView:
    """One voxel map as shown in the report."""

    title: str
    figure: Path
    table: pd.DataFrame  # the top-k rows of the atlas table
    nifti: Path
    tsv: Path


@dataclass
class StateView:
    """Temporal score and brain states of one run."""

    title: str
    source: str
    temporal_figure: Path
    table: pd.DataFrame
    connectivity: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class SessionView:
    """Everything shown for one session."""

    session: str | None
    prediction: dict[str, Any]
    probabilities: dict[str, float]
    probability_figure: Path
    maps: list[MapView] = field(default_factory=list)
    states: list[StateView] = field(default_factory=list)
    predictions_tsv: Path | None = None
    caveats: str | None = None  # shown above the maps; None: the attention/saliency caveats


CAVEATS = (
    "Attention and saliency show what this model used to reach its output, not where disease is. "
    "They are computed on the model's grid (3 mm by default); attention comes from tokens covering "
    "several centimetres, so region names are approximate; high scores at the brain's edge often mean "
    "the model used registration or skull-stripping differences. Compare with the group maps and see "
    "docs/interpreting.md.")


def _prediction_section(view: SessionView, model_id: str, in_training: bool) -> str:
    p = view.prediction
    warn = ('<p class="warn">This participant was in the model\'s training data: the prediction is '
            'optimistic (data leakage) and must not be used as an evaluation.</p>' if in_training else "")
    probs = pd.DataFrame({"class": list(view.probabilities), "probability": list(view.probabilities.values())})
    basis = f"{p['n_runs']} run(s)" if "n_runs" in p else f"{p.get('n_windows')} window(s)"
    return (f"<h3>Prediction</h3>{warn}<p class=\"big\">{esc(p.get('predicted_label'))}</p>"
            f"<p class=\"note\">model {esc(model_id)}; {esc(basis)} averaged</p>"
            + table(probs) + figure(view.probability_figure, "class probabilities"))


def _maps_section(view: SessionView) -> str:
    if not view.maps:
        return "<h3>Maps</h3><p>No spatial map was produced for this model.</p>"
    parts = ["<h3>Where the model looked</h3>", f'<p class="note">{esc(view.caveats or CAVEATS)}</p>']
    for m in view.maps:
        cols = [c for c in ("rank", "name", "mean", "n_voxels") if c in m.table.columns]
        parts.append(f"<h4>{esc(m.title)}</h4>" + figure(m.figure, m.title) + table(m.table[cols]))
        parts.append(f'<p class="note">files: {esc(m.nifti.name)}, {esc(m.tsv.name)}</p>')
    return "".join(parts)


def _states_section(view: SessionView) -> str:
    if not view.states:
        return ""
    parts = ["<h3>Brain states</h3>"]
    for s in view.states:
        parts.append(f"<h4>{esc(s.title)} (temporal {esc(s.source)})</h4>"
                     + figure(s.temporal_figure, "per-frame temporal score; red lines mark the brain states")
                     + table(s.table))
        parts += [figure(path, title) for title, path in s.connectivity]
    return "".join(parts)


#: Suffixes of the figures the explanations write (everything else in figures/ is preprocessing QC).
EXPLANATION_SUFFIXES = ("_statmap", "_relmat", "_timeseries", "_predictions")


def qc_figures(output_dir: Path, label: str) -> list[Path]:
    """Preprocessing figures under ``sub-<id>/figures/`` (not the explanation figures, of any run)."""
    folder = output_dir / f"sub-{label}" / "figures"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in (".svg", ".png") and not p.stem.endswith(EXPLANATION_SUFFIXES))


def render_participant(output_dir: Path, label: str, sessions: list[SessionView], model_id: str,
                       in_training: bool) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` and return its path."""
    sections = []
    for view in sessions:
        heading = f"<h2>Session {esc(view.session)}</h2>" if view.session else "<h2>Results</h2>"
        sections.append(heading + _prediction_section(view, model_id, in_training))
        sections.append(_maps_section(view))
        sections.append(_states_section(view))
    qc = qc_figures(output_dir, label)
    qc_table = output_dir / f"sub-{label}" / "figures" / f"sub-{label}_desc-regqc_table.tsv"  # preproc/qcreport.py
    if qc or qc_table.is_file():
        rows = table(pd.read_csv(qc_table, sep="\t")) if qc_table.is_file() else ""
        sections.append("<h2>Preprocessing quality control</h2>" + rows + "".join(figure(p, p.name) for p in qc))
    html = page(f"sub-{label}", f"m2m-bids participant report · model {model_id}", sections)
    writer = DerivativesWriter(output_dir)
    return writer.save_text(html, writer.output_path(f"sub-{label}.html"))
