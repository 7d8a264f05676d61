"""The hostile dataset (hostile.py): every defective participant named with its file and fix, the
others processed, no traceback, the input untouched."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import EXPECTED, make_hostile_dataset, tree_digest

from m2m_bids.exitcodes import ExitCode


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hostile_dataset(tmp_path_factory.mktemp("hostile") / "bids")


def _blocks(text: str) -> dict[str, str]:
    """``sub-<label>`` -> its error block (the ERROR line plus its ``file:``/``fix:`` lines)."""
    blocks: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.search(r"ERROR .*? sub-(\w+): ", line)
        if found and found.group(1) not in blocks:
            blocks[found.group(1)] = "\n".join(lines[i:i + 3])
    return blocks


def test_defects_are_found_per_participant_before_preprocessing(hostile: Path) -> None:
    from m2m_bids.bids.layout import collect_participants
    from m2m_bids.preflight import build_config

    cfg = build_config({"execution": {"bids_dir": str(hostile), "output_dir": str(hostile.parent / "dry"),
                                      "analysis_level": "participant"}})
    participants, problems = collect_participants(cfg.execution, cfg.preproc)
    codes = {p.label: p.code for p in problems}
    header_level = {label: code for label, (_, code, _) in EXPECTED.items() if code is not None and label != "02"}
    assert codes == header_level
    assert sorted(p.label for p in participants) == ["01", "02", "09"]


@pytest.fixture(scope="module")
def hostile_run(hostile: Path, tmp_path_factory: pytest.TempPathFactory):
    """One participant-level run of the hostile dataset: (output dir, finished process, input digest before)."""
    before = tree_digest(hostile)
    root = tmp_path_factory.mktemp("hostile-run")
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "m2m_bids", str(hostile), str(out), "participant",
                           "--skip-bids-validation", "--preset", "tiny", "--nprocs", "2"],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "TMPDIR": str(root)})
    return out, done, before


@pytest.mark.integration
def test_hostile_dataset_run(hostile: Path, hostile_run) -> None:
    out, done, before = hostile_run
    assert done.returncode == ExitCode.FAILURE  # 65 and 66 both occurred
    assert "Traceback" not in done.stderr + done.stdout
    blocks = _blocks(done.stderr)
    for label, (_, code, words) in EXPECTED.items():
        if code is None:
            assert label not in blocks, blocks.get(label)
            continue
        assert words in blocks[label], blocks.get(label)
        assert f"sub-{label}" in blocks[label].split("file:")[1], blocks[label]
    assert "details: " in blocks["02"]  # the crash file that holds the traceback is named
    assert "3 participant(s) selected" in done.stderr and "9 more refused" in done.stderr
    log = next((out / "logs").glob("*/m2m.log")).read_text()
    assert "sub-09: SliceTiming values reach" in log
    cached = list((out / "work" / "tensor-cache").rglob("manifest.json"))
    assert len(cached) == 2  # sub-01 and sub-09
    assert tree_digest(hostile) == before


def _write_bundle(folder: Path, tamper: str) -> Path:
    """A structurally complete tiny m2m bundle for the 16^3 grid, then one ``tamper`` applied to its card."""
    from m2m_bids.models import create_model
    from m2m_bids.models.registry import model_info
    from m2m_bids.training.checkpoint import save_weights

    model = create_model("m2m", num_classes=2, img_size=16, frames=4, preset="tiny")
    weights = save_weights(folder / "weights.safetensors", model.state_dict())
    card = {"arch": "m2m", "model": model_info(model), "classes": ["CN", "AD"], "splits": {},
            "weights": {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}}
    if tamper == "no-sha256":
        del card["weights"]["sha256"]
    elif tamper == "outside":
        card["weights"]["file"] = "../../../../etc/passwd"
    elif tamper == "classes":
        card["classes"] = ["CN", "MCI", "AD"]
    elif tamper == "corrupt":
        weights.write_bytes(b"\x00" * 16)
        card["weights"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "model-card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("tamper, words", [
    ("no-sha256", "no SHA-256"), ("outside", "inside the bundle folder"),
    ("classes", "3 classes for a network with 2 outputs"), ("corrupt", "do not fit"),
])
def test_tampered_bundles_are_refused_by_the_app(m2m, hostile: Path, hostile_run, tmp_path: Path,
                                                tamper: str, words: str) -> None:
    out, _, before = hostile_run
    bundle = _write_bundle(tmp_path / "model-m2m", tamper)
    result = m2m(hostile, out, "participant", "--skip-bids-validation", "--preset", "tiny", "--nprocs", "1",
                 "--participant-label", "01", "--model", bundle)
    assert result.code == ExitCode.DATA_ERROR and words in result.err
    assert not (out / "predictions.tsv").exists() and not list(out.glob("sub-01/*predictions*"))
    assert tree_digest(hostile) == before
