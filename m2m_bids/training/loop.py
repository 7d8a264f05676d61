"""The training loop of one split: AdamW, warm-up + cosine learning rate, AMP, clipping, selection.

Read top to bottom: :func:`fit` builds the model, optimiser and loaders, resumes from the last
checkpoint if asked, then for every epoch runs :func:`train_one_epoch`, scores the validation
participants with :func:`predict`, keeps the weights of the epoch that :func:`selection_rule` picks
(best validation ROC-AUC, lowest validation loss, or the last epoch when the validation split is too
small for either to mean anything) and checkpoints. The alignment weight follows
:func:`align_weight_at` (a linear ramp from 0). Works the same in one process and under DDP.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from m2m_bids.config import Train
from m2m_bids.model_inputs.batch import to_model
from m2m_bids.training import checkpoint as ckpt
from m2m_bids.training.data import EpochSampler, ShardSampler, WindowDataset, aggregate_logits, as_batch
from m2m_bids.training.distributed import Dist, all_reduce_mean, gather_objects, unwrap, wrap
from m2m_bids.training.metrics import classification_metrics, softmax
from m2m_bids.training.resident import ResidentBatches, choose_residency

log = logging.getLogger(__name__)

LOSS_TERMS = ("loss", "ce", "align", "aux")
EpochHook = Callable[[str, dict[str, Any]], None]


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``base_lr``, then cosine annealing to zero (per optimisation step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` is bf16 on GPUs and fp32 (no autocast) on CPUs."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype inputs are given to the model in: the autocast dtype when autocast is on, else fp32."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def forward(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> Any:
    """Call the model on a batch, its inputs moved to ``device`` in the compute dtype
    (:func:`~m2m_bids.model_inputs.batch.to_model`, as ``apply`` does)."""
    return model(**to_model(batch, device, compute_dtype(device)))


def enable_tf32(device: torch.device) -> None:
    """fp32 matrix products on TF32 tensor cores (10-bit mantissa, as cuDNN convolutions already use)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        log.info("TF32 enabled for fp32 matrix products on %s", device)


def needs_unused_search(model: nn.Module, dataset: WindowDataset, cfg: Train, dist: Dist) -> bool:
    """Whether DDP must look for parameters without a gradient each step (it costs a graph walk).

    True for models that change their graph between epochs (``on_epoch_start``, e.g. MASAN's
    autoencoder pre-training) and when one probe step on two training windows leaves a parameter
    without a gradient (e.g. a tabular branch with no columns). The probe leaves the random state
    and the gradients as they were.
    """
    if hasattr(model, "on_epoch_start"):
        log.info("DDP: %s changes its graph between epochs: find_unused_parameters on", type(model).__name__)
        return True
    devices = [dist.device] if dist.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        batch = dataset.__getitems__(list(range(min(2, len(dataset)))))
        model.train()
        with autocast(dist.device, amp_dtype(cfg.precision, dist.device)):
            out = forward(model, batch, dist.device)
            loss = training_loss(out, batch["label"].to(dist.device), cfg, None)["loss"]
        loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    if unused:
        log.info("DDP: %d parameter(s) get no gradient (%s...): find_unused_parameters on",
                 len(unused), ", ".join(unused[:3]))
    else:
        log.info("DDP: every parameter gets a gradient: find_unused_parameters off")
    return bool(unused)


def align_weight_at(epoch: int, cfg: Train) -> float:
    """Alignment weight of 0-based ``epoch``: 0 at the start, rising linearly to ``align_weight`` over
    ``align_ramp`` x ``epochs`` epochs, then constant.

    Why: at full weight from the first step the alignment gradient on the encoders is larger than the
    cross-entropy gradient, and the classifier stays at chance until the alignment term saturates.
    """
    ramp_epochs = cfg.align_ramp * cfg.epochs
    if ramp_epochs <= 0:
        return cfg.align_weight
    return cfg.align_weight * min(1.0, epoch / ramp_epochs)


def training_loss(out: Any, labels: torch.Tensor, cfg: Train,
                  loss_weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Cross-entropy + ``align_weight`` x alignment + the model's own terms (see ``ModelOutput``).

    ``cfg.align_weight`` is the weight of the current epoch (:func:`fit` passes :func:`align_weight_at`).
    """
    zero = torch.zeros((), device=labels.device)
    ce = F.cross_entropy(out.logits.float(), labels, weight=loss_weights)
    align = out.align_loss.float() if out.align_loss is not None else zero
    aux = out.aux_loss.float() if out.aux_loss is not None else zero
    if out.label_loss is not None:
        aux = aux + out.label_loss(labels).float()
    return {"loss": ce + cfg.align_weight * align + aux, "ce": ce, "align": align, "aux": aux}


@dataclass
class FitPlan:
    """Everything :func:`fit` needs for one split (kept together to keep signatures short)."""

    name: str
    build_model: Callable[[], nn.Module]
    train_set: WindowDataset
    val_set: WindowDataset
    n_classes: int
    seed: int
    class_weights: np.ndarray | None = None  # weighted loss
    sample_weights: np.ndarray | None = None  # balanced sampler (per training item)
    checkpoint_dir: Path | None = None


@dataclass
class FitResult:
    """Best weights (CPU) of a split and its per-epoch history."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    selection: str = "val_auc"  # the rule that chose best_epoch (selection_rule)


def make_loader(dataset: WindowDataset, sampler: Sampler, batch_size: int, cfg: Train, dist: Dist, *,
                name: str = "training", drop_last: bool = False) -> Iterable[dict[str, torch.Tensor]]:
    """Batches of ``dataset`` in ``sampler`` order, from where they are cheapest to cut.

    A dataset that fits is held on the GPU (or in pinned memory) and windows are sliced there
    (:mod:`m2m_bids.training.resident`); otherwise persistent workers build whole batches from the
    memory-mapped cache (one copy per window) into pinned memory while the GPU computes. Create
    it once and iterate it every epoch. ``drop_last`` keeps every training batch the same shape
    (``torch.compile`` then compiles once).
    """
    residency = choose_residency(dataset, dist.device, name)
    if residency != "stream":
        return ResidentBatches(dataset, sampler, batch_size, dist.device, pinned=residency == "pinned",
                               drop_last=drop_last)
    workers = cfg.num_workers
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=as_batch,
                      pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None, drop_last=drop_last)


def train_one_epoch(model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], opt: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, *, step: int, total_steps: int, cfg: Train, dist: Dist,
                    loss_weights: torch.Tensor | None, steps_per_epoch: int) -> tuple[dict[str, float], int]:
    """One pass over the training windows; returns mean losses/throughput and the next step index.

    The loss terms are summed on the device and read back once per epoch: a step never waits for
    the GPU (except the fp16 GradScaler's inf check), so the host queues the next step's kernels
    while the current ones run.
    """
    model.train()
    dtype = amp_dtype(cfg.precision, dist.device)
    warmup = cfg.warmup_epochs * steps_per_epoch
    sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float32, device=dist.device)
    n_batches, n_samples, started = 0, 0, time.perf_counter()
    for batch in loader:
        lr = lr_at(step, base_lr=cfg.lr, warmup_steps=warmup, total_steps=total_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        labels = batch["label"].to(dist.device, non_blocking=True)
        with autocast(dist.device, dtype):
            out = forward(model, batch, dist.device)
            terms = training_loss(out, labels, cfg, loss_weights)
        opt.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        n_batches += 1
        n_samples += int(labels.shape[0])
        sums += torch.stack([terms[k].detach().float() for k in LOSS_TERMS])
    means = (sums / max(1, n_batches)).tolist()  # the epoch's one host sync
    seconds = time.perf_counter() - started
    stats = {k: all_reduce_mean(v, dist) for k, v in zip(LOSS_TERMS, means, strict=True)}
    stats["samples_per_s"] = all_reduce_mean(n_samples / max(seconds, 1e-9), dist) * dist.world
    stats["lr"] = lr_at(step - 1, base_lr=cfg.lr, warmup_steps=warmup, total_steps=total_steps)
    return stats, step


def eval_loader(dataset: WindowDataset, cfg: Train, dist: Dist,
                name: str = "evaluation") -> Iterable[dict[str, torch.Tensor]]:
    """This rank's shard of every evaluation window; make it once and pass it to :func:`predict`."""
    return make_loader(dataset, ShardSampler(len(dataset), dist.rank, dist.world), cfg.batch_size, cfg, dist,
                       name=name)


def pad_batch(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """``batch`` grown to ``size`` rows by repeating its last row (a ragged last batch keeps the
    compiled shape; the extra outputs are dropped)."""
    n = len(batch["label"])
    if n >= size:
        return batch
    return {k: torch.cat([v, v[-1:].expand(size - n, *v.shape[1:])]) for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, dataset: WindowDataset, cfg: Train, dist: Dist,
            loader: Iterable[dict[str, torch.Tensor]] | None = None) -> dict[str, np.ndarray]:
    """Participant-level logits: every window of every run, sharded over ranks, averaged per participant.

    ``loader`` (from :func:`eval_loader`) is reused across epochs; logits stay on the device until
    the shard is done. With ``cfg.compile`` a ragged last batch is padded to the batch size.
    """
    model.eval()
    loader = eval_loader(dataset, cfg, dist) if loader is None else loader
    dtype = amp_dtype(cfg.precision, dist.device)
    records, logits = [], []
    for batch in loader:
        n = len(batch["label"])
        with autocast(dist.device, dtype):
            out = forward(model, pad_batch(batch, cfg.batch_size) if cfg.compile else batch, dist.device)
        logits.append(out.logits[:n].float())
        records.append(batch["record"])
    local = (torch.cat(records).cpu().numpy() if records else np.zeros(0, int),
             torch.cat(logits).cpu().numpy() if logits else np.zeros((0, 0), np.float32))
    parts = [p for p in gather_objects(local, dist) if len(p[0])]
    record_idx = np.concatenate([p[0] for p in parts])
    all_logits = np.concatenate([p[1] for p in parts])
    return aggregate_logits(record_idx, all_logits, dataset.records)


def score(logits: dict[str, np.ndarray], y: dict[str, int]) -> dict[str, float]:
    """Validation ROC-AUC and cross-entropy of participant-level logits."""
    ids = sorted(logits)
    z = np.stack([logits[p] for p in ids])
    target = np.array([y[p] for p in ids])
    prob = softmax(z)
    loss = float(-np.mean(np.log(np.clip(prob[np.arange(len(ids)), target], 1e-12, None))))
    return {"val_loss": loss, "val_auc": classification_metrics(target, prob)["roc_auc"]}


def selection_rule(cfg: Train, val_labels: list[int], n_classes: int) -> str:
    """The epoch-selection rule for a validation split with these labels (``auto`` resolved).

    ``auto`` is ``val_auc`` only when every class has at least ``min_val_per_class`` validation
    participants: with one or two per class the ROC-AUC can only take a few values (0, 0.5, 1) and
    picks an epoch by chance. Otherwise the last epoch is kept, which the cosine schedule has brought
    to a learning rate near zero.
    """
    if cfg.epoch_selection != "auto":
        return cfg.epoch_selection
    counts = np.bincount(np.asarray(val_labels, dtype=int), minlength=n_classes)
    return "val_auc" if counts.min() >= cfg.min_val_per_class else "last"


def _better(new: dict[str, float], best: dict[str, float] | None, rule: str) -> bool:
    """Whether the epoch scored ``new`` replaces the kept one under ``rule`` (see :func:`selection_rule`)."""
    if best is None or rule == "last":
        return True
    if rule == "val_loss":
        return new["val_loss"] < best["val_loss"]
    auc_new = -math.inf if math.isnan(new["val_auc"]) else new["val_auc"]
    auc_best = -math.inf if math.isnan(best["val_auc"]) else best["val_auc"]
    return (auc_new, -new["val_loss"]) > (auc_best, -best["val_loss"])


def fit(plan: FitPlan, cfg: Train, dist: Dist, on_epoch_end: EpochHook | None = None) -> FitResult:
    """Train one split and return its best weights; resumes from ``plan.checkpoint_dir`` if asked."""
    torch.manual_seed(plan.seed)
    raw = plan.build_model().to(dist.device)
    opt = torch.optim.AdamW(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp_dtype(cfg.precision, dist.device) == torch.float16)
    history: list[dict[str, float]] = []
    start_epoch, best, best_state, best_epoch = 0, None, None, -1
    resumed = ckpt.load_checkpoint(plan.checkpoint_dir, dist.device) if cfg.resume and plan.checkpoint_dir else None
    if resumed is not None:
        weights, state = resumed
        raw.load_state_dict(weights)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history, best, best_epoch = list(state["history"]), state["best"], int(state["best_epoch"])
        best_state = ckpt.load_weights(plan.checkpoint_dir / "best.safetensors")
        start_epoch = int(state["epoch"]) + 1
        ckpt.set_rng_state(state["rng"])
    enable_tf32(dist.device)
    per_rank_batch = max(1, math.ceil(cfg.batch_size / dist.world))
    model = wrap(torch.compile(raw, dynamic=False) if cfg.compile else raw, dist,
                 find_unused=dist.enabled and needs_unused_search(raw, plan.train_set, cfg, dist))
    sampler = EpochSampler(len(plan.train_set), rank=dist.rank, world=dist.world, seed=plan.seed,
                           weights=plan.sample_weights)
    loader = make_loader(plan.train_set, sampler, per_rank_batch, cfg, dist,
                         drop_last=cfg.compile and len(sampler) >= per_rank_batch)
    val_loader = eval_loader(plan.val_set, cfg, dist, name="validation")
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    loss_w = None if plan.class_weights is None else torch.as_tensor(plan.class_weights, dtype=torch.float32,
                                                                     device=dist.device)
    y_val = {r.participant: r.label for r in plan.val_set.records}
    rule = selection_rule(cfg, list(y_val.values()), plan.n_classes)
    log.info("%s: epoch selection %s (%d validation participants)", plan.name, rule, len(y_val))
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        if hasattr(raw, "on_epoch_start"):  # e.g. MASAN's autoencoder pre-training epochs
            raw.on_epoch_start(epoch)
        started = time.perf_counter()
        epoch_cfg = cfg.model_copy(update={"align_weight": align_weight_at(epoch, cfg)})
        stats, _ = train_one_epoch(model, loader, opt, scaler, step=epoch * steps_per_epoch, total_steps=total,
                                   cfg=epoch_cfg, dist=dist, loss_weights=loss_w, steps_per_epoch=steps_per_epoch)
        stats.update(score(predict(model, plan.val_set, cfg, dist, val_loader), y_val))
        stats.update(epoch=epoch + 1, seconds=time.perf_counter() - started, align_weight=epoch_cfg.align_weight)
        history.append(stats)
        if _better(stats, best, rule):
            best, best_epoch = {k: stats[k] for k in ("val_auc", "val_loss")}, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
            if dist.is_main and plan.checkpoint_dir is not None:
                ckpt.save_weights(plan.checkpoint_dir / "best.safetensors", best_state)
        if dist.is_main and plan.checkpoint_dir is not None and (
                (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            ckpt.save_checkpoint(plan.checkpoint_dir, epoch, unwrap(model), {
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "history": history,
                "best": best, "best_epoch": best_epoch})
        if on_epoch_end is not None:
            on_epoch_end(plan.name, stats)
    if best_state is None:
        raise RuntimeError(f"{plan.name}: no epoch was run (epochs={cfg.epochs}, resumed at {start_epoch})")
    return FitResult(best_state=best_state, best_epoch=best_epoch, history=history, selection=rule)
