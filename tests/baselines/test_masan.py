"""MASAN (Zong et al.): shapes, gradients, the aux-loss formula, pre-training, rebuild, learning a planted signal."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from planted import arch_config, build_planted, participant_config, train_learns

from m2m_bids.interpret.api import apply_model
from m2m_bids.models import ModelOutput, create_model, list_models, model_info
from m2m_bids.models.baselines.masan import PatchAutoencoder, from_regions, level_channels, to_regions

MODALITY_SETS = (("fmri", "smri", "tabular"), ("fmri", "smri"), ("smri",))


def _inputs(batch: int = 4, size: int = 16, frames: int = 4, n_tab: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"fmri": torch.randn(batch, 1, size, size, size, frames, generator=gen),
            "smri": torch.randn(batch, 1, size, size, size, 1, generator=gen),
            "tabular": torch.randn(batch, n_tab, generator=gen)}


def _tiny(modalities=MODALITY_SETS[0], **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("masan", num_classes=3, img_size=16, frames=4, n_tabular=3, modalities=modalities,
                        preset="tiny", **overrides)


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_shapes_gradients_and_rebuild_for_each_modality_set(modalities):
    assert "masan" in list_models()
    model = _tiny(modalities)
    x = {k: v for k, v in _inputs().items() if k in modalities}
    out = model(**x)
    assert isinstance(out, ModelOutput) and out.logits.shape == (4, 3)
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0 and out.align_loss is None and out.label_loss is None
    imaging = [m for m in ("smri", "fmri") if m in modalities]
    assert sorted(out.spatial_attention) == sorted(imaging) and sorted(out.latents) == sorted(imaging)
    for m in imaging:  # one weight per region of the 4x4x4 grid, a distribution per sample
        assert out.spatial_attention[m].shape == (4, 4, 4, 4)
        torch.testing.assert_close(out.spatial_attention[m].sum(dim=(1, 2, 3)), torch.ones(4))
        assert out.latents[m].shape == (4, 8)  # tiny masan_code_channels
    (out.logits.sum() + out.aux_loss).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
              or not p.grad.abs().sum() > 0]
    assert silent == []
    info = model_info(model)
    rebuilt = create_model(**json.loads(json.dumps(info["config"])))  # as a model card stores it
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        a, b = model(**x), rebuilt(**x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.aux_loss, b.aux_loss, rtol=0, atol=0)
    assert info["params"] == sum(p.numel() for p in rebuilt.parameters())


def test_default_configuration_follows_table_1_on_the_64_grid():
    model = create_model("masan", num_classes=2, img_size=64, frames=20, modalities=("fmri", "smri"))
    cfg = model.config
    assert level_channels(cfg) == [32, 64, 128, 128] and cfg.masan_code_channels == 64
    assert (cfg.recon_weight_smri, cfg.recon_weight_fmri, cfg.ae_pretrain_epochs) == (0.5, 0.5, 0)
    assert model.autoencoders["fmri"].init_conv.in_channels == 20  # the window's frames enter as channels
    region = torch.randn(1, 1, 16, 16, 16)  # a 64^3 grid cut 4 x 4 x 4: 16^3 regions
    ae = model.autoencoders["smri"]
    with torch.no_grad():
        code, recon = ae(region)
    assert code.shape == (1, 64, 2, 2, 2) and recon.shape == region.shape  # the paper's 2x2x2 embedding
    assert model.classifier[0].in_features == 64 * 8 ** 3


def test_regions_round_trip_in_raster_order():
    x = torch.arange(2 * 3 * 8 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8, 8)
    regions = to_regions(x, 4)
    assert regions.shape == (2 * 64, 3, 2, 2, 2)
    torch.testing.assert_close(regions[1], x[0, :, 0:2, 0:2, 2:4])  # region (0, 0, 1) of sample 0
    torch.testing.assert_close(regions[64 + 16], x[1, :, 2:4, 0:2, 0:2])  # region (1, 0, 0) of sample 1
    torch.testing.assert_close(from_regions(regions, 2, 4), x)


def test_bad_sizes_missing_inputs_and_modalities_are_clear_errors():
    model = create_model("masan", num_classes=2, img_size=(32, 16, 16), frames=4, preset="tiny")  # non-cubic
    out = model(fmri=torch.randn(1, 1, 32, 16, 16, 4), smri=torch.randn(1, 1, 32, 16, 16, 1))
    assert out.logits.shape == (1, 2) and out.spatial_attention["smri"].shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"img_size \(20, 16, 16\).*= 16"):
        create_model("masan", num_classes=2, img_size=(20, 16, 16), frames=4, preset="tiny")
    with pytest.raises(ValueError, match=r"img_size \(48, 48, 48\).*= 32"):
        create_model("masan", num_classes=2, img_size=48, frames=4)
    with pytest.raises(ValueError, match="needs modality 'smri'"):
        create_model("masan", num_classes=2, img_size=16, frames=4, modalities=("fmri",), preset="tiny")
    model = _tiny(("fmri", "smri"))
    x = _inputs()
    with pytest.raises(ValueError, match="'fmri' but it was not given"):
        model(smri=x["smri"])
    with pytest.raises(ValueError, match=r"fmri must be \(B, 1, 16, 16, 16, 4\)"):
        model(fmri=x["fmri"][..., :3], smri=x["smri"])


def test_aux_loss_is_the_weighted_reconstruction_plus_sparsity_formula():
    model = _tiny(("fmri", "smri"), recon_weight_smri=0.3, recon_weight_fmri=0.7, sparsity_weight=0.05).eval()
    x = _inputs(batch=2)
    with torch.no_grad():
        aux = model(**x).aux_loss
        t1 = x["smri"][:, 0].permute(0, 4, 1, 2, 3)  # (B, 1, X, Y, Z)
        bold = x["fmri"][:, 0].permute(0, 4, 1, 2, 3)  # (B, T, X, Y, Z): frames as channels
        terms = {}
        for name, img in (("smri", t1), ("fmri", bold)):
            ae: PatchAutoencoder = model.autoencoders[name]
            code, skips = ae.encode(to_regions(img, 4))
            recon = from_regions(ae.decode(code, skips), 2, 4)
            terms[name] = (((recon - img) ** 2).mean(), code.abs().mean())
    expected = (0.3 * terms["smri"][0] + 0.7 * terms["fmri"][0] + 0.05 * (terms["smri"][1] + terms["fmri"][1]))
    torch.testing.assert_close(aux, expected)


def test_pretraining_epochs_keep_the_classification_gradient_out_of_the_autoencoders():
    model = _tiny(("fmri", "smri"), ae_pretrain_epochs=2).train()
    x = _inputs()
    labels = torch.tensor([0, 1, 2, 1])

    def grads_after(loss_of) -> dict[str, bool]:
        model.zero_grad(set_to_none=True)
        loss_of(model(**x)).backward()
        return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
                for name, part in (("autoencoders", model.autoencoders), ("attention", model.region_attention),
                                   ("fusion", model.fusion), ("classifier", model.classifier))}

    def ce(out):
        return F.cross_entropy(out.logits, labels)

    model.on_epoch_start(0)
    assert grads_after(ce) == {"autoencoders": False, "attention": True, "fusion": True, "classifier": True}
    assert grads_after(lambda out: out.aux_loss)["autoencoders"]  # reconstruction still trains them
    model.on_epoch_start(1)
    assert not grads_after(ce)["autoencoders"]
    model.on_epoch_start(2)  # pre-training over: end-to-end
    assert grads_after(ce)["autoencoders"]
    model.on_epoch_start(0)
    model.eval()  # saliency (eval mode) always gets input gradients
    smri = x["smri"].clone().requires_grad_(True)
    model(fmri=x["fmri"], smri=smri).logits[:, 1].sum().backward()
    assert smri.grad.abs().sum() > 0


def test_group_training_learns_the_planted_signal(cache, tmp_path):
    """``--arch masan`` through train_group (with one autoencoder pre-training epoch) on atrophy + BOLD amplitude."""
    entries, phenotype = build_planted(cache, n_per_class=10, frames=8, atrophy=2.0, amplitude=2.0, seed=1)
    cfg = arch_config(tmp_path, "masan", overrides={"ae_pretrain_epochs": 1}, epochs=4)
    bundle, card = train_learns(entries, phenotype, cfg)
    out = cfg.execution.output_dir
    assert card["arch"] == "masan" and card["model"]["config"]["ae_pretrain_epochs"] == 1

    held_out, _ = build_planted(cache, n_per_class=1, frames=8, atrophy=2.0, amplitude=2.0, seed=9, first=31)
    assert apply_model(bundle, held_out, participant_config(cfg)) == {}
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert table.loc[1, "prob_AD"] > table.loc[0, "prob_AD"]  # sub-32 is AD, sub-31 CN
    anat = out / "sub-32" / "ses-1" / "anat"  # region self-attention, upsampled to the image
    assert (anat / "sub-32_ses-1_space-MNI152NLin2009aSym_res-6_stat-attention_desc-T1w_statmap.nii.gz").is_file()
