"""File names of the explanation outputs, entities in BIDS order (see docs/outputs.md).

BIDS has no ``stat`` entity nor ``statmap``/``table``/``predictions`` suffixes yet (BEP041 and
XCP-D conventions are followed), so these files are listed in ``.bidsignore``
(:data:`BIDSIGNORE`; bids-validator-deno matches folder names without a trailing slash). The order ``sub ses task run space atlas res stat desc`` keeps the entities
BIDS does know in the order the validator checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENTITY_ORDER = ("sub", "ses", "task", "run", "space", "atlas", "res", "stat", "class", "desc")

#: Patterns for ``.bidsignore`` covering everything this package writes that BIDS cannot name yet.
BIDSIGNORE = ["*_statmap.nii.gz", "*_statmap.json", "*_table.tsv", "*_table.json", "*_predictions.tsv",
              "*_predictions.json", "*_relmat.tsv", "*_relmat.json", "*_timeseries.tsv",
              "*_timeseries.json", "predictions.tsv", "predictions.json", "*.html", "group", "figures",
              "**/figures"]


def res_label(resolution_mm: float) -> str:
    """``3.0 -> "3"``, ``2.5 -> "2p5"`` (labels are alphanumeric)."""
    value = float(resolution_mm)
    return str(int(value)) if value.is_integer() else f"{value:g}".replace(".", "p")


def _clean(value: str) -> str:
    return "".join(ch for ch in str(value) if ch.isalnum())


@dataclass(frozen=True)
class Namer:
    """Builds paths under one OUTPUT_DIR for one participant (and optionally session)."""

    output_dir: Path
    participant: str
    session: str | None = None

    def entities(self, **extra: str | None) -> dict[str, str]:
        ents = {"sub": self.participant, "ses": self.session, **extra}
        return {k: _clean(v) for k, v in ents.items() if v not in (None, "")}

    def name(self, suffix: str, extension: str, **entities: str | None) -> str:
        ents = self.entities(**entities)
        unknown = set(ents) - set(ENTITY_ORDER)
        if unknown:
            raise ValueError(f"unknown entities {sorted(unknown)}")
        parts = [f"{k}-{ents[k]}" for k in ENTITY_ORDER if k in ents]
        return "_".join(parts + [suffix]) + extension

    def path(self, datatype: str | None, suffix: str, extension: str, **entities: str | None) -> Path:
        """``OUTPUT_DIR/sub-X[/ses-Y][/datatype]/<name>``; ``datatype=None`` puts it at ``sub-X/``."""
        folder = self.output_dir / f"sub-{self.participant}"
        if self.session and datatype is not None:
            folder = folder / f"ses-{self.session}"
        if datatype:
            folder = folder / datatype
        return folder / self.name(suffix, extension, **entities)

    def figure(self, suffix: str, **entities: str | None) -> Path:
        """``sub-X/figures/<name>.png`` (fMRIPrep's place for per-participant figures)."""
        return self.output_dir / f"sub-{self.participant}" / "figures" / self.name(suffix, ".png", **entities)
