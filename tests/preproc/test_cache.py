"""Tensor cache: round trip, corruption detection, concurrent writers, key sensitivity."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from m2m_bids.preproc.cache import CacheEntry, TensorCache
from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fmri": rng.normal(size=(8, 8, 8, 5)).astype(np.float32),
        "smri": rng.normal(size=(8, 8, 8)).astype(np.float32),
        "mask": (rng.random((8, 8, 8)) > 0.5).astype(np.uint8),
    }


def test_round_trip_fp16_mmap(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path / "cache")
    key = TensorCache.make_key({"bold": "x"}, {"fwhm": 6})
    assert cache.get(key) is None
    data = _tensors()
    entry = cache.put(key, data, EntryMeta(participant="01", bold=BoldRecord(task="rest")))
    again = cache.get(key)
    assert isinstance(again, CacheEntry) and again.key == key and again.path == entry.path
    fmri = again.load("fmri")
    assert isinstance(fmri, np.memmap) and fmri.dtype == np.float16 and fmri.shape == (8, 8, 8, 5)
    np.testing.assert_allclose(fmri, data["fmri"], atol=2e-3, rtol=1e-3)
    assert again.load("mask", mmap=False).dtype == np.uint8
    np.testing.assert_array_equal(again.load("mask"), data["mask"])
    assert again.meta == entry.meta and again.meta.participant == "01" and again.meta.shapes["smri"] == (8, 8, 8)
    assert again.meta.provenance.created and again.meta.provenance.version
    with pytest.raises(KeyError):
        again.load("nothing")


def test_corrupt_and_partial_entries_are_removed_and_rebuilt(tmp_path: Path, caplog) -> None:
    cache = TensorCache(tmp_path)
    key = TensorCache.make_key({"bold": "y"}, {"fwhm": 6})
    entry = cache.put(key, _tensors(), EntryMeta(participant="01"))
    raw = bytearray((entry.path / "smri.npy").read_bytes())
    raw[-1] ^= 0xFF  # flip one byte, same size: only the checksum can tell
    (entry.path / "smri.npy").write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        assert cache.get(key) is None
    assert "corrupt" in caplog.text and not entry.path.exists()
    rebuilt = cache.put(key, _tensors(), EntryMeta(participant="01"))
    assert cache.get(key) is not None and rebuilt.load("smri").shape == (8, 8, 8)
    # a partial entry (killed writer: manifest lost) is a miss too
    (rebuilt.path / "manifest.json").unlink()
    assert cache.get(key) is None
    # truncated tensor
    entry = cache.put(key, _tensors(), EntryMeta(participant="01"))
    with open(entry.path / "fmri.npy", "r+b") as handle:
        handle.truncate(100)
    assert cache.get(key) is None


def _writer(root: str, key: str, seed: int, queue) -> None:
    entry = TensorCache(Path(root)).put(key, _tensors(seed), EntryMeta(participant=str(seed)))
    queue.put(entry.meta.participant)


def test_concurrent_put_same_key(tmp_path: Path) -> None:
    key = TensorCache.make_key({"bold": "z"}, {"fwhm": 6})
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), key, seed, queue)) for seed in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    writers = {queue.get(timeout=5), queue.get(timeout=5)}
    entry = TensorCache(tmp_path).get(key)
    assert entry is not None
    # both processes got a valid entry; whichever they returned is the one on disk or an identical reuse
    assert entry.meta.participant in writers
    leftovers = [p.name for p in (tmp_path / key[:2]).iterdir() if p.name != key]
    assert leftovers == []


def test_key_changes_with_every_param_and_input(tmp_path: Path) -> None:
    bold = tmp_path / "bold.nii.gz"
    bold.write_bytes(b"abc")
    params = {"fwhm_mm": 6.0, "resolution_mm": 3.0, "grid_shape": [64, 64, 64], "registration": "affine"}
    base = TensorCache.make_key({"bold": bold}, params)
    assert base == TensorCache.make_key({"bold": bold}, dict(reversed(list(params.items()))))
    for name, value in [("fwhm_mm", 5.0), ("resolution_mm", 2.0), ("grid_shape", [48, 48, 48]),
                        ("registration", "syn")]:
        assert TensorCache.make_key({"bold": bold}, {**params, name: value}) != base, name
    bold.write_bytes(b"abcd")  # content (size) change
    assert TensorCache.make_key({"bold": bold}, params) != base
    other = tmp_path / "other.nii.gz"
    other.write_bytes(b"abcd")
    assert TensorCache.make_key({"bold": other}, params) != TensorCache.make_key({"bold": bold}, params)


def test_manifest_is_readable_json(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path)
    key = TensorCache.make_key({}, {"a": 1})
    entry = cache.put(key, _tensors(), EntryMeta(participant="02"))
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["tensors"]["fmri"]["dtype"] == "<f2" and len(manifest["tensors"]["fmri"]["sha256"]) == 64
    assert cache.keys() == [key]
