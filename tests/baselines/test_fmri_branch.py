"""The fMRI branch on its own learns a planted BOLD effect (``swift`` and ``m2m --modalities fmri``)."""

from __future__ import annotations

import pytest
from planted import arch_config, build_planted, train_learns


@pytest.mark.parametrize("arch", ["swift", "m2m"])
def test_fmri_only_models_learn_a_planted_bold_amplitude_effect(arch, cache, tmp_path):
    """AD has a larger BOLD fluctuation in both middle cingulate gyri (one series shared by the region,
    4 x the voxel noise SD); nothing else differs, so a CV ROC-AUC >= 0.8 can only come from the fMRI
    windows the 4D Swin encoder reads. With 10 participants per class or an effect of 2-3 SD the tiny
    encoder memorises the noise of its ~13 training participants instead (CV ROC-AUC 0.67-0.78)."""
    entries, phenotype = build_planted(cache, n_per_class=16, frames=8, amplitude=4.0, seed=1)
    cfg = arch_config(tmp_path, arch, epochs=20)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"modalities": ["fmri"]})})
    _, card = train_learns(entries, phenotype, cfg)
    assert card["modalities"] == ["fmri"]
