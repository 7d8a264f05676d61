"""Where the explanation outputs go, per participant (see docs/outputs.md).

Names come from :func:`m2m_bids.bids.derivatives.bids_filename` (the one entity grammar of the
package). BIDS has no ``stat`` entity nor ``statmap``/``table``/``predictions`` suffixes yet
(BEP041 and XCP-D conventions are followed); the writer's default ``.bidsignore`` lists them.
What this module adds: labels cleaned to alphanumerics (an arch like ``swift-lf`` becomes
``desc-swiftlf``) and per-participant tables at ``sub-X/`` even when a session is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from m2m_bids.bids.derivatives import bids_filename, res_label

__all__ = ["Namer", "res_label"]

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
        return bids_filename(self.entities(**entities), suffix, extension)

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
