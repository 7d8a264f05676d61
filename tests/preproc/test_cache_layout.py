"""Time-first fMRI layout of the tensor cache: windows read bit for bit, layout-1 entries migrated."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from m2m_bids.model_inputs.windows import read_window
from m2m_bids.preproc.cache import CACHE_FORMAT, LAYOUT, CacheEntry, TensorCache
from m2m_bids.preproc.entrymeta import EntryMeta, read_meta


def _run(seed: int = 0, shape: tuple[int, ...] = (6, 5, 4, 9)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"fmri": rng.normal(size=shape).astype(np.float16), "smri": rng.normal(size=shape[:3]).astype(np.float16),
            "mask": (rng.random(shape[:3]) > 0.5).astype(np.uint8)}


def _write_layout1(cache: TensorCache, key: str, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """An entry exactly as layout-1 writers left it: fmri (X,Y,Z,T), no ``layout`` in the manifest."""
    folder = cache.entry_dir(key)
    folder.mkdir(parents=True)
    info = {}
    for name, array in tensors.items():
        file = folder / f"{name}.npy"
        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
        info[name] = {"shape": list(array.shape), "dtype": array.dtype.str, "bytes": file.stat().st_size,
                      "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    manifest = {"format": CACHE_FORMAT, "key": key, "tensors": info,
                "meta": {**meta, "shapes": {n: i["shape"] for n, i in info.items()}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_fmri_stored_time_first_and_windows_match_time_last_slices(cache):
    data = _run()
    entry = cache.put(TensorCache.make_key({}, {"run": 1}), data, EntryMeta(participant="01"))
    stored = np.load(entry.path / "fmri.npy", mmap_mode="r")
    assert stored.shape == (9, 6, 5, 4) and stored.flags.c_contiguous  # (T, X, Y, Z)
    assert entry.time_first and entry.meta.shapes["fmri"] == (6, 5, 4, 9)
    np.testing.assert_array_equal(entry.load("fmri"), data["fmri"])  # the time-last view is unchanged
    for start, frames in [(0, 4), (3, 4), (5, 4), (7, 4), (0, 12)]:
        window = read_window(entry, start, np.empty((frames, 6, 5, 4), np.float16))
        old = data["fmri"][..., start:start + frames]  # what the time-last reader returned
        old = np.concatenate([old, np.repeat(old[..., -1:], frames - old.shape[-1], -1)], -1)
        assert window.tobytes() == np.ascontiguousarray(np.moveaxis(old, -1, 0)).tobytes()


def test_layout1_entry_is_migrated_in_place_once(cache, caplog):
    data = _run(seed=3)
    key = TensorCache.make_key({}, {"run": 2})
    folder = _write_layout1(cache, key, data, {"participant": "02", "task": "rest"})
    with caplog.at_level(logging.INFO, logger="m2m_bids.preproc.cache"):
        entry = cache.get(key)
    assert entry is not None and entry.path == folder and entry.time_first
    assert "time-last fMRI layout 1" in caplog.text
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == LAYOUT and manifest["tensors"]["fmri"]["shape"] == [9, 6, 5, 4]
    meta = read_meta(manifest["meta"])  # the old flat metadata, now written in the current layout
    assert manifest["meta"]["meta_version"] == 1 and meta.task == "rest" and meta.shapes["fmri"] == (6, 5, 4, 9)
    np.testing.assert_array_equal(entry.load("fmri"), data["fmri"])  # bit for bit
    np.testing.assert_array_equal(entry.frames(), np.moveaxis(data["fmri"], -1, 0))
    np.testing.assert_array_equal(entry.load("smri"), data["smri"])
    np.testing.assert_array_equal(entry.load("mask"), data["mask"])
    assert sorted(p.name for p in folder.parent.iterdir()) == [key]  # no temporary or trash folder left
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="m2m_bids.preproc.cache"):
        again = cache.get(key)  # verified against the new checksums; not migrated twice
    assert again is not None and again.time_first and "layout" not in caplog.text


def test_layout1_entry_still_reads_correctly_before_migration(cache):
    data = _run(seed=4)
    key = TensorCache.make_key({}, {"run": 3})
    folder = _write_layout1(cache, key, data, {"participant": "03"})
    legacy = CacheEntry(path=folder, key=key, meta=EntryMeta(participant="03"))  # no layout: time-last file
    assert not legacy.time_first
    np.testing.assert_array_equal(legacy.load("fmri"), data["fmri"])
    np.testing.assert_array_equal(legacy.frames()[2:5], np.moveaxis(data["fmri"][..., 2:5], -1, 0))
    window = read_window(legacy, 7, np.empty((4, 6, 5, 4), np.float16))  # 2 frames left: padded
    np.testing.assert_array_equal(window[:2], np.moveaxis(data["fmri"][..., 7:], -1, 0))
    np.testing.assert_array_equal(window[3], window[1])
