"""Model bundles are verified before use, and ``model_id`` names the model, not one training run.

Every tampering a user or an attacker can do to ``models/model-<arch>/`` ends in exit 65 (or 66
for a missing file) with the file named, never in a traceback, never in silently used weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from run_config import tiny_config
from synth_cache import build_dataset

from m2m_bids.exitcodes import AppError, ExitCode
from m2m_bids.interpret.bundle import load_bundle
from m2m_bids.training.api import train_group

BUNDLE = Path("models") / "model-m2m"


@pytest.fixture(scope="module")
def two_trainings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny group run twice, in two folders: bit-identical retrains."""
    from m2m_bids.preproc.cache import TensorCache

    root = tmp_path_factory.mktemp("bundles")
    entries, phenotype = build_dataset(TensorCache(root / "cache"), n_per_class=3, effect=3.0, seed=1)
    bundles = []
    for name in ("first", "second"):
        cfg = tiny_config(root / name, folds=2, epochs=1, checkpoint_every=1)
        train_group(entries, phenotype, cfg, cfg.execution.output_dir)
        bundles.append(cfg.execution.output_dir / BUNDLE)
    return bundles[0], bundles[1]


@pytest.fixture
def bundle(two_trainings: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of a good bundle, free to tamper with."""
    return Path(shutil.copytree(two_trainings[0], tmp_path / "model-m2m"))


def _edit_card(bundle: Path, edit) -> None:
    path = bundle / "model-card.json"
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card))


def _refusal(bundle: Path) -> AppError:
    with pytest.raises(AppError) as err:
        load_bundle(bundle)
    return err.value


def test_identical_retrains_have_the_same_model_id(two_trainings: tuple[Path, Path]) -> None:
    first, second = (load_bundle(b) for b in two_trainings)
    cards = [json.loads((b / "model-card.json").read_text()) for b in two_trainings]
    assert cards[0]["run_id"] != cards[1]["run_id"]
    assert first.model_id == second.model_id == cards[0]["model_id"] == cards[1]["model_id"]
    assert first.model_id.startswith("m2m@")
    # one metadata key: the weights files are byte-identical too
    assert cards[0]["weights"]["sha256"] == cards[1]["weights"]["sha256"]


def test_model_id_changes_with_the_tensors(bundle: Path) -> None:
    from safetensors.torch import load_file, save_file

    before = load_bundle(bundle).model_id
    weights = load_file(str(bundle / "weights.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, str(bundle / "weights.safetensors"))
    digest = hashlib.sha256((bundle / "weights.safetensors").read_bytes()).hexdigest()
    _edit_card(bundle, lambda card: card["weights"].update(sha256=digest))
    assert load_bundle(bundle).model_id != before


def test_card_without_sha256_is_refused(bundle: Path) -> None:
    _edit_card(bundle, lambda card: card["weights"].pop("sha256"))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "SHA-256" in err.message and err.path.endswith("model-card.json")


@pytest.mark.parametrize("name", ["../weights.safetensors", "/etc/passwd", "sub/weights.safetensors", ".."])
def test_weights_file_outside_the_bundle_is_refused(bundle: Path, name: str) -> None:
    _edit_card(bundle, lambda card: card["weights"].update(file=name))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "inside the bundle folder" in err.message


def test_weights_symlink_leaving_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    (bundle / "weights.safetensors").rename(outside)
    (bundle / "weights.safetensors").symlink_to(outside)
    assert "links outside" in _refusal(bundle).message


def test_tampered_weights_are_refused(bundle: Path) -> None:
    path = bundle / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "checksum" in err.message


def test_corrupt_safetensors_with_matching_checksum_is_exit_65(bundle: Path) -> None:
    """An attacker who also rewrites the checksum: safetensors' own error becomes exit 65."""
    path = bundle / "weights.safetensors"
    path.write_bytes(b"\xff" * 64)
    _edit_card(bundle, lambda card: card["weights"].update(sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "do not fit" in err.message and err.path == str(path)


def test_card_classes_must_match_the_network(bundle: Path) -> None:
    _edit_card(bundle, lambda card: card.update(classes=["CN", "MCI", "AD"]))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "3 classes for a network with 2 outputs" in err.message


def test_card_config_that_builds_another_network_is_refused(bundle: Path) -> None:
    _edit_card(bundle, lambda card: card["model"]["config"].update(embed_dim=card["model"]["config"]["embed_dim"] * 2))
    err = _refusal(bundle)
    assert err.code == ExitCode.DATA_ERROR and "do not fit" in err.message


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"[1, 2]", b"{\"model\": 1"])
def test_broken_cards_are_exit_65(bundle: Path, content: bytes) -> None:
    (bundle / "model-card.json").write_bytes(content)
    assert _refusal(bundle).code == ExitCode.DATA_ERROR
