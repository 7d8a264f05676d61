"""Every file the app writes goes through one sink, :class:`m2m_bids.bids.derivatives.DerivativesWriter`.

A static check over the package source: a call that writes a file (``nib.save``, ``.to_filename``,
``.write_text``, ``.savefig``, ``to_csv`` to a path, ``json.dump``, ``open`` for writing, the atomic
helpers of :mod:`m2m_bids.io_utils`, ...) may only appear in the sink or in a module of the short
allow-list below, each of which writes something that is not part of the output dataset.
"""

from __future__ import annotations

import ast
from pathlib import Path

import m2m_bids

PACKAGE = Path(m2m_bids.__file__).parent

#: Modules allowed to write files themselves, and why they are not derivatives.
ALLOWED = {
    "bids/derivatives.py": "the sink itself",
    "io_utils.py": "the atomic-write and lock primitives the sink and the tensor cache are built on",
    "preproc/cache.py": "the tensor cache (CACHE_DIR, shared between runs; not part of OUTPUT_DIR)",
    "preproc/content_hash.py": "memoised input digests inside the tensor cache",
    "preproc/steps.py": "intermediate files of the preprocessing nodes, in the nipype work dir",
    "preproc/fmriprep.py": "intermediate files of the fMRIPrep-input nodes, in the nipype work dir",
    "preproc/images.py": "intermediate images of the preprocessing nodes, in the nipype work dir",
    "training/checkpoint.py": "resumable training checkpoints in the work dir (the bundle weights go through the sink)",
    "training/splitrun.py": "the finished-split marker in the work dir, read back by --resume",
    "runtime.py": "the streaming run log (a logging handler appends line by line; it cannot be atomic)",
    "synth/bidsio.py": "writes an input BIDS dataset (m2m-synth), not outputs of the app",
    "synth/dataset.py": "writes an input BIDS dataset (m2m-synth), not outputs of the app",
    "testing.py": "writes tiny input BIDS datasets for tests and the demo, not outputs of the app",
    "demo.py": "writes the demo's own configuration file beside its synthetic input",
}

#: ``module.function`` calls that write a file.
WRITING_FUNCTIONS = {("nib", "save"), ("nibabel", "save"), ("np", "save"), ("np", "savez"),
                     ("np", "savez_compressed"), ("np", "savetxt"), ("numpy", "save"), ("torch", "save"),
                     ("json", "dump"), ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"),
                     ("shutil", "copytree"), ("shutil", "move"), ("logging", "FileHandler"),
                     ("io_utils", "atomic_path"), ("io_utils", "write_text_atomic"), ("io_utils", "write_json_atomic"),
                     ("io_utils", "write_bytes_atomic")}
#: Method names that write a file whatever the object (a path, an image, a figure).
WRITING_METHODS = {"to_filename", "write_text", "write_bytes", "savefig", "touch"}
#: Functions that write a file, called by their bare name (``writer.save_file`` is the sink's own method).
WRITING_NAMES = {"atomic_path", "write_text_atomic", "write_json_atomic", "write_bytes_atomic", "save_file",
                 "FileHandler"}
#: pandas writers: they write when given a path (without one ``to_csv`` returns the text).
PANDAS_WRITERS = {"to_csv", "to_json", "to_parquet", "to_excel", "to_pickle"}


def _open_for_writing(call: ast.Call, mode_at: int) -> bool:
    """``open(path, mode)`` (``mode_at`` 1) or ``path.open(mode)`` (``mode_at`` 0) with a writing mode."""
    mode = call.args[mode_at] if len(call.args) > mode_at else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and isinstance(mode.value, str) and any(c in mode.value for c in "wax+")


def writes(call: ast.Call) -> str | None:
    """What a call writes, or ``None`` when it writes no file."""
    func = call.func
    if isinstance(func, ast.Name):
        if func.id == "open" and _open_for_writing(call, 1):
            return "open(..., 'w')"
        return func.id if func.id in WRITING_NAMES else None
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if (owner, func.attr) in WRITING_FUNCTIONS or func.attr in WRITING_METHODS:
        return f"{owner or '...'}.{func.attr}"
    if func.attr == "open" and _open_for_writing(call, 1 if owner in {"io", "os", "gzip", "bz2", "lzma"} else 0):
        return ".open(..., 'w')"
    if func.attr in PANDAS_WRITERS and (call.args or any(k.arg == "path_or_buf" for k in call.keywords)):
        return f".{func.attr}(path)"
    return None


def file_writes(source: str) -> list[tuple[int, str]]:
    """(line, what) of every file-writing call in a module's source."""
    return [(node.lineno, what) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and (what := writes(node)) is not None]


def test_the_detector_sees_each_way_of_writing() -> None:
    source = "\n".join(["nib.save(img, p)", "img.to_filename(p)", "p.write_text('x')", "fig.savefig(p)",
                        "table.to_csv(p, sep='\\t')", "json.dump(obj, handle)", "open(p, 'w')", "p.open('a')",
                        "write_json_atomic(p, {})", "np.save(p, a)", "logging.FileHandler(p)"])
    assert len(file_writes(source)) == 11
    assert file_writes("table.to_csv(sep='\\t')\nopen(p)\np.read_text()\njson.dumps(obj)") == []


def test_only_the_sink_writes_files() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in ALLOWED:
            continue
        offenders += [f"m2m_bids/{module}:{line}: {what}"
                      for line, what in file_writes(path.read_text(encoding="utf-8"))]
    assert not offenders, "write through m2m_bids.bids.derivatives.DerivativesWriter:\n" + "\n".join(offenders)


def test_the_allow_list_is_short_and_current() -> None:
    """Every allowed module still writes (an entry that no longer does must go)."""
    for module in ALLOWED:
        path = PACKAGE / module
        assert path.is_file() and file_writes(path.read_text(encoding="utf-8")), module
