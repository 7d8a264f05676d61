"""Parameter and FLOP counts with ``torch.utils.flop_counter`` on the meta device.

The model and its inputs are built on ``meta`` tensors, so a 96^3 x 128-frame forward is counted in
seconds without allocating memory. The counter reports 2 FLOPs per multiply-add. Two totals are
given: ``flops_linear`` (matrix products of ``nn.Linear`` layers: aten.mm/addmm -- the convention that
reproduces the paper's Table IV, see docs/models.md) and ``flops_total`` (also the attention matmuls
and SDPA).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from m2m_bids.models.registry import create_model

_LINEAR_OPS = ("aten.mm", "aten.addmm")


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as cached masks are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def example_inputs(model: nn.Module, batch: int = 1, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Random inputs of the shapes ``model`` was built for (one frame for sMRI)."""
    cfg = model.config  # type: ignore[attr-defined]
    shape = (batch, 1, *cfg.img_size)
    inputs: dict[str, torch.Tensor] = {}
    if "fmri" in cfg.modalities:
        inputs["fmri"] = torch.randn(*shape, cfg.frames, device=device, dtype=dtype)
    if "smri" in cfg.modalities:
        inputs["smri"] = torch.randn(*shape, 1, device=device, dtype=dtype)
    if "tabular" in cfg.modalities:
        inputs["tabular"] = torch.randn(batch, cfg.n_tabular, device=device, dtype=dtype)
    return inputs


def count_flops(arch: str, *, batch: int = 1, **create_kwargs: Any) -> dict[str, Any]:
    """Params and forward FLOPs of ``create_model(arch, **create_kwargs)`` at ``batch``, on meta."""
    with torch.device("meta"):
        model = create_model(arch, **create_kwargs)
    model.eval()
    inputs = example_inputs(model, batch, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:  # no no_grad(): the module tracker needs grad_fns; meta costs nothing
        model(**inputs)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    linear = sum(n for op, n in by_op.items() if op in _LINEAR_OPS)
    return {"arch": arch, "params": count_params(model), "flops_total": sum(by_op.values()),
            "flops_linear": linear, "by_op": by_op}
