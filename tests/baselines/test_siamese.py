"""The Arco et al. siamese arch: registry contract, region crops, hinge loss, attention maps, planted learning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from planted import (ATROPHY, HYPOMETABOLISM, SHAPE, arch_config, build_planted, grid_masks, participant_config,
                     train_learns)

from m2m_bids.interpret.api import apply_model
from m2m_bids.interpret.bundle import load_bundle
from m2m_bids.interpret.maps import relative_to_uniform, upsample_tokens
from m2m_bids.model_inputs.atlas import build_model, parcellation
from m2m_bids.models import (ModelOutput, Parcellation, create_config, create_model, input_maps, input_modalities,
                             list_models, model_info)
from m2m_bids.models.baselines.siamese import hinge_similarity_loss


def _model(**overrides):
    affine, _ = grid_masks()
    kw = {"grid_affine": affine.ravel().tolist(), "functional_map": "falff", "preset": "tiny", **overrides}
    return build_model("siamese", num_classes=2, img_size=SHAPE, frames=4, **kw)


def _maps(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"gm": torch.rand(batch, 1, *SHAPE, generator=gen), "falff": torch.rand(batch, 1, *SHAPE, generator=gen)}


def test_forward_backward_reaches_every_parameter_and_the_card_rebuilds_it():
    assert "siamese" in list_models()
    model = _model()
    assert input_maps(model) == ("gm", "falff") and input_modalities(model) == ()
    assert len(model.region_labels) == 80 and model.box == (7, 14, 9)  # AAL regions with >= 8 voxels at 6 mm
    x, labels = _maps(), torch.tensor([0, 1, 0, 1])
    out = model(**x)
    assert isinstance(out, ModelOutput) and out.logits.shape == (4, 2)
    assert out.latents["smri"].shape == out.latents["fmri"].shape == (4, 80 * 4)
    loss = F.cross_entropy(out.logits, labels) + out.label_loss(labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    info = model_info(model)
    assert info["config"]["grid_affine"] == pytest.approx(grid_masks()[0].ravel().tolist())
    rebuilt = build_model(**json.loads(json.dumps(info["config"])))  # through JSON, as a model card
    rebuilt.load_state_dict(model.state_dict())  # includes the region statistics of the training batch
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        a, b = model(**_maps(seed=1)), rebuilt(**_maps(seed=1))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.spatial_attention["smri"], b.spatial_attention["smri"])
    assert info["params"] == sum(p.numel() for p in rebuilt.parameters())


def test_hinge_loss_equals_the_papers_formula_per_region():
    gen = torch.Generator().manual_seed(0)
    s, f = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    labels = torch.tensor([0, 1, 2])  # class 0 is the reference (t = +1), every other class t = -1
    naive = []
    for b in range(3):
        t = 1.0 if labels[b] == 0 else -1.0
        for r in range(5):
            y = sum(float(s[b, r, k] * f[b, r, k]) for k in range(4))
            naive.append(max(0.0, 1.0 - t * y))
    assert hinge_similarity_loss(s, f, labels).item() == pytest.approx(np.mean(naive), rel=1e-6)
    out = _model(hinge_weight=0.5)(**_maps())
    expected = 0.5 * hinge_similarity_loss(out.latents["smri"].reshape(4, 80, 4),
                                           out.latents["fmri"].reshape(4, 80, 4), torch.tensor([0, 1, 0, 1]))
    assert out.label_loss(torch.tensor([0, 1, 0, 1])).item() == pytest.approx(expected.item())
    assert _model(hinge_weight=0.0)(**_maps()).label_loss is None


def test_attention_is_a_region_constant_mask_summing_to_one_on_the_image_grid():
    model = _model()
    out = model(**_maps())
    grid = model.voxel_region.reshape(SHAPE).numpy()
    for half in ("smri", "fmri"):
        att = out.spatial_attention[half].detach()
        assert att.shape == (4, *SHAPE) and (att >= 0).all()
        assert torch.allclose(att.sum((1, 2, 3)), torch.ones(4))
        vol = att[0].numpy()
        assert (vol[grid == len(model.region_labels)] == 0).all()  # outside the kept regions
        for r in (0, 17, 79):  # one value per region, proportional to the region's mean mask
            assert np.ptp(vol[grid == r]) == 0
        # the interpretation's token-grid upsampling is the identity (relative to uniform) on this grid
        assert np.allclose(upsample_tokens(vol, SHAPE), relative_to_uniform(vol), rtol=1e-5)


def test_region_crops_zero_other_regions_and_standardise_with_training_statistics():
    model = _model()
    x = _maps(batch=6)
    model.train()
    model(**x)  # one training batch: its statistics become the model's
    z = model.region_crops(x["gm"], "gm", 0).detach()
    inside = model.in_region.bool()
    per_region = [z[:, r][:, inside[r]] for r in range(len(model.region_labels))]
    assert all(abs(float(v.mean())) < 1e-4 and abs(float(v.std(unbiased=False)) - 1) < 1e-3 for v in per_region)
    assert (z[:, ~inside] == 0).all()  # voxels of other regions in the box are zero, as in the paper
    model.eval()
    before = model.standardize.stat_count.clone()
    model(**_maps(batch=2, seed=5))  # evaluation does not touch the statistics
    assert torch.equal(before, model.standardize.stat_count)


def test_two_stage_schedule_trains_the_branch_then_freezes_it():
    model = _model(siamese_pretrain_epochs=2)
    labels = torch.tensor([0, 1, 0, 1])
    model.on_epoch_start(0)  # stage 1: hinge trains the branch, cross-entropy only the head
    out = model(**_maps())
    F.cross_entropy(out.logits, labels).backward()
    assert model.branch.fc[-1].weight.grad is None and model.classifier.weight.grad is not None
    out.label_loss(labels).backward()
    assert model.branch.fc[-1].weight.grad is not None
    model.zero_grad(set_to_none=True)
    model.on_epoch_start(2)  # stage 2: the branch is frozen, no hinge term
    out = model(**_maps())
    assert out.label_loss is None
    F.cross_entropy(out.logits, labels).backward()
    assert all(p.grad is None for p in model.branch.parameters()) and model.attention[0].weight.grad is not None


def test_the_atlas_reaches_the_model_as_a_tensor_built_by_the_data_pipeline():
    affine, _ = grid_masks()
    kw = {"num_classes": 2, "img_size": SHAPE, "frames": 4, "preset": "tiny", "functional_map": "falff",
          "grid_affine": affine.ravel().tolist()}
    regions = parcellation(create_config("siamese", **kw))
    assert tuple(regions.labels.shape) == SHAPE and regions.labels.dtype == torch.int64
    assert len(regions.indices) == len(regions.names) and "Hippocampus_L" in regions.names
    model = create_model("siamese", parcellation=regions, **kw)  # the model itself reads no file
    assert model.region_names == _model().region_names
    halves = torch.where(torch.arange(SHAPE[0])[:, None, None] < SHAPE[0] // 2, 1, 2).expand(SHAPE)
    two = create_model("siamese", parcellation=Parcellation(halves.contiguous(), (1, 2), ("left", "right")), **kw)
    assert two.region_names == ("left", "right")
    with pytest.raises(ValueError, match="reads atlas regions: pass its parcellation"):
        create_model("siamese", **kw)
    with pytest.raises(ValueError, match="parcellation's grid"):
        create_model("siamese", parcellation=Parcellation(halves[:8].contiguous(), (1, 2), ("l", "r")), **kw)
    with pytest.raises(ValueError, match="takes no parcellation"):
        create_model("m2m", parcellation=regions, num_classes=2, img_size=SHAPE, frames=4, preset="tiny")


def test_configuration_errors_name_the_fix():
    with pytest.raises(ValueError, match="'auto' must be resolved"):
        _model(functional_map="auto")
    with pytest.raises(ValueError, match="choose 'auto' or one of"):
        _model(functional_map="T1w")
    with pytest.raises(ValueError, match="needs grid_affine"):
        _model(grid_affine=[])
    with pytest.raises(ValueError, match="siamese_min_voxels >= 1"):
        _model(siamese_min_voxels=0)
    with pytest.raises(ValueError, match="no atlas region has >= 100000 voxels"):
        _model(siamese_min_voxels=100000)
    with pytest.raises(ValueError, match="needs the cache map 'falff'"):
        _model()(gm=torch.rand(1, 1, *SHAPE))
    with pytest.raises(ValueError, match=r"gm must be \(B, 1, 16, 16, 16\)"):
        _model()(gm=torch.rand(1, 1, 8, 8, 8), falff=torch.rand(1, 1, *SHAPE))


def test_group_run_resolves_pet_when_every_run_has_it(cache, tmp_path):
    from m2m_bids.training.labels import derive_labels
    from m2m_bids.training.splitrun import SplitRunner

    entries, phenotype = build_planted(cache, n_per_class=1, frames=4, pet=True)
    cfg = arch_config(tmp_path, "siamese")
    labels = derive_labels(phenotype, sorted(phenotype.index), label_column="diagnosis", classes=["CN", "AD"])
    runner = SplitRunner(entries, phenotype, labels, cfg, dist=None, run_dir=tmp_path)  # type: ignore[arg-type]
    model = runner.build_model(0)
    assert model.config.functional_map == "pet" and input_maps(model) == ("gm", "pet")
    assert model.config.grid_affine == tuple(np.ravel(entries[0].meta.affine))
    out = model(gm=torch.rand(2, 1, *SHAPE), pet=torch.rand(2, 1, *SHAPE))
    assert set(out.spatial_attention) == set(out.latents) == {"smri", "pet"}  # explained as PET, not BOLD


def test_a_missing_map_is_refused_with_the_participants_and_the_fix(cache, tmp_path):
    from m2m_bids.exitcodes import AppError, ExitCode
    from m2m_bids.training.labels import derive_labels
    from m2m_bids.training.splitrun import SplitRunner

    entries, phenotype = build_planted(cache, n_per_class=1, frames=4)  # no PET
    cfg = arch_config(tmp_path, "siamese", overrides={"functional_map": "pet"})
    labels = derive_labels(phenotype, sorted(phenotype.index), label_column="diagnosis", classes=["CN", "AD"])
    runner = SplitRunner(entries, phenotype, labels, cfg, dist=None, run_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(AppError, match=r"reads the cache map 'pet'.*2 participant\(s\) lack: sub-01, sub-02") as err:
        runner.check_maps(runner.build_model(0))
    assert err.value.code == ExitCode.DATA_ERROR and "functional_map" in err.value.hint


def test_group_training_learns_the_planted_maps_and_its_attention_finds_the_regions(cache, tmp_path):
    """``--arch siamese`` through train_group (auto -> falff), then the participant level's attention tables."""
    planted = {"gm_atrophy": 2.0, "hypometabolism": 2.0}
    entries, phenotype = build_planted(cache, n_per_class=14, frames=4, seed=1, **planted)
    cfg = arch_config(tmp_path, "siamese")
    bundle, card = train_learns(entries, phenotype, cfg)
    out = cfg.execution.output_dir
    assert card["model"]["config"]["functional_map"] == "falff"  # auto, resolved from the data
    model = load_bundle(bundle).model  # rebuilt from the card, weights checksum-verified

    held_out, _ = build_planted(cache, n_per_class=1, frames=4, seed=9, first=41, **planted)
    assert apply_model(bundle, held_out, participant_config(cfg)) == {}
    func = out / "sub-42" / "ses-1" / "func"
    anat = out / "sub-42" / "ses-1" / "anat"
    # saliency on the GM and fALFF map inputs is written as the T1w and BOLD saliency
    assert list(anat.glob("*stat-saliency_desc-T1w_statmap.nii.gz"))
    assert list(func.glob("*stat-saliency_desc-bold_statmap.nii.gz"))
    tables = {"T1w": next(anat.glob("*stat-attention_desc-T1w_table.tsv")),
              "bold": next(func.glob("*stat-attention_desc-bold_table.tsv"))}
    for desc, planted_regions in (("T1w", ATROPHY), ("bold", HYPOMETABOLISM)):
        table = pd.read_csv(tables[desc], sep="\t", na_values="n/a")
        ranked = table.dropna(subset=["rank"])
        ranked = ranked[ranked["name"].isin(model.region_names)]  # the regions the model reads
        median = ranked["rank"].median()
        ranks = ranked.set_index("name").loc[list(planted_regions), "rank"]
        assert ranks.mean() < median, (desc, ranks.to_dict(), median)

    from m2m_bids.interpret.group import write_group_interpretation

    bids = cfg.execution.bids_dir  # the group explanation reads the true labels from participants.tsv
    bids.mkdir(parents=True, exist_ok=True)
    table = phenotype.rename_axis("participant_id").rename(index=lambda p: f"sub-{p}")
    table.to_csv(bids / "participants.tsv", sep="\t")
    group = write_group_interpretation(bundle, entries[:6] + held_out, cfg)
    top = pd.read_csv(group / "atlas-aal_desc-topregions_table.tsv", sep="\t")
    assert set(top["modality"]) == {"T1w", "bold"} and set(top["stat"]) == {"attention", "saliency"}
