"""The Kujur & Monfared (2026) CNN-RNN archs: registry contract, shapes, gradients, learning a planted signal."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch
from planted import arch_config, build_planted, participant_config, train_learns
from sklearn.metrics import roc_auc_score

from m2m_bids.interpret.api import apply_model
from m2m_bids.interpret.bundle import load_bundle
from m2m_bids.models import ModelOutput, create_model, list_models, model_info
from m2m_bids.models.baselines.cnn_rnn import branch_grid

ARCHS = ("cnn-lstm", "cnn-gru", "cnn3d", "lstm3d", "gru3d")
USES = {"cnn-lstm": {"fmri", "smri"}, "cnn-gru": {"fmri", "smri"}, "cnn3d": {"smri"},
        "lstm3d": {"fmri"}, "gru3d": {"fmri"}}


def _inputs(batch: int = 2, size: int = 16, frames: int = 4, n_tab: int = 3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"fmri": torch.randn(batch, 1, size, size, size, frames, generator=gen),
            "smri": torch.randn(batch, 1, size, size, size, 1, generator=gen),
            "tabular": torch.randn(batch, n_tab, generator=gen)}


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_and_registry_contract(arch):
    assert arch in list_models()
    model = create_model(arch, num_classes=3, img_size=16, frames=4, n_tabular=3, preset="tiny")
    x = _inputs()
    out = model(**x)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 3)
    assert out.spatial_attention == {} and out.temporal_attention is None and out.align_loss is None
    expected = USES[arch] | ({"tabular"} if USES[arch] == {"fmri", "smri"} else set())
    assert set(out.latents) == expected
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    info = model_info(model)
    rebuilt = create_model(**info["config"])  # a model card rebuilds the same network
    rebuilt.load_state_dict(model.state_dict())
    assert info["params"] == sum(p.numel() for p in rebuilt.parameters())


def test_paper_shapes_of_the_default_configuration():
    model = create_model("cnn-lstm", num_classes=3, img_size=(32, 32, 24), frames=5, n_tabular=0)
    assert branch_grid((32, 32, 24), 2) == (4, 4, 3)  # H1 at d/2, H2 at d/4, pooled to d/8
    assert model.smri_branch.dense.out_features == 128
    assert model.fmri_branch.rnn.num_layers == 3 and model.fmri_branch.rnn.hidden_size == 32
    assert model.head[0].out_features == 64 and model.head[2].p == pytest.approx(0.1)
    out = model(fmri=torch.randn(1, 1, 32, 32, 24, 5), smri=torch.randn(1, 1, 32, 32, 24, 1))
    assert out.latents["smri"].shape == (1, 128) and out.latents["fmri"].shape == (1, 32)


def test_untiled_sizes_are_allowed_but_missing_inputs_and_tiny_images_are_clear_errors():
    model = create_model("cnn-gru", num_classes=2, img_size=(18, 14, 12), frames=3, preset="tiny")
    assert model(fmri=torch.randn(1, 1, 18, 14, 12, 3), smri=torch.randn(1, 1, 18, 14, 12, 1)).logits.shape == (1, 2)
    with pytest.raises(ValueError, match="needs smri"):
        model(fmri=torch.randn(1, 1, 18, 14, 12, 3))
    with pytest.raises(ValueError, match=r"must be \(B, 1, 18, 14, 12, T\)"):
        model(fmri=torch.randn(1, 1, 16, 16, 16, 3), smri=torch.randn(1, 1, 18, 14, 12, 1))
    with pytest.raises(ValueError, match="too small"):
        create_model("cnn3d", num_classes=2, img_size=4, frames=1)
    with pytest.raises(ValueError, match="needs modalities"):
        create_model("cnn-lstm", num_classes=2, img_size=16, frames=4, modalities=("fmri",))


def _fit_direct(arch: str, entries, phenotype, *, steps: int, frames: int) -> float:
    """Full-batch Adam on the first 70 % of participants; ROC-AUC on the rest (whole runs as one window)."""
    torch.manual_seed(0)
    ids = sorted(phenotype.index)
    y = {p: int(phenotype.loc[p, "diagnosis"] == "AD") for p in ids}
    first = {}
    for e in entries:
        first.setdefault(e.meta.participant, e)
    fmri = torch.tensor(np.stack([np.asarray(first[p].load("fmri"))[..., :frames] for p in ids]), dtype=torch.float32)
    smri = torch.tensor(np.stack([np.asarray(first[p].load("smri")) for p in ids]), dtype=torch.float32)
    x = {"fmri": fmri[:, None], "smri": smri[:, None, ..., None]}
    target = torch.tensor([y[p] for p in ids])
    n_train = int(0.7 * len(ids))
    model = create_model(arch, num_classes=2, img_size=16, frames=frames, preset="tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(**{k: v[:n_train] for k, v in x.items()}).logits,
                                                 target[:n_train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        prob = model(**{k: v[n_train:] for k, v in x.items()}).logits.softmax(-1)[:, 1]
    return roc_auc_score(target[n_train:].numpy(), prob.numpy())


@pytest.mark.parametrize("arch", ["cnn3d", "lstm3d", "gru3d", "cnn-gru"])
def test_each_arch_learns_its_planted_signal(arch, cache):
    """sMRI-only sees hippocampal atrophy, fMRI-only a cingulate BOLD-amplitude increase, multimodal both."""
    kw = {"cnn3d": {"atrophy": 2.0}, "cnn-gru": {"atrophy": 1.0, "amplitude": 3.0}}.get(arch, {"amplitude": 3.0})
    entries, phenotype = build_planted(cache, n_per_class=14, frames=8, seed=3, **kw)
    auc = _fit_direct(arch, entries, phenotype, steps=40, frames=8)
    assert auc >= 0.8, (arch, auc)


def test_cnn_lstm_group_training_learns_and_participant_apply_works_unchanged(cache, tmp_path):
    """``--arch cnn-lstm`` through train_group, then the participant level's apply (gradient saliency)."""
    entries, phenotype = build_planted(cache, n_per_class=10, frames=8, atrophy=2.0, amplitude=2.0, seed=1)
    cfg = arch_config(tmp_path, "cnn-lstm")
    bundle, card = train_learns(entries, phenotype, cfg)
    out = cfg.execution.output_dir
    assert card["arch"] == "cnn-lstm" and card["model"]["config"]["rnn_layers"] == 3
    load_bundle(bundle)  # rebuilt from the card, weights checksum-verified

    held_out, _ = build_planted(cache, n_per_class=1, frames=8, atrophy=2.0, amplitude=2.0, seed=9, first=31)
    assert apply_model(bundle, held_out, participant_config(cfg)) == {}
    table = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-31", "sub-32"] and not table["in_training_set"].any()
    assert table.loc[1, "prob_AD"] > table.loc[0, "prob_AD"]  # sub-32 is AD, sub-31 CN
    anat = out / "sub-32" / "ses-1" / "anat"  # no attention in these models: gradient saliency maps instead
    assert (anat / "sub-32_ses-1_space-MNI152NLin2009aSym_res-6_stat-saliency_desc-T1w_statmap.nii.gz").is_file()
