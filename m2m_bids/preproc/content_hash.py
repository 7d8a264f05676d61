"""sha256 of input files for the tensor-cache key, remembered by (path, size, mtime).

Why: a key built from path, size and mtime alone misses a file rewritten with new bytes in the
same second and the same size, and rebuilds after a mere ``touch`` or copy. Hashing the bytes
makes the key follow the content. The compressed bytes are hashed once; the digest is stored in a
small file named after (resolved path, size, mtime_ns), so planning a large dataset again reads
no image.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

_CHUNK = 1 << 22


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ContentHashes:
    """Digests of files, remembered under ``folder`` (shared between processes; writes are atomic)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None

    def digest(self, path: Path) -> str:
        """sha256 of ``path``'s bytes, read from the memo when its path, size and mtime are unchanged."""
        path = Path(path).resolve()
        stat = path.stat()
        if self.folder is None:
            return sha256_file(path)
        stamp = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        memo = self.folder / stamp[:2] / stamp
        try:
            text = memo.read_text(encoding="ascii").strip()
            if len(text) == 64:
                return text
        except OSError:
            pass
        value = sha256_file(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.parent / f".{stamp[:16]}-{uuid.uuid4().hex}"
        tmp.write_text(value, encoding="ascii")
        os.replace(tmp, memo)
        return value
