"""Files of a group run (rank 0 only): metrics tables, out-of-fold predictions, figures, model bundle.

The model card is what ``apply`` reads to rebuild the network (``model.config``), reproduce the
tabular features (``tabular``), check that new data were preprocessed the same way (``preproc`` and
``cache``), and tell the user how the model was trained and how well it cross-validated.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from m2m_bids import __version__
from m2m_bids.bids.derivatives import DerivativesWriter
from m2m_bids.config import RunConfig
from m2m_bids.model_identity import CARD_FILE, model_digest
from m2m_bids.model_inputs.windows import EntryLike
from m2m_bids.training.checkpoint import write_weights
from m2m_bids.training.figures import roc_pr_figures, training_curves
from m2m_bids.training.labels import Labels
from m2m_bids.training.metrics import METRICS
from m2m_bids.training.result import GroupResult, strict_json

if TYPE_CHECKING:
    from m2m_bids.training.splitrun import SplitOutput

log = logging.getLogger(__name__)

CARD_VERSION = 1
PACKAGES = ("torch", "numpy", "monai", "scikit-learn", "safetensors", "pandas", "nibabel")


def metrics_table(result: GroupResult) -> pd.DataFrame:
    """One row per fold plus ``mean`` and ``sd`` rows; one column per metric."""
    rows = [{"split": name, **{m: values[m] for m in METRICS}} for name, values in result.per_fold.items()]
    rows.append({"split": "mean", **{m: result.summary[m]["mean"] for m in METRICS}})
    rows.append({"split": "sd", **{m: result.summary[m]["sd"] for m in METRICS}})
    return pd.DataFrame(rows)


def write_metrics(writer: DerivativesWriter, result: GroupResult, labels: Labels, extra: dict[str, Any]) -> None:
    """``group/metrics.tsv``, ``metrics.json`` (with ``extra``), ``oof-predictions.tsv`` and the ROC and
    precision-recall figures: what every group run writes, deep or classical."""
    writer.save_tsv(metrics_table(result), writer.output_path("group", "metrics.tsv"), float_format="%.4f")
    writer.save_tsv(result.oof, writer.output_path("group", "oof-predictions.tsv"), float_format="%.6f")
    writer.save_json(strict_json({
        "classes": result.classes, "positive_class": result.classes[-1] if len(result.classes) == 2 else None,
        "per_fold": result.per_fold, "summary": result.summary,
        "n_participants": {"labelled": int(len(labels.y)), "excluded": len(labels.excluded),
                           "per_class": labels.counts()},
        "excluded": result.excluded, **extra}), writer.output_path("group", "metrics.json"))
    for kind, fig in roc_pr_figures(result.oof, result.classes).items():
        writer.save_figure(fig, writer.output_path("group", "figures", f"{kind}.svg"))


def write_group_outputs(writer: DerivativesWriter, result: GroupResult, outputs: list[SplitOutput],
                        labels: Labels) -> None:
    """The group metrics and figures of a deep model, with each split's kept epoch and training curves."""
    write_metrics(writer, result, labels, {"best_epoch": {o.split.name: o.best_epoch for o in outputs},
                                           "epoch_selection": {o.split.name: o.selection for o in outputs}})
    curves = training_curves({o.split.name: o.history for o in outputs}, {o.split.name: o.best_epoch for o in outputs},
                             {o.split.name: o.selection for o in outputs})
    writer.save_figure(curves, writer.output_path("group", "figures", "training-curves.svg"))


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers (recorded in the model card)."""
    versions = {"m2m_bids": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def cache_provenance(entries: list[EntryLike]) -> dict[str, Any]:
    """Cache keys, preprocessing parameters and their hashes of the training samples (``apply`` checks them)."""
    provenance = [e.meta.provenance for e in entries]
    hashes = {p.params_hash for p in provenance if p.params_hash is not None}
    params = [p.preproc for p in provenance if p.preproc is not None]
    return {"param_hashes": sorted(hashes), "params": params[0] if params else None,
            "keys": sorted(str(e.key) for e in entries)}


def write_bundle(writer: DerivativesWriter, bundle: Path, final: SplitOutput, result: GroupResult, labels: Labels,
                 cfg: RunConfig, entries: list[EntryLike]) -> Path:
    """``weights.safetensors`` + ``model-card.json`` of the final model (trained on all labelled participants)."""
    # one metadata key: safetensors writes several in no fixed order, so the bytes would vary
    weights = writer.save_file(bundle / "weights.safetensors", lambda tmp: write_weights(
        tmp, final.best_state, metadata={"format": f"m2m-bids/{cfg.model.arch}"}))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = {
        "card_version": CARD_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": cfg.run_id,
        "arch": cfg.model.arch,
        "model": final.model_info,
        "modalities": list(final.modalities),
        "window_frames": cfg.model.window_frames,
        "weights": {"file": weights.name, "sha256": digest},
        "classes": labels.classes,
        "positive_class": labels.classes[-1] if len(labels.classes) == 2 else None,
        "label_column": cfg.train.label_column,
        "label_rule": cfg.train.label_rule,
        "tabular": final.encoder.to_dict(),
        "preproc": cfg.preproc.model_dump(mode="json"),
        "cache": cache_provenance(entries),
        "train": cfg.train.model_dump(mode="json"),
        "model_cfg": cfg.model.model_dump(mode="json"),
        "splits": {"folds": [s.to_dict() for s in result.splits],
                   "final": result.final_split.to_dict() if result.final_split else None},
        "excluded": labels.excluded,
        "seeds": {"random_seed": cfg.execution.random_seed,
                  "splits": {s.name: cfg.execution.random_seed + 1000 * (k + 1)
                             for k, s in enumerate([*result.splits, final.split])}},
        "final_model": {"best_epoch": final.best_epoch, "epoch_selection": final.selection,
                        "val_auc": final.history[final.best_epoch - 1]["val_auc"] if final.history else None},
        "metrics": {"summary": result.summary, "per_fold": result.per_fold},
        "versions": package_versions(),
    }
    card = strict_json(card)
    card["model_id"] = f"{cfg.model.arch}@{model_digest(final.best_state, card)[:12]}"
    writer.save_json(card, bundle / CARD_FILE)
    log.info("model bundle %s written to %s (sha256 %s)", card["model_id"], bundle, digest[:12])
    return bundle


__all__ = ["write_bundle", "write_group_outputs", "write_metrics", "metrics_table", "package_versions"]
