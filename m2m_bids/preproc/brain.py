"""Brain extraction of the T1w before registration (deepbet, Fisch et al. 2024).

Why: the MNI template is brain-only and real T1w scans are whole-head. Registering a head to a
brain lets scalp, neck and face pull the fit (on the shared real scans the template correlation
fell to 0.05-0.5), so the brain is extracted first and only the brain is registered.

Why deepbet: its two small 3D U-Nets (bounding box, then mask) ship inside the PyPI wheel (~17 MB
of TorchScript weights), it runs offline on CPU and GPU through torch, which the app already needs,
and it reached Dice 0.95-0.98 against the skull-stripped scans of the shared real set in 8-20 s
on 2 CPU cores (docs/preprocessing.md). Inputs that are already skull-stripped keep every
non-zero voxel (:func:`brain_mask`).
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

log = logging.getLogger(__name__)

#: Fraction of an image's non-zero voxels inside the predicted mask above which the image counts as
#: already skull-stripped (whole-head scans: 0.2-0.4; skull-stripped ones: >= 0.97).
STRIPPED_FRACTION = 0.9


def predict_brain(img: nib.Nifti1Image, threads: int = 1) -> np.ndarray:
    """deepbet's brain mask (bool, on ``img``'s voxel grid) of a 3D T1w.

    Runs on the GPU when torch sees one (cuDNN in deterministic mode, so a rerun gives the same
    mask), else on ``threads`` CPU threads.
    """
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, threads))
    use_gpu = torch.cuda.is_available()
    data = np.asarray(img.dataobj, dtype=np.float32)
    image = nib.Nifti1Image(np.nan_to_num(data), img.affine)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        _, mask_img, _ = BrainExtraction(no_gpu=not use_gpu).run(image)
    return np.asarray(mask_img.dataobj) > 0


def brain_mask(img: nib.Nifti1Image, threads: int = 1) -> tuple[np.ndarray, bool]:
    """(mask, already_stripped) of a 3D T1w.

    A skull-stripped input passes through unharmed: when nearly all its non-zero voxels fall in
    the predicted mask, the mask is its own non-zero region (holes filled), so no brain voxel is cut.
    """
    from scipy import ndimage

    predicted = predict_brain(img, threads)
    nonzero = np.asarray(img.dataobj, dtype=np.float32) > 0
    inside = float((nonzero & predicted).sum()) / max(int(nonzero.sum()), 1)
    if inside >= STRIPPED_FRACTION:
        log.info("the T1w is already skull-stripped (%.0f %% of its non-zero voxels are brain): "
                 "keeping its own brain region", 100 * inside)
        return ndimage.binary_fill_holes(nonzero), True
    return predicted, False


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 0.0
