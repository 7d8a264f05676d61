"""The backend table: every ``--arch`` has exactly one backend, a bundle's card file names its backend,
and the functions the runner takes from the table train and apply a real model."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest

from m2m_bids import runner
from m2m_bids.backends import (BACKENDS, CLASSICAL, TORCH, Backend, backend_of_arch, backend_of_bundle, bundle_card,
                               known_archs)
from m2m_bids.classical.registry import list_archs
from m2m_bids.models import list_models
from m2m_bids.preproc.cache import TensorCache

sys.path.insert(0, str(Path(__file__).parent / "baselines"))
from planted import arch_config, build_planted, participant_config  # noqa: E402


def test_the_table_lists_both_registries() -> None:
    assert [b.name for b in BACKENDS] == ["torch", "classical"]
    assert TORCH.archs == frozenset(list_models()) and CLASSICAL.archs == frozenset(list_archs())
    assert {"m2m", "swift", "masan", "siamese"} <= TORCH.archs
    assert {"connectome-logreg", "connectome-svc"} == CLASSICAL.archs
    assert len({b.card_file for b in BACKENDS}) == len(BACKENDS)
    assert TORCH.explain_group is not None and CLASSICAL.explain_group is None


def test_every_arch_has_exactly_one_backend() -> None:
    for arch in known_archs():
        owners = [b for b in BACKENDS if arch in b.archs]
        assert owners == [backend_of_arch(arch)], arch
    assert sorted(known_archs()) == sorted(TORCH.archs | CLASSICAL.archs)
    with pytest.raises(KeyError, match="unknown arch 'resnet'"):
        backend_of_arch("resnet")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_a_bundle_is_known_by_its_card_file(tmp_path: Path, backend: Backend) -> None:
    assert backend_of_bundle(tmp_path) is None and bundle_card(tmp_path) is None
    (tmp_path / backend.card_file).write_text(json.dumps({"arch": sorted(backend.archs)[0]}))
    assert backend_of_bundle(tmp_path) is backend
    assert bundle_card(tmp_path) == tmp_path / backend.card_file


def test_the_runner_chooses_the_backend_from_the_table() -> None:
    """The runner names no backend and no card file: both levels ask the table."""
    source = inspect.getsource(runner)
    assert "backend_of_arch(cfg.model.arch)" in source and "backend_of_bundle(bundle)" in source
    for word in ("classical", "card_file", "model-card.json", "train_group", "apply_model"):
        assert word not in source.lower(), word


def test_the_table_trains_and_applies_a_real_bundle(tmp_path: Path) -> None:
    """Group training through ``backend_of_arch`` writes a bundle that ``backend_of_bundle`` routes back
    to the same backend, whose apply writes the held-out participants' predictions."""
    cache = TensorCache(tmp_path / "cache")
    entries, phenotype = build_planted(cache, n_per_class=4, frames=8, atrophy=0.8, seed=3)
    held_out, _ = build_planted(cache, n_per_class=1, frames=8, atrophy=0.8, seed=8, first=31)
    cfg = arch_config(tmp_path, "connectome-logreg", folds=2)
    backend = backend_of_arch(cfg.model.arch)
    result = backend.train(entries, phenotype, cfg, cfg.execution.output_dir)
    assert backend_of_bundle(result.bundle_dir) is backend is CLASSICAL
    assert backend.apply(result.bundle_dir, held_out, participant_config(cfg)) == {}
    predictions = (cfg.execution.output_dir / "predictions.tsv").read_text()
    assert "sub-31" in predictions and "sub-32" in predictions
