"""The dataset-level ``predictions.tsv``: merged safely by parallel participant jobs.

Kept free of torch and the neuroimaging stack so it stays cheap to import (tests spawn workers).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.io_utils import file_lock, output_lock

PREDICTIONS_SIDECAR = {
    "participant_id": {"Description": "participant label"},
    "session_id": {"Description": "session label, n/a when the dataset has no sessions"},
    "predicted_label": {"Description": "class with the highest probability"},
    "modalities": {"Description": "inputs the prediction used, joined by '+' (e.g. fmri+smri+tabular, or "
                                  "smri+tabular for a model that reads no BOLD)"},
    "n_windows": {"Description": "fMRI windows averaged (every window of every run of the session)"},
    "n_runs": {"Description": "runs whose features were averaged (classical archs, which read whole runs)"},
    "model_id": {"Description": "<arch>@<first 12 hex digits of the hash of the model's tensors and card>"},
    "in_training_set": {"Description": "true if the participant trained the final model (optimistic prediction)"},
}


def write_tsv(writer: DerivativesWriter, path: Path, table: pd.DataFrame,
              sidecar: dict[str, object] | None = None) -> Path:
    """An explanation table: floats to 6 significant digits, ``n/a`` for missing (BIDS), and its sidecar."""
    return writer.save_tsv(table, path, float_format="%.6g", sidecar=sidecar)


def _text(value: object) -> str:
    """One cell as written: floats to 6 significant digits, missing as ``n/a`` (stable across merges)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def update_predictions(output_dir: Path, rows: pd.DataFrame, classes: list[str]) -> Path:
    """Merge ``rows`` into ``OUTPUT_DIR/predictions.tsv`` under a lock (parallel jobs keep every row)."""
    writer = DerivativesWriter(output_dir)
    path = writer.output_path("predictions.tsv")
    rows = rows.apply(lambda col: col.map(_text))
    with file_lock(output_lock(output_dir, "predictions.tsv")):
        if path.is_file():
            old = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            key = ["participant_id", "session_id", "model_id"]
            new_keys = set(map(tuple, rows[key].astype(str).to_numpy()))
            old = old[[tuple(r) not in new_keys for r in old[key].astype(str).to_numpy()]]
            merged = pd.concat([old, rows], ignore_index=True)
        else:
            merged = rows
        merged = merged.sort_values(["participant_id", "session_id", "model_id"]).reset_index(drop=True)
        sidecar = dict(PREDICTIONS_SIDECAR)
        sidecar.update({f"prob_{c}": {"Description": f"probability of class {c}"} for c in classes})
        return write_tsv(writer, path, merged, sidecar)
