"""Multi-GPU / multi-node training with ``torchrun`` (DDP): NCCL on GPUs, gloo on CPUs.

The same command runs single-process or under ``torchrun --nproc_per_node N m2m ... group``;
:func:`setup_distributed` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
Only rank 0 (``Dist.is_main``) writes files and logs progress.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from m2m_bids.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job and its device."""

    rank: int
    local_rank: int
    world: int
    device: torch.device
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device_preference: str = "auto") -> Dist:
    """Join the torchrun process group if there is one; otherwise a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world <= 1:
        return Dist(0, 0, 1, device)
    if torch_dist.is_initialized():
        return Dist(torch_dist.get_rank(), local_rank, torch_dist.get_world_size(), device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch_dist.init_process_group(backend=backend)
    log.info("DDP: rank %d of %d on %s (%s)", rank, world, device, backend)
    return Dist(rank, local_rank, world, device, initialised_here=True)


def teardown(dist: Dist) -> None:
    """Leave the process group if this module joined it (call in ``finally``)."""
    if dist.initialised_here and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def wrap(model: nn.Module, dist: Dist, find_unused: bool = True) -> nn.Module:
    """DDP-wrap ``model`` when the world has more than one process.

    ``find_unused``: some parameters may get no gradient in a step (a modality-dropped branch, a
    pre-training phase), so DDP walks the graph every step to find them; turn it off when every
    parameter is known to be used (see :func:`m2m_bids.training.loop.needs_unused_search`).
    """
    if not dist.enabled:
        return model
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and ``torch.compile`` wrappers (state dicts without prefixes)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def gather_objects(obj: Any, dist: Dist) -> list[Any]:
    """Every rank's ``obj`` (in rank order) on every rank; ``[obj]`` without DDP."""
    if not dist.enabled:
        return [obj]
    out: list[Any] = [None] * dist.world
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(value: float, dist: Dist) -> float:
    """Mean of a scalar over ranks (losses for logging)."""
    if not dist.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=dist.device)
    torch_dist.all_reduce(tensor)
    return float(tensor.item()) / dist.world


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch_dist.barrier()
