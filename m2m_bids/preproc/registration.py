"""Registration with ANTs (antspyx): T1w -> MNI template and mean BOLD -> T1w.

Why antspyx: it is the ANTs everybody trusts, as a wheel (no binaries to install), 4-13x faster
than dipy at equal accuracy (docs/dependency-probe.md section 4).

Convention used everywhere in ``m2m_bids.preproc``: a transform is a *pull* map in RAS world mm,
taking a point of the fixed (target) space to the corresponding point of the moving (source)
space, as a 4x4 matrix; that is what resampling needs. ANTs/ITK work in LPS, so matrices are
conjugated with diag(-1, -1, 1) on the way out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from m2m_bids.preproc.grid import OutputGrid
from m2m_bids.preproc.template import template_image
from m2m_bids.preproc.images import voxel_sizes

log = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ANTS_TYPES = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN"}


def to_ants(img: nib.Nifti1Image):  # -> ants.ANTsImage
    """A nibabel RAS image as an ANTs image (LPS physical space), without a temporary file."""
    import ants

    affine = _LPS @ img.affine
    spacing = voxel_sizes(affine)
    direction = affine[:3, :3] / spacing
    data = np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32))
    return ants.from_numpy(data, origin=affine[:3, 3].tolist(), spacing=spacing.tolist(), direction=direction)


def ants_affine_to_ras(path: str) -> np.ndarray:
    """Read an ITK affine ``.mat`` (fixed -> moving point map, LPS) as a 4x4 RAS pull matrix."""
    import ants

    tx = ants.read_transform(path)
    params = np.asarray(tx.parameters, dtype=np.float64)
    center = np.asarray(tx.fixed_parameters, dtype=np.float64)[:3]
    matrix = params[:9].reshape(3, 3)
    translation = params[9:12]
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + center - matrix @ center
    return _LPS @ lps @ _LPS


def _single_threaded_itk() -> None:
    """ITK reads its thread count from the environment when a process first uses it.

    One thread: ANTs sums the metric over threads in whatever order they finish, so a
    multi-threaded registration differs from run to run even with a fixed seed (measured:
    translations differed by 0.002-0.003 mm on a self-registration). The preprocessing runs nodes
    in parallel instead (``--nprocs``); :func:`m2m_bids.preproc.api` sets this before its workers start.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"


def bias_correct(img: nib.Nifti1Image, brain: np.ndarray, resolution_mm: float) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Downsample the T1w and its brain mask to ``resolution_mm``, N4 bias-field correct with the
    field fitted inside the brain, clip the top 0.5 % of brain intensities (robust scale).

    Why the brain mask: fitted on the whole head, N4 spends its smooth field on scalp fat and
    neck, and a strongly shaded scan (sub-03 of the shared real set) keeps a front-to-back
    gradient that halves its template correlation. Registration runs at 2 mm for a 3 mm output:
    finer adds seconds and no accuracy at 3 mm. Returns (prepared T1w, brain mask on its grid).
    """
    import ants

    image = to_ants(img)
    mask = to_ants(nib.Nifti1Image(brain.astype(np.float32), img.affine))
    spacing = np.asarray(image.spacing)
    if np.any(spacing < resolution_mm * 0.9):
        target = tuple(np.maximum(spacing, resolution_mm).tolist())
        image = ants.resample_image(image, target, use_voxels=False, interp_type=0)
        mask = ants.resample_image(mask, target, use_voxels=False, interp_type=0)
    inside = mask.numpy() > 0.5
    data = image.numpy()
    data = data - float(np.percentile(data, 1))
    image = image.new_image_like(np.clip(data, 0, None).astype(np.float32))
    if min(image.shape) >= 8 and inside.sum() >= 1000:
        try:
            image = ants.n4_bias_field_correction(image, mask=mask.new_image_like(inside.astype(np.float32)),
                                                  shrink_factor=4, rescale_intensities=True,
                                                  convergence={"iters": [50, 50, 30, 20], "tol": 1e-6})
        except (RuntimeError, ValueError) as err:  # tiny/odd images: keep going without N4
            log.warning("N4 bias-field correction skipped: %s", err)
    arr = image.numpy()
    reference = arr[inside & (arr > 0)] if np.any(inside & (arr > 0)) else arr[arr > 0]
    arr = np.clip(arr, 0, np.percentile(reference, 99.5) if reference.size else 1.0)
    return _from_ants(image.new_image_like(arr.astype(np.float32))), inside


def _from_ants(image) -> nib.Nifti1Image:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.direction) * np.asarray(image.spacing)
    affine[:3, 3] = image.origin
    return nib.Nifti1Image(image.numpy().astype(np.float32), _LPS @ affine)


def ants_seed(seed: int) -> int:
    """The ANTs seed of a run seed: ANTs takes 0 to mean "seed from the clock", so 1 is added."""
    return int(seed) % (2**31 - 2) + 1


@contextmanager
def seeded(seed: int):
    """ANTs metric sampling seeded for the calls inside (antspy passes ``--random-seed`` only when
    its config holds one; unseeded, each run samples other points and lands elsewhere)."""
    import ants

    previous = ants.config._random_seed
    ants.config._random_seed = ants_seed(seed)
    try:
        yield
    finally:
        ants.config._random_seed = previous


@dataclass(frozen=True)
class Registration:
    """A pull map fixed -> moving: ``matrix`` (4x4 RAS) and, for SyN, ``coords`` on the output grid."""

    matrix: np.ndarray
    coords: np.ndarray | None = None  # (X, Y, Z, 3) moving-space mm of each output-grid voxel


def register_t1w_to_template(t1w: nib.Nifti1Image, brain: np.ndarray, method: str, reg_resolution_mm: float,
                             grid: OutputGrid, seed: int = 0) -> Registration:
    """Register the extracted brain of a bias-corrected T1w to the brain-only MNI template.

    Brain to brain: ``brain`` (the T1w's brain mask, :mod:`m2m_bids.preproc.brain`) zeroes scalp,
    neck and face, which the template lacks; the fit starts from the alignment of the two brains'
    centres of mass (antspy's default initial transform). Seeded (:func:`seeded`) and single-
    threaded (:func:`_single_threaded_itk`), a rerun gives the same transform.
    """
    import ants
    from scipy import ndimage

    _single_threaded_itk()
    fixed_img = template_image("t1", reg_resolution_mm)
    mask_img = template_image("mask", reg_resolution_mm)
    dilated = ndimage.binary_dilation(np.asarray(mask_img.dataobj) > 0, iterations=2).astype(np.float32)
    fixed = to_ants(fixed_img)
    data = np.asarray(t1w.dataobj, dtype=np.float32) * brain
    moving = to_ants(nib.Nifti1Image(data, t1w.affine))
    mask = to_ants(nib.Nifti1Image(dilated, mask_img.affine))
    with tempfile.TemporaryDirectory(prefix="m2m-ants-") as tmp, seeded(seed):
        result = ants.registration(fixed=fixed, moving=moving, type_of_transform=_ANTS_TYPES[method], mask=mask,
                                   outprefix=os.path.join(tmp, "t1w2mni_"), reg_iterations=(40, 20, 0))
        transforms = result["fwdtransforms"]
        affine_file = next(t for t in transforms if t.endswith(".mat"))
        matrix = ants_affine_to_ras(affine_file)
        coords = _warp_coords(grid, transforms, moving) if method == "syn" else None
    return Registration(matrix=matrix, coords=coords)


def _warp_coords(grid: OutputGrid, transforms: list[str], moving) -> np.ndarray:
    """Moving-space RAS mm of each grid voxel under a nonlinear transform stack.

    Done by warping three coordinate images of a padded box around the moving image (linear
    images are interpolated exactly); points that leave the box get NaN (later zero).
    """
    import ants

    grid_img = to_ants(nib.Nifti1Image(np.zeros(grid.shape, np.float32), grid.affine))
    spacing = np.asarray(moving.spacing)
    origin = np.asarray(moving.origin) - 20 * spacing * np.sign(np.diag(np.asarray(moving.direction)))
    shape = np.asarray(moving.shape) + 40
    box = ants.from_numpy(np.ones(tuple(shape.tolist()), np.float32), origin=origin.tolist(),
                          spacing=spacing.tolist(), direction=np.asarray(moving.direction))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    phys = idx * spacing @ np.asarray(moving.direction).T + origin  # LPS mm
    out = []
    for axis in range(3):
        ras = phys[..., axis] * (-1.0 if axis < 2 else 1.0)
        img = box.new_image_like(ras.astype(np.float32))
        out.append(ants.apply_transforms(grid_img, img, transforms, interpolator="linear").numpy())
    valid = ants.apply_transforms(grid_img, box, transforms, interpolator="linear", defaultvalue=0).numpy()
    coords = np.stack(out, axis=-1)
    coords[valid < 0.999] = np.nan
    return coords


def register_rigid_to_t1w(moving: nib.Nifti1Image, t1w: nib.Nifti1Image, *, seed: int = 0) -> np.ndarray:
    """Rigid registration of another contrast of the same head (mean BOLD, PET) to its T1w, with
    Mattes mutual information (the contrasts differ); returns the T1w -> ``moving`` pull map."""
    import ants

    _single_threaded_itk()
    fixed = to_ants(t1w)
    moving_ants = to_ants(moving)
    with tempfile.TemporaryDirectory(prefix="m2m-ants-") as tmp, seeded(seed):
        result = ants.registration(fixed=fixed, moving=moving_ants, type_of_transform="Rigid",
                                   outprefix=os.path.join(tmp, "rigid2t1w_"),
                                   aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
                                   aff_iterations=(500, 250, 50))
        return ants_affine_to_ras(result["fwdtransforms"][0])
