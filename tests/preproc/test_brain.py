"""Brain extraction (deepbet) on the synthetic phantom: a whole-head version and a skull-stripped one."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from helpers import head_image, rigid_matrix, subject_affine  # noqa: E402

from m2m_bids.preproc.brain import brain_mask, dice  # noqa: E402
from m2m_bids.preproc.grid import OutputGrid  # noqa: E402
from m2m_bids.preproc.template import template_image  # noqa: E402
from m2m_bids.preproc.resample import resample_series  # noqa: E402

POSE = rigid_matrix((6.0, -4.0, 5.0), (5.0, -4.0, 3.0))  # subject mm -> MNI mm
SHAPE = (80, 96, 80)


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(brain-only T1w, its true brain mask, affine) at 2.4 mm: the template in a tilted head pose."""
    affine = subject_affine(SHAPE, 2.4, flip_x=True)
    brain_t1 = head_image(2.0, POSE, SHAPE, affine)
    mask_img = template_image("mask", 2.0)
    grid = OutputGrid(shape=SHAPE, affine=affine, resolution_mm=2.4)
    truth = resample_series(np.asarray(mask_img.dataobj), mask_img.affine, grid, POSE[None]) > 0.5
    return brain_t1, truth, affine


def test_whole_head_phantom_brain_dice_at_least_0p9() -> None:
    """The phantom wrapped in CSF, skull and a bright scalp (what real T1w scans look like)."""
    brain_t1, truth, affine = _phantom()
    rng = np.random.default_rng(0)
    csf = ndimage.binary_dilation(truth, iterations=1) & ~truth
    skull = ndimage.binary_dilation(truth, iterations=3) & ~ndimage.binary_dilation(truth, iterations=1)
    scalp = ndimage.binary_dilation(truth, iterations=6) & ~ndimage.binary_dilation(truth, iterations=3)
    head = brain_t1 + 80.0 * csf + 30.0 * skull + 900.0 * scalp + rng.normal(0, 15, SHAPE)
    mask, stripped = brain_mask(nib.Nifti1Image(head.astype(np.float32), affine), threads=2)
    assert not stripped
    assert dice(mask, truth) >= 0.9, dice(mask, truth)
    assert not (mask & scalp).sum() > 0.02 * scalp.sum()  # the scalp is not brain


def test_skull_stripped_input_passes_through_unharmed() -> None:
    """An already skull-stripped T1w keeps every one of its brain voxels."""
    brain_t1, truth, affine = _phantom()
    stripped_t1 = np.where(truth, brain_t1, 0.0).astype(np.float32)
    mask, stripped = brain_mask(nib.Nifti1Image(stripped_t1, affine), threads=2)
    assert stripped
    assert mask[stripped_t1 > 0].all()
    assert dice(mask, truth) >= 0.95, dice(mask, truth)
