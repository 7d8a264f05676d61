"""Where the explanation outputs go, per participant (see docs/outputs.md).

Paths come from :class:`m2m_bids.bids.derivatives.DerivativesWriter` (the one entity grammar of the
package), which also writes the files. BIDS has no ``stat`` entity nor ``statmap``/``table``/
``predictions`` suffixes yet (BEP041 and XCP-D conventions are followed); the writer's default
``.bidsignore`` lists them.
What this module adds: labels cleaned to alphanumerics (an arch like ``swift-lf`` becomes
``desc-swiftlf``) and per-participant tables at ``sub-X/`` even when a session is named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from m2m_bids.bids.derivatives import DerivativesWriter, bids_filename, clean_label, res_label

__all__ = ["Namer", "res_label"]


@dataclass(frozen=True)
class Namer:
    """Builds the paths of one participant (and optionally session) under the writer's OUTPUT_DIR."""

    writer: DerivativesWriter
    participant: str
    session: str | None = None

    def entities(self, **extra: str | None) -> dict[str, str]:
        ents = {"sub": self.participant, "ses": self.session, **extra}
        return {k: clean_label(v) for k, v in ents.items() if v not in (None, "")}

    def path(self, datatype: str | None, suffix: str, extension: str, **entities: str | None) -> Path:
        """``OUTPUT_DIR/sub-X[/ses-Y][/datatype]/<name>``; ``datatype=None`` puts it at ``sub-X/``."""
        ents = self.entities(**entities)
        if datatype is None:
            return self.writer.output_path(f"sub-{ents['sub']}", bids_filename(ents, suffix, extension))
        return self.writer.build_path(ents, suffix, extension, datatype)

    def figure(self, suffix: str, **entities: str | None) -> Path:
        """``sub-X/figures/<name>.png`` (fMRIPrep's place for per-participant figures)."""
        return self.writer.figure_path(self.entities(**entities), suffix, ".png")
