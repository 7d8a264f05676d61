"""The offline atlas loader: bundled AAL2 (and friends), resampling, and user atlases."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from m2m_bids.atlases import available_atlases, load_atlas, load_atlas_file, resample_labels
from m2m_bids.exitcodes import AppError, ExitCode


def _mni_grid(res: float = 3.0) -> nib.Nifti1Image:
    """An RAS MNI grid like nilearn's template at ``res`` mm."""
    affine = np.diag([res, res, res, 1.0])
    affine[:3, 3] = [-98.0, -134.0, -72.0]
    shape = tuple(int((n - 1) // res) + 1 for n in (197, 233, 189))
    return nib.Nifti1Image(np.zeros(shape, np.uint8), affine)


def test_available_includes_aal_and_probabilistic():
    names = available_atlases()
    assert "aal" in names and "harvard_oxford" in names


def test_aal_native_labels_and_metadata():
    atlas = load_atlas()
    assert atlas.name == "aal"
    assert atlas.image.shape == (75, 92, 75)
    assert list(atlas.labels.columns) == ["index", "name"]
    assert len(atlas.labels) == 120
    assert atlas.index_of("Hippocampus_L") == 4101
    assert "Rolls" in atlas.citation and atlas.licence
    assert np.asarray(atlas.image.dataobj).dtype == np.int32


def test_resampled_to_target_keeps_anatomy():
    target = _mni_grid(3.0)
    atlas = load_atlas("aal", target=target)
    assert atlas.image.shape == target.shape
    np.testing.assert_allclose(atlas.image.affine, target.affine)
    idx = np.argwhere(atlas.mask("Hippocampus_L"))
    centroid = target.affine[:3, :3] @ idx.mean(axis=0) + target.affine[:3, 3]
    # AAL left hippocampus sits near MNI (-25, -21, -10)
    assert np.linalg.norm(centroid - np.array([-25.0, -21.0, -10.0])) < 8.0
    right = np.argwhere(atlas.mask("Hippocampus_R")).mean(axis=0)
    assert (target.affine[:3, :3] @ right + target.affine[:3, 3])[0] > 15.0  # R is +x (RAS target)
    assert len(atlas.present_labels()) > 100


@pytest.mark.slow  # decompressing the 4D Harvard-Oxford file (0.5 GB) takes ~20 s
def test_probabilistic_atlas_becomes_labels():
    atlas = load_atlas("harvard_oxford", target=_mni_grid(4.0))
    data = np.asarray(atlas.image.dataobj)
    assert data.ndim == 3 and data.min() == 0
    assert set(np.unique(data)) - {0} <= set(atlas.labels["index"])
    assert atlas.labels["index"].min() == 1
    assert atlas.mask(atlas.labels["name"].iloc[0]).sum() > 0


def test_unknown_atlas_and_region():
    with pytest.raises(AppError) as err:
        load_atlas("nonexistent")
    assert err.value.code == ExitCode.USAGE
    with pytest.raises(KeyError, match="Hippocampus"):
        load_atlas().index_of("Hippocampus")


def test_user_atlas_file_roundtrip(tmp_path):
    data = np.zeros((10, 10, 10), np.int16)
    data[2:5, 2:5, 2:5] = 7
    data[6:9, 6:9, 6:9] = 3
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "atlas-toy_dseg.nii.gz")
    pd.DataFrame({"index": [3, 7], "name": ["B", "A"]}).to_csv(tmp_path / "atlas-toy_dseg.tsv",
                                                                sep="\t", index=False)
    target = nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), np.eye(4))
    atlas = load_atlas_file(tmp_path / "atlas-toy_dseg.nii.gz", tmp_path / "atlas-toy_dseg.tsv",
                            target=target)
    assert atlas.name == "atlas-toy"
    assert atlas.image.shape == (20, 20, 20)
    assert atlas.mask("A").sum() == 6 ** 3  # 3 voxels of 2 mm -> 6 voxels of 1 mm per axis


def test_user_atlas_errors_name_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "a.nii.gz")
    (tmp_path / "a.tsv").write_text("label\tregion\n1\tX\n")
    with pytest.raises(AppError) as err:
        load_atlas_file(tmp_path / "a.nii.gz", tmp_path / "a.tsv")
    assert err.value.code == ExitCode.DATA_ERROR and "a.tsv" in str(err.value)
    with pytest.raises(AppError) as err:
        load_atlas_file(tmp_path / "missing.nii.gz", tmp_path / "a.tsv")
    assert err.value.code == ExitCode.NO_INPUT


def test_resample_labels_is_nearest():
    data = np.arange(27, dtype=np.int32).reshape(3, 3, 3)
    src = nib.Nifti1Image(data, np.eye(4))
    out = resample_labels(src, nib.Nifti1Image(np.zeros((3, 3, 3)), np.eye(4)))
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)
    shifted = np.eye(4)
    shifted[0, 3] = 0.4  # less than half a voxel: nearest keeps the same labels
    out = resample_labels(src, nib.Nifti1Image(np.zeros((3, 3, 3)), shifted))
    np.testing.assert_array_equal(np.asarray(out.dataobj)[:2], data[:2])
