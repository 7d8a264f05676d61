"""Bounded reading of the small text files a user hands in: config, BIDS filter and label files.

Every one of them is read whole into memory and parsed, so each is checked first: it must exist
(exit 66 otherwise), stay under a size limit (a multi-gigabyte "config" is a mistake or an attack,
not a configuration) and be UTF-8 text (a binary file gives a clear refusal, not a
``UnicodeDecodeError``). YAML is parsed without aliases: they are what makes a few hundred bytes
expand into gigabytes ("billion laughs"), and no m2m-bids setting needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from m2m_bids.exitcodes import AppError, ExitCode

#: Largest config, filter or label file accepted (bytes). Real ones are a few kilobytes.
MAX_TEXT_BYTES = 1_000_000


def read_text_input(path: Path, what: str, *, option: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (a ``what``, given with ``option``), or an :class:`AppError`.

    Missing or unreadable: exit 66. Too large, not a regular file or not UTF-8: exit 64, since the
    user passed the wrong file to ``option``.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        size = path.stat().st_size
    except OSError as err:
        raise AppError(f"the {what} does not exist or is not a file", ExitCode.NO_INPUT, path=str(path),
                       hint=f"check the path given to {option} (inside a container, check the bind mount)") from err
    if size > max_bytes:
        raise AppError(f"the {what} is {size:,} bytes, more than the {max_bytes:,} a {what} may have",
                       ExitCode.USAGE, path=str(path), hint=f"check that {option} names the right file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as err:
        raise AppError(f"cannot read the {what}: {err.strerror}", ExitCode.NO_INPUT, path=str(path),
                       hint="check its permissions") from err
    try:
        return raw[:max_bytes].decode("utf-8")
    except UnicodeDecodeError as err:
        raise AppError(f"the {what} is not UTF-8 text (byte {err.start} cannot be decoded)", ExitCode.USAGE,
                       path=str(path), hint=f"{option} expects a text file; save it as UTF-8") from None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects) that also refuses anchors' aliases (``*name``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in m2m-bids config files",
                event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_NoAliasLoader` (raises :class:`yaml.YAMLError`)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - the loader is a SafeLoader subclass
