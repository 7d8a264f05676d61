"""Training and ``apply`` feed a participant's runs to the model identically.

A synthetic BIDS dataset (:mod:`m2m_bids.synth`) is put into a real tensor cache; the group-level
training path (participants.tsv read by the runner's reader, fold-fitted tabular encoder,
``SplitRunner`` datasets, ``predict`` through the training loader) and the application path
(the encoder from the model card, ``tabular_features``, ``score_run``) then run the same model on
the same held-out participant. A forward pre-hook records what reaches the model on each path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from m2m_bids.bids.participants import read_participants
from m2m_bids.interpret.api import tabular_features
from m2m_bids.interpret.bundle import Bundle
from m2m_bids.interpret.inference import score_run
from m2m_bids.model_inputs.batch import InputSpec, run_inputs, to_model
from m2m_bids.model_inputs.tabular import TabularEncoder
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.preproc.entrymeta import BoldRecord, EntryMeta
from m2m_bids.synth import SynthSpec, generate_dataset
from m2m_bids.training.distributed import Dist
from m2m_bids.training.labels import derive_labels
from m2m_bids.training.loop import predict
from m2m_bids.training.splitrun import SplitRunner
from m2m_bids.training.splits import Split

GRID = (slice(8, 24), slice(8, 24), slice(4, 20))  # a 16^3 block of the BOLD grid (the tiny model's size)
HELD_OUT = "04"
CPU = Dist(0, 0, 1, torch.device("cpu"))


def _standardised(volume: np.ndarray) -> np.ndarray:
    return ((volume - volume.mean()) / (volume.std() + 1e-6)).astype(np.float16)


def _cache_synthetic(bids: Path, cache: TensorCache) -> list[Any]:
    """One cache entry per participant: the BOLD run and the T1w (every second voxel) on a 16^3 grid."""
    entries = []
    for p in read_participants(bids).index:
        bold = nib.load(bids / f"sub-{p}" / "func" / f"sub-{p}_task-rest_bold.nii.gz").get_fdata(dtype=np.float32)
        t1w = nib.load(bids / f"sub-{p}" / "anat" / f"sub-{p}_T1w.nii.gz").get_fdata(dtype=np.float32)
        tensors = {"fmri": _standardised(bold[GRID]), "smri": _standardised(t1w[::2, ::2, ::2][GRID])}
        meta = EntryMeta(participant=p, bold=BoldRecord(task="rest", repetition_time=2.0))
        entries.append(cache.put(f"{int(p):064x}", tensors, meta))
    return entries


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two paths' ingredients: the training datasets and model, and the applied bundle."""
    from conftest import tiny_config
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train-apply")
    bids = generate_dataset(root / "bids", SynthSpec.preset("tiny", n_participants=4, classes=("CN", "AD"), seed=3))
    entries = _cache_synthetic(bids, TensorCache(root / "cache"))
    cfg = tiny_config(root, tabular_columns=["age", "sex", "MMSE"])
    phenotype = read_participants(bids)  # as the runner reads it for training
    participants = sorted(phenotype.index)
    labels = derive_labels(phenotype, participants, label_column="diagnosis", classes=["CN", "AD"])
    runner = SplitRunner(entries, phenotype, labels, cfg, CPU, root / "run")
    split = Split("fold-1", train=("01", "02", "03"), val=(), test=(HELD_OUT,))
    encoder = TabularEncoder.fit(phenotype.reindex(list(split.train)), list(cfg.train.tabular_columns))
    torch.manual_seed(0)
    model = runner.build_model(encoder.n_features).eval()
    train_set, _, test_set = runner.datasets(split, encoder, model)
    card = json.loads(json.dumps({"tabular": encoder.to_dict()}))  # through JSON, as the model card
    bundle = Bundle(path=root / "bundle", card=card, model=model)
    entry = next(e for e in entries if e.meta.participant == HELD_OUT)
    return {"bids": bids, "cfg": cfg, "model": model, "train_set": train_set, "test_set": test_set,
            "bundle": bundle, "entry": entry}


def _recorded(model: torch.nn.Module, call: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """What ``call()`` hands to ``model``'s forward, concatenated over its calls, and its result."""
    seen: list[dict[str, torch.Tensor]] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(
        {k: v.detach().clone() for k, v in kw.items() if v is not None}), with_kwargs=True)
    try:
        result = call()
    finally:
        hook.remove()
    return {k: torch.cat([s[k] for s in seen]) for k in seen[0]}, result


def test_held_out_participant_gets_identical_tensors(paths: dict[str, Any]) -> None:
    model, test_set = paths["model"], paths["test_set"]
    tabular = tabular_features(paths["bundle"], paths["bids"], [HELD_OUT])[HELD_OUT]
    assert tabular is not None
    assert np.array_equal(tabular, test_set.records[0].tabular)  # same encoding, bit for bit

    trained, train_logits = _recorded(model, lambda: predict(model, test_set, paths["cfg"].train, CPU))
    applied, scores = _recorded(model, lambda: score_run(model, paths["entry"], tabular=tabular, saliency=False))

    assert [s for _, s in test_set.items] == scores.starts == [0, 4, 8, 12, 16, 20, 24, 26]
    assert set(trained) == set(applied) == {"fmri", "smri", "tabular"}
    for key in trained:
        assert trained[key].dtype == applied[key].dtype == torch.float32
        assert torch.equal(trained[key], applied[key]), key
    np.testing.assert_allclose(train_logits[HELD_OUT], scores.logits, rtol=1e-5, atol=1e-6)


def test_a_training_window_is_the_applied_window_at_its_start(paths: dict[str, Any]) -> None:
    train_set, spec = paths["train_set"], InputSpec.of(paths["model"])
    assert spec == train_set.spec
    for index in range(len(train_set)):
        torch.manual_seed(index)
        rec_idx, start = train_set.pick(index)
        torch.manual_seed(index)  # the batch draws the same start again
        batch = to_model(train_set.__getitems__([index]), CPU.device, torch.float32)
        rec = train_set.records[rec_idx]
        applied = run_inputs(rec.entry, [start], rec.tabular, spec, CPU.device)
        assert set(batch) == set(applied)
        for key in batch:
            assert torch.equal(batch[key], applied[key]), (index, key)
