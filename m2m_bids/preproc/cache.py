"""Content-addressed tensor cache: one verified folder of ``.npy`` tensors per preprocessed BOLD run.

Why this shape:

* **Content-addressed.** The key is a sha256 over every input file (resolved path and the sha256
  of its bytes, :mod:`m2m_bids.preproc.content_hash`) plus every preprocessing parameter plus the
  m2m_bids version, so a changed input or option can never silently reuse stale tensors, and
  identical work is never repeated.
* **Memory-mappable, time first.** Images are float16 ``.npy`` files. The fMRI run is stored
  ``(T, X, Y, Z)`` (layout version :data:`LAYOUT`), so a training window of consecutive frames is one
  contiguous byte range of the mapped file: a 20-frame window of a 96^3 x 300 run reads its 35 MB,
  where time-last storage touched every page of the 530 MB run. Entries written time-last (layout 1)
  are rewritten time-first the first time they are read (:meth:`TensorCache.get`).
* **Atomic and concurrent-safe.** An entry is written into a temporary folder next to its final
  place, every file is fsynced, then the folder is renamed into place. ``rename`` of a directory onto
  an existing non-empty one fails on POSIX, so of two writers of the same key the first wins and the
  second discards its copy and reuses the winner's (SLURM array jobs sharing one cache).
* **Verified on read.** ``manifest.json`` records shape, dtype, size and sha256 of each tensor; a
  partial or corrupt entry (killed job, full disk, bit rot) is removed and reported as a miss, so it
  is rebuilt and never used.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m2m_bids import __version__
from m2m_bids.preproc.content_hash import ContentHashes, sha256_file
from m2m_bids.preproc.entrymeta import EntryMeta, Provenance, evolve, read_meta, to_manifest

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Bump when the on-disk tensors change: old entries then simply miss. 2: content-hash key,
#: ``brain_mask`` tensor and QC figures. (The metadata layout is versioned on its own,
#: :mod:`m2m_bids.preproc.entrymeta`.)
CACHE_FORMAT = 2
#: fMRI array layout, recorded in the manifest as ``layout``: 1 = ``(X, Y, Z, T)`` (no field),
#: 2 = ``(T, X, Y, Z)``. Older layouts are migrated in place on read, so the key stays the same.
LAYOUT = 2
#: Tensor names and the dtype each is stored as.
TENSOR_DTYPES: dict[str, np.dtype] = {
    "fmri": np.dtype(np.float16),
    "smri": np.dtype(np.float16),
    "mask": np.dtype(np.uint8),
    "brain_mask": np.dtype(np.uint8),
    "gm": np.dtype(np.float16),
    "alff": np.dtype(np.float16),
    "falff": np.dtype(np.float16),
    "bold_mean": np.dtype(np.float16),
    "pet": np.dtype(np.float16),
}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` durably (file and folder fsynced) and return it as read back."""
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    with open(folder / MANIFEST, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(folder)
    return json.loads(text)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_time_first(time_last: np.ndarray, file: Path) -> np.ndarray:
    """Write an ``(X, Y, Z, T)`` array as ``(T, X, Y, Z)`` in slabs of X (each read contiguous), fsynced."""
    out = np.lib.format.open_memmap(file, mode="w+", dtype=time_last.dtype,
                                    shape=(time_last.shape[-1], *time_last.shape[:-1]))
    slab = max(1, (64 << 20) // max(1, time_last[0].nbytes))  # ~64 MB of X-slabs per write
    for x in range(0, time_last.shape[0], slab):
        out[:, x:x + slab] = np.moveaxis(np.asarray(time_last[x:x + slab]), -1, 0)
    out.flush()
    del out
    with open(file, "rb+") as handle:
        os.fsync(handle.fileno())
    return np.load(file, mmap_mode="r", allow_pickle=False)


def _file_identity(value: Any, hashes: ContentHashes) -> Any:
    """Identity of an input: for a file path its resolved path and content sha256; else the value."""
    if isinstance(value, (list, tuple)):
        return [_file_identity(v, hashes) for v in value]
    if isinstance(value, dict):
        return {str(k): _file_identity(v, hashes) for k, v in sorted(value.items())}
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isfile(value)):
        path = Path(value).resolve()
        try:
            return {"path": str(path), "sha256": hashes.digest(path)}
        except OSError:
            return {"path": str(path), "missing": True}
    return value


@dataclass(frozen=True)
class CacheEntry:
    """One preprocessed sample: one BOLD run of one participant/session, with that session's T1w.

    ``meta`` is the typed metadata (:class:`~m2m_bids.preproc.entrymeta.EntryMeta`); ``tensors``
    is the manifest's record of each tensor file (shape, dtype, bytes, sha256) and ``layout`` the
    fMRI array layout (:data:`LAYOUT`).
    """

    path: Path
    key: str
    meta: EntryMeta
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    layout: int = 1

    @property
    def names(self) -> list[str]:
        """Tensor names held by this entry."""
        return sorted(self.tensors)

    def load(self, name: str, mmap: bool = True) -> np.ndarray:
        """``fmri`` (X,Y,Z,T) float16, ``mask`` (X,Y,Z) uint8, or an (X,Y,Z) float16 map: ``smri``,
        ``gm``, ``alff``, ``falff``, ``bold_mean`` (see :mod:`m2m_bids.preproc.maps`), and ``pet`` when
        the session has a PET (:mod:`m2m_bids.preproc.pet`).

        Memory-mapped read-only by default. ``fmri`` is a time-last *view* of the time-first file:
        whole-run consumers keep their ``(X,Y,Z,T)`` indexing; window readers use :meth:`frames`.
        """
        array = self._array(name, mmap)
        return array.transpose(1, 2, 3, 0) if name == "fmri" and self.time_first else array

    @property
    def time_first(self) -> bool:
        """Whether the fMRI file is stored ``(T, X, Y, Z)`` (layout 2 and later)."""
        return self.layout >= 2

    def frames(self, mmap: bool = True) -> np.ndarray:
        """The fMRI run ``(T, X, Y, Z)`` float16, as stored: ``frames()[t:t + n]`` is one contiguous read
        of ``n`` frames (a strided view of a layout-1 file, which :meth:`TensorCache.get` migrates).
        """
        array = self._array("fmri", mmap)
        return array if self.time_first else array.transpose(3, 0, 1, 2)

    def read_frames(self, start: int, out: np.ndarray) -> int:
        """Copy frames ``start:start + len(out)`` into ``out`` ``(n, X, Y, Z)``; returns how many the run had.

        Time-first files are read with positioned reads straight into ``out`` -- the kernel's one
        copy from the page cache, without mapping (page faults made a mapped copy 2-3x slower).
        """
        run = self.frames()
        n = max(0, min(out.shape[0], run.shape[0] - start))
        if not (self.time_first and out.flags.c_contiguous and isinstance(run, np.memmap)):
            out[:n] = run[start:start + n]
            return n
        view = memoryview(out[:n]).cast("B")
        offset, done = run.offset + start * run[0].nbytes, 0
        fd = os.open(self.path / "fmri.npy", os.O_RDONLY)
        try:
            while done < len(view):
                got = os.preadv(fd, [view[done:]], offset + done)
                if got <= 0:
                    raise OSError(f"{self.path / 'fmri.npy'} ended early (cache entry {self.key}); "
                                  "delete the entry folder to rebuild it")
                done += got
        finally:
            os.close(fd)
        return n

    def _array(self, name: str, mmap: bool) -> np.ndarray:
        file = self.path / f"{name}.npy"
        if not file.is_file():
            raise KeyError(f"cache entry {self.key} has no tensor {name!r} (has {self.names})")
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)


class TensorCache:
    """A folder of cache entries, ``<root>/<key[:2]>/<key>/``; safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- keys ----------------------------------------------------------------------------------
    @staticmethod
    def make_key(inputs: dict[str, Any], params: dict[str, Any], hashes: ContentHashes | None = None) -> str:
        """sha256 over input file identities + every preprocessing parameter + package version.

        ``inputs`` maps a role (``"t1w"``, ``"bold"``) to a path (or list of paths, or plain
        values such as a sidecar dict); ``params`` is every option that changes the tensors.
        ``hashes`` remembers file digests (:meth:`content_hashes`); without it files are hashed.
        """
        payload = {
            "format": CACHE_FORMAT,
            "version": __version__,
            "inputs": _file_identity(dict(inputs), hashes or ContentHashes(None)),
            "params": params,
        }
        text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def content_hashes(self) -> ContentHashes:
        """The input-file digests remembered in this cache (``<root>/.hashes/``)."""
        return ContentHashes(self.root / ".hashes")

    def entry_dir(self, key: str) -> Path:
        """Where the entry of ``key`` lives (whether or not it exists)."""
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / key[:2] / key

    # -- read ----------------------------------------------------------------------------------
    def get(self, key: str, verify: bool = True) -> CacheEntry | None:
        """The verified entry of ``key``, or ``None``; a corrupt or partial entry is removed."""
        folder = self.entry_dir(key)
        if not folder.is_dir():
            return None
        try:
            entry = self._verified_entry(folder, key, verify)
        except (OSError, ValueError, KeyError) as err:
            log.warning("tensor cache entry %s is corrupt or incomplete (%s): removing it; it will be rebuilt",
                        folder, err)
            self._remove(folder)
            return None
        if entry.layout < LAYOUT and "fmri" in entry.tensors:
            return self._migrate(entry)
        return entry

    def _verified_entry(self, folder: Path, key: str, verify: bool) -> CacheEntry:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT:
            raise ValueError("manifest key/format mismatch")
        for name, info in manifest["tensors"].items():
            file = folder / f"{name}.npy"
            if file.stat().st_size != info["bytes"]:
                raise ValueError(f"{file.name} has {file.stat().st_size} bytes, manifest says {info['bytes']}")
            if verify and sha256_file(file) != info["sha256"]:
                raise ValueError(f"{file.name} checksum mismatch")
        return CacheEntry(path=folder, key=key, meta=read_meta(manifest["meta"]), tensors=dict(manifest["tensors"]),
                          layout=int(manifest.get("layout", 1)))

    # -- migrate -------------------------------------------------------------------------------
    def _migrate(self, entry: CacheEntry) -> CacheEntry | None:
        """Rewrite a time-last (layout 1) entry time-first under the same key, atomically.

        The other tensors are hard-linked (copied where links are not supported), the fMRI array
        is transposed slab by slab (one pass over the old file), then the old folder is moved aside
        and the new one renamed into place. A concurrent migrator or reader never sees a half
        entry: the loser of the rename discards its copy and reads the winner's.
        """
        folder, key = entry.path, entry.key
        log.info("tensor cache entry %s has the time-last fMRI layout %d: rewriting it time-first (layout %d)",
                 folder, entry.layout, LAYOUT)
        tmp = folder.parent / f".tmp-{key[:16]}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for file in folder.iterdir():
                if file.name not in ("fmri.npy", MANIFEST):
                    _link_or_copy(file, tmp / file.name)
            fmri = _write_time_first(np.load(folder / "fmri.npy", mmap_mode="r", allow_pickle=False),
                                     tmp / "fmri.npy")
            tensors = dict(entry.tensors)
            tensors["fmri"] = {"shape": list(fmri.shape), "dtype": fmri.dtype.str,
                               "bytes": (tmp / "fmri.npy").stat().st_size, "sha256": sha256_file(tmp / "fmri.npy")}
            _write_manifest(tmp, {"format": CACHE_FORMAT, "layout": LAYOUT, "key": key, "tensors": tensors,
                                  "meta": to_manifest(entry.meta)})
            trash = folder.parent / f".trash-{key[:16]}-{uuid.uuid4().hex}"
            os.rename(folder, trash)
        except OSError:  # another process migrated or removed it first
            shutil.rmtree(tmp, ignore_errors=True)
            return self.get(key)
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
        _fsync_dir(folder.parent)
        return self.get(key, verify=False)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def keys(self) -> list[str]:
        """Keys of the entries present (unverified)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.glob("??/*") if p.is_dir() and not p.name.startswith("."))

    # -- write ---------------------------------------------------------------------------------
    def put(self, key: str, tensors: dict[str, np.ndarray], meta: EntryMeta) -> CacheEntry:
        """Store ``tensors`` under ``key`` atomically and return the entry.

        ``fmri`` is given ``(X, Y, Z, T)`` like every other image and stored time-first. Images are
        cast to their storage dtype (:data:`TENSOR_DTYPES`; float16 for unknown names).
        If another process stored the same key first, its entry is verified and returned.
        """
        final = self.entry_dir(key)
        existing = self.get(key)
        if existing is not None:
            return existing
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key[:16]}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            manifest = self._write_tensors(tmp, key, tensors, meta)
            os.rename(tmp, final)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            winner = self.get(key)
            if winner is None:  # the other writer's entry was corrupt and has been removed: retry once
                return self.put(key, tensors, meta)
            log.debug("tensor cache: another process stored %s first; reusing it", key)
            return winner
        _fsync_dir(final.parent)
        return CacheEntry(path=final, key=key, meta=read_meta(manifest["meta"]), tensors=manifest["tensors"],
                          layout=LAYOUT)

    def _write_tensors(self, folder: Path, key: str, tensors: dict[str, np.ndarray],
                       meta: EntryMeta) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for name, array in tensors.items():
            dtype = TENSOR_DTYPES.get(name, np.dtype(np.float16))
            data = np.asarray(array)
            if name == "fmri":  # given (X, Y, Z, T), stored (T, X, Y, Z)
                data = np.moveaxis(data, -1, 0)
            data = np.ascontiguousarray(data, dtype=dtype)
            file = folder / f"{name}.npy"
            with open(file, "wb") as handle:
                np.save(handle, data, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            info[name] = {"shape": list(data.shape), "dtype": data.dtype.str, "bytes": file.stat().st_size,
                          "sha256": sha256_file(file)}
        shapes = {n: list(i["shape"]) for n, i in info.items()}
        if "fmri" in shapes:  # the run's (X, Y, Z, T), whatever the storage order
            t, *space = shapes["fmri"]
            shapes["fmri"] = [*space, t]
        made = meta.provenance
        provenance = Provenance.model_validate({
            **made.model_dump(), "version": made.version or __version__,
            "created": made.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        full_meta = evolve(meta, shapes=shapes, provenance=provenance)
        return _write_manifest(folder, {"format": CACHE_FORMAT, "layout": LAYOUT, "key": key, "tensors": info,
                                        "meta": to_manifest(full_meta)})

    @staticmethod
    def _remove(folder: Path) -> None:
        """Move aside first (atomic), then delete: a concurrent reader never sees half a folder."""
        trash = folder.parent / f".trash-{folder.name[:16]}-{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
