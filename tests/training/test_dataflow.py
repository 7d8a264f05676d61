"""The training data path: whole batches read once from the time-first cache, resident batches equal
to streamed ones, inputs in the compute dtype (never an fp32 copy under mixed precision), padded
evaluation batches, and training steps without host syncs."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_cache import build_dataset

from m2m_bids.config import Train
from m2m_bids.models import create_model
from m2m_bids.training.data import EpochSampler, ShardSampler, WindowDataset, make_records
from m2m_bids.training.distributed import Dist
from m2m_bids.training.loop import make_loader, pad_batch, predict, train_one_epoch
from m2m_bids.training.resident import ResidentBatches

CPU = Dist(0, 0, 1, torch.device("cpu"))


def _records(cache, frames: int = 6):
    entries, _ = build_dataset(cache, n_per_class=2, frames=frames, seed=7)
    tab = {p: np.array([float(i), 1.0], np.float32) for i, p in enumerate(["01", "02", "03", "04"])}
    return make_records(entries, {"01": 0, "02": 1, "03": 0, "04": 1}, tab)


def _model():
    torch.manual_seed(0)
    return create_model("m2m", num_classes=2, img_size=16, frames=4, n_tabular=2, preset="tiny")


def test_batches_hold_every_window_bit_for_bit(cache):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=False)
    loader = make_loader(ds, ShardSampler(len(ds)), 3, Train(num_workers=0), CPU, name="test")
    seen = 0
    for batch in loader:
        assert batch["fmri"].dtype == torch.float16 and batch["fmri"].shape[1:] == (1, 4, 16, 16, 16)
        assert batch["smri"].shape[1:] == (1, 16, 16, 16, 1)
        for j, r in enumerate(batch["record"].tolist()):
            rec_idx, start = ds.items[seen + j]
            assert rec_idx == r
            time_last = np.asarray(records[r].entry.load("fmri"))[..., start:start + 4]
            expected = np.ascontiguousarray(np.moveaxis(time_last, -1, 0))
            assert batch["fmri"][j, 0].numpy().tobytes() == expected.tobytes()
            np.testing.assert_array_equal(batch["smri"][j, 0, ..., 0].numpy(), records[r].entry.load("smri"))
            np.testing.assert_array_equal(batch["tabular"][j].numpy(), records[r].tabular)
        seen += len(batch["label"])
    assert seen == len(ds)


def test_batches_from_loader_workers_equal_in_process_batches(cache):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri"), train=False)
    inline = list(make_loader(ds, ShardSampler(len(ds)), 4, Train(num_workers=0), CPU))
    workers = list(make_loader(ds, ShardSampler(len(ds)), 4, Train(num_workers=1), CPU))
    assert len(inline) == len(workers) > 1
    for a, b in zip(inline, workers, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resident_batches_equal_streamed_batches(cache):
    records = _records(cache, frames=3)  # shorter than the window: padding must match too
    for train in (False, True):
        ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=train,
                           samples_per_run=3)
        sampler = EpochSampler(len(ds), seed=2, shuffle=train)
        torch.manual_seed(5)
        streamed = list(make_loader(ds, sampler, 4, Train(num_workers=0), CPU))
        torch.manual_seed(5)
        resident = list(ResidentBatches(ds, sampler, 4, torch.device("cpu")))
        assert len(streamed) == len(resident) > 0
        for a, b in zip(streamed, resident, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def _captured_inputs(model) -> dict:
    seen: dict = {}

    def hook(_module, _args, kwargs):
        seen.update({k: v for k, v in kwargs.items() if v is not None})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_inputs_reach_the_model_in_the_compute_dtype(cache, precision, dtype):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=False)
    model = _model()
    seen = _captured_inputs(model)
    predict(model, ds, Train(num_workers=0, batch_size=4, precision=precision), CPU)
    assert seen["fmri"].dtype == dtype and seen["smri"].dtype == dtype  # bf16: no fp32 copy of the images
    assert seen["fmri"].shape[1:] == (1, 16, 16, 16, 4)  # the model's (B,1,X,Y,Z,T) order
    assert seen["tabular"].dtype == dtype


def test_padded_evaluation_batches_give_the_same_logits(cache):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=False)
    assert len(ds) % 4  # a ragged last batch
    model = _model()
    seen = _captured_inputs(model)
    plain = predict(model, ds, Train(num_workers=0, batch_size=4), CPU)
    padded = predict(model, ds, Train(num_workers=0, batch_size=4, compile=True), CPU)
    assert seen["fmri"].shape[0] == 4  # the last batch too
    assert plain.keys() == padded.keys()
    for p in plain:
        np.testing.assert_allclose(plain[p], padded[p], rtol=1e-5, atol=1e-6)
    batch = {"label": torch.arange(3), "fmri": torch.randn(3, 1, 2)}
    grown = pad_batch(batch, 5)
    assert grown["label"].tolist() == [0, 1, 2, 2, 2] and torch.equal(grown["fmri"][4], batch["fmri"][2])


class SyncCounter:
    """Counts tensor-to-host reads (``.item()``, ``float()``, ``.tolist()``...) made by m2m_bids code."""

    READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._counted(name, getattr(torch.Tensor, name)))

    def _counted(self, name, method):
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "/m2m_bids/" in caller:
                self.calls.append(f"{name} in {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return method(tensor, *args, **kwargs)
        return counted


def test_training_steps_make_no_host_sync(cache, monkeypatch):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=True, samples_per_run=3)
    torch.manual_seed(0)
    batches = [ds.__getitems__(list(range(i, i + 2))) for i in range(0, 6, 2)]  # prepared: only the step runs
    cfg = Train(num_workers=0, batch_size=2, grad_clip=1.0, align_weight=0.1)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    counts = []
    for n in (1, 3):
        counter = SyncCounter(monkeypatch)
        stats, _ = train_one_epoch(model, batches[:n], opt, scaler, step=0, total_steps=10, cfg=cfg, dist=CPU,
                                   loss_weights=None, steps_per_epoch=n)
        monkeypatch.undo()
        counts.append(counter.calls)
        assert np.isfinite(stats["loss"]) and stats["loss"] > 0
    assert len(counts[0]) == len(counts[1]) <= 1, counts  # one read per epoch, none per step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_steps_do_not_synchronise_cuda(cache):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=True, samples_per_run=3)
    gpu = Dist(0, 0, 1, torch.device("cuda"))
    batches = [{k: v.cuda() for k, v in ds.__getitems__([0, 1]).items()} for _ in range(3)]
    model = _model().cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = Train(batch_size=2, precision="bf16")
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    train_one_epoch(model, batches[:1], opt, scaler, step=0, total_steps=10, cfg=cfg, dist=gpu, loss_weights=None,
                    steps_per_epoch=1)  # warm-up: lazy initialisation may synchronise
    counts = []
    for n in (1, 3):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_one_epoch(model, batches[:n], opt, scaler, step=1, total_steps=10, cfg=cfg, dist=gpu,
                                loss_weights=None, steps_per_epoch=n)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        counts.append([str(w.message) for w in caught if "synchroniz" in str(w.message)])
    assert len(counts[0]) == len(counts[1]), counts  # syncs per epoch, not per step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_small_dataset_is_held_on_the_gpu_and_batches_match(cache, caplog):
    records = _records(cache)
    ds = WindowDataset(records, frames=4, modalities=("fmri", "smri", "tabular"), train=False)
    gpu = Dist(0, 0, 1, torch.device("cuda"))
    with caplog.at_level("INFO", logger="m2m_bids.training.resident"):
        loader = make_loader(ds, ShardSampler(len(ds)), 4, Train(num_workers=0), gpu, name="validation")
    assert isinstance(loader, ResidentBatches) and "held resident on cuda" in caplog.text
    streamed = list(make_loader(ds, ShardSampler(len(ds)), 4, Train(num_workers=0), CPU))
    for a, b in zip(streamed, loader, strict=True):
        assert b["fmri"].is_cuda and all(torch.equal(a[k], b[k].cpu()) for k in a)
