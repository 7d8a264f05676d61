"""Registry contract, every arch x modality set, Table II switches, attention maps, gradients."""

from __future__ import annotations

import pytest
import torch

from m2m_bids.models import ModelOutput, create_model, list_models, model_info, valid_keys

IMG, T, K = (16, 16, 16), 5, 3
BASE = {"num_classes": 3, "img_size": IMG, "frames": T, "n_tabular": K, "preset": "tiny"}
MODALITY_SETS = [("fmri",), ("smri",), ("fmri", "smri"), ("fmri", "smri", "tabular")]


def _inputs(batch: int = 2, frames: int = T) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"fmri": torch.randn(batch, 1, *IMG, frames, generator=g),
            "smri": torch.randn(batch, 1, *IMG, 1, generator=g),
            "tabular": torch.randn(batch, K, generator=g)}


def _check_grads(model: torch.nn.Module, out: ModelOutput) -> None:
    loss = out.logits.square().mean() + (out.align_loss if out.align_loss is not None else 0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_registry_lists_archs_and_rejects_unknowns() -> None:
    assert {"m2m", "swift", "swift-ef", "swift-lf"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown arch"):
        create_model("nope", **BASE)
    with pytest.raises(ValueError, match="valid keys: .*embed_dim"):
        create_model("m2m", **BASE, embed_dimm=8)
    assert "weighting" in valid_keys()


@pytest.mark.parametrize("mods", MODALITY_SETS)
def test_m2m_every_modality_set(mods: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = create_model("m2m", **{**BASE, "modalities": mods})
    out = model(**{m: x for m, x in _inputs().items() if m in mods})
    assert out.logits.shape == (2, 3)
    assert (out.align_loss is not None) == ({"fmri", "smri"} <= set(mods))
    assert set(out.latents) == set(mods) and all(v.shape == (2, 16) for v in out.latents.values())
    assert set(out.spatial_attention) == set(mods) - {"tabular"}
    for m in set(mods) - {"tabular"}:
        att = out.spatial_attention[m]
        assert att.shape == (2, 2, 2, 2)
        torch.testing.assert_close(att.sum(dim=(1, 2, 3)), torch.ones(2))
    if "fmri" in mods:
        assert out.temporal_attention.shape == (2, T)
        torch.testing.assert_close(out.temporal_attention.sum(-1), torch.ones(2))
    _check_grads(model, out)


@pytest.mark.parametrize("arch", ["swift", "swift-ef", "swift-lf"])
@pytest.mark.parametrize("mods", [("fmri", "smri"), ("fmri", "smri", "tabular")])
def test_baselines(arch: str, mods: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(arch, **{**BASE, "modalities": mods})
    out = model(**_inputs())
    assert out.logits.shape == (2, 3) and out.align_loss is None
    _check_grads(model, out)


def test_swift_on_smri_only() -> None:
    model = create_model("swift", **{**BASE, "modalities": ("smri",)})
    assert model(smri=_inputs()["smri"]).logits.shape == (2, 3)


SWITCHES = [
    {"temporal_fusion": False}, {"spatial_fusion": False}, {"refinement": False},
    {"alignment": False}, {"spatial_per_frame": False}, {"tabular_tokens": "per_feature"},
    {"fusion_heads": 2}, {"spatial_latents": "joint"}, {"align_projection": True, "align_symmetric": True},
    {"weighting": "none"}, {"weighting": "kl"},  # all six are checked against a loop in the loss tests
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_table_ii_switches(switch: dict) -> None:
    torch.manual_seed(0)
    model = create_model("m2m", **BASE, **switch)
    out = model(**_inputs())
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    assert (out.align_loss is None) == (switch.get("alignment") is False)
    assert (out.temporal_attention is None) == (switch.get("temporal_fusion") is False)
    assert bool(out.spatial_attention) == switch.get("spatial_fusion", True)
    _check_grads(model, out)


def test_deterministic_under_seed_and_batch_independent() -> None:
    x = _inputs(batch=3)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = create_model("m2m", **BASE).eval()
        outs.append(model(**x))
    torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=0, atol=0)
    single = model(**{m: v[1:2] for m, v in x.items()})  # sample 1 alone == sample 1 in the batch
    torch.testing.assert_close(single.logits, outs[1].logits[1:2], atol=1e-5, rtol=1e-5)


def test_model_info_rebuilds_same_architecture() -> None:
    model = create_model("m2m", **BASE, weighting="kl", fusion_heads=2)
    info = model_info(model)
    assert info["arch"] == "m2m" and info["params"] == sum(p.numel() for p in model.parameters())
    clone = create_model(**info["config"])
    clone.load_state_dict(model.state_dict())  # same names and shapes
    assert model_info(clone) == info


def test_shape_errors_name_the_sizes() -> None:
    with pytest.raises(ValueError, match=r"img_size \(20, 16, 16\) is not divisible by patch_size 4"):
        create_model("m2m", **{**BASE, "img_size": (20, 16, 16)})
    with pytest.raises(ValueError, match="not divisible by window"):
        create_model("m2m", **{**BASE, "img_size": (48, 16, 16), "window_size": (4, 4, 4, 4)})
    model = create_model("m2m", **BASE)
    bad = _inputs()
    bad["smri"] = torch.randn(2, 1, 16, 16, 12, 1)
    with pytest.raises(ValueError, match=r"smri has shape \(2, 1, 16, 16, 12, 1\)"):
        model(**bad)
    with pytest.raises(ValueError, match="were not given"):
        model(fmri=bad["fmri"])


def test_default_modalities_without_tabular_columns_and_short_clips() -> None:
    model = create_model("m2m", num_classes=2, img_size=IMG, frames=T, preset="tiny")
    assert model.config.modalities == ("fmri", "smri")
    x = _inputs(frames=3)  # fewer frames than built for: time embeddings and latents are sliced
    out = model(fmri=x["fmri"], smri=x["smri"])
    assert out.temporal_attention.shape == (2, 3)


#: Two Swin blocks per stage: the second of each stage is the shifted-window block (with its mask).
SHIFTED = {"depths": (2, 2), "num_heads": (1, 2), "patch_size": 2}  # token grids 8^3 and 4^3: windows 2^3 shift in both
TABLE_II = [
    {}, {"temporal_fusion": False}, {"spatial_fusion": False}, {"refinement": False}, {"alignment": False},
    *({"weighting": w} for w in ("none", "dot", "cosine", "kl", "jsd", "mmd")),
    {"modalities": ("fmri",)}, {"modalities": ("smri",)}, {"modalities": ("fmri", "smri", "tabular")},
]


def _shift_masks_used(model: torch.nn.Module) -> list[bool]:
    """Forward pre-hooks on every window attention: was a shift mask passed on this call?"""
    used: list[bool] = []
    for block in (m for m in model.modules() if type(m).__name__ == "SwinBlock4D" and m.shifted):
        block.attn.register_forward_pre_hook(lambda _m, args: used.append(args[1] is not None))
    return used


@pytest.mark.parametrize("switch", TABLE_II, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "all-on")
def test_table_ii_switch_runs_one_training_step(switch: dict) -> None:
    """Each ablation trains: one AdamW step on the trainer's loss moves the weights and lowers that batch's loss."""
    from m2m_bids.config import Train
    from m2m_bids.training.loop import training_loss

    torch.manual_seed(0)
    model = create_model("m2m", **{**BASE, "modalities": ("fmri", "smri"), **SHIFTED, **switch})
    used = _shift_masks_used(model)
    x = {m: v for m, v in _inputs().items() if m in model.config.modalities}
    labels = torch.tensor([0, 2])
    cfg = Train(align_weight=0.1)  # explicit: the test must not depend on the default schedule
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    terms = training_loss(model(**x), labels, cfg, None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    assert torch.isfinite(terms["loss"])
    assert (terms["align"] > 0) == ({"fmri", "smri"} <= set(model.config.modalities)
                                    and model.config.alignment)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before), sorted(set(before) - set(moved))
    assert used and all(used)  # every shifted block ran with its mask
    after = training_loss(model(**x), labels, cfg, None)["loss"]
    assert after < terms["loss"]
