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
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from m2m_bids.preproc.grid import OutputGrid, template_image
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


def _set_threads(threads: int, seed: int) -> None:
    """ITK reads both from the environment of the process (nipype runs each node in its own)."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, threads))
    os.environ["ANTS_RANDOM_SEED"] = str(seed)


def bias_correct(img: nib.Nifti1Image, resolution_mm: float) -> nib.Nifti1Image:
    """Downsample to ``resolution_mm``, N4 bias-field correct, clip the top 0.5 % (robust scale).

    Registration runs at 2 mm for a 3 mm output: finer adds seconds and no accuracy at 3 mm.
    """
    import ants

    image = to_ants(img)
    spacing = np.asarray(image.spacing)
    if np.any(spacing < resolution_mm * 0.9):
        target = np.maximum(spacing, resolution_mm)
        image = ants.resample_image(image, tuple(target.tolist()), use_voxels=False, interp_type=0)
    data = image.numpy()
    data = data - float(np.percentile(data, 1))
    image = image.new_image_like(np.clip(data, 0, None).astype(np.float32))
    if min(image.shape) >= 8:
        head = ants.get_mask(image, low_thresh=float(np.percentile(image.numpy(), 60)) * 0.3, cleanup=0)
        try:
            image = ants.n4_bias_field_correction(image, mask=head, shrink_factor=4,
                                                  convergence={"iters": [20, 20, 10], "tol": 1e-5})
        except (RuntimeError, ValueError) as err:  # tiny/odd images: keep going without N4
            log.warning("N4 bias-field correction skipped: %s", err)
    arr = image.numpy()
    arr = np.clip(arr, 0, np.percentile(arr[arr > 0], 99.5) if np.any(arr > 0) else 1.0)
    return _from_ants(image.new_image_like(arr.astype(np.float32)))


def _from_ants(image) -> nib.Nifti1Image:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.direction) * np.asarray(image.spacing)
    affine[:3, 3] = image.origin
    return nib.Nifti1Image(image.numpy().astype(np.float32), _LPS @ affine)


def estimate_brain_center(img: nib.Nifti1Image) -> np.ndarray:
    """RAS mm of the brain centre in a head image, for initialising registration.

    The centre of mass of a whole-head scan sits in the neck and face, tens of mm below the brain,
    and a brain-only template then pulls the fit into a wrong local optimum (seen on real scans).
    The top of the head is reliable: the brain centre lies ~80 mm below it (MNI: skull top ~+85 mm,
    brain centre +5 mm). Scans covering less than 120 mm in z fall back to the centre of mass.
    """
    from scipy import ndimage

    data = np.asarray(img.dataobj, dtype=np.float32)
    positive = data[data > 0]
    threshold = 0.2 * float(np.percentile(positive, 90)) if positive.size else 0.0
    head = ndimage.binary_opening(data > threshold, iterations=1)
    if head.sum() < 100:
        head = data > threshold
    world = np.argwhere(head) @ img.affine[:3, :3].T + img.affine[:3, 3]
    if len(world) == 0:
        return img.affine[:3, :3] @ ((np.asarray(data.shape) - 1) / 2.0) + img.affine[:3, 3]
    top, bottom = np.percentile(world[:, 2], [99.5, 0.5])
    if top - bottom < 120.0:
        return world.mean(axis=0)
    upper = world[world[:, 2] > top - 150.0]
    centre = upper.mean(axis=0)
    centre[2] = top - 80.0
    return centre


def _initial_translation(t1w: nib.Nifti1Image, folder: str) -> str:
    """An ITK transform file moving the template brain centre onto the T1w's estimated brain centre."""
    import ants

    from m2m_bids.preproc.grid import BRAIN_CENTER_MM

    offset = estimate_brain_center(t1w) - np.asarray(BRAIN_CENTER_MM)  # template -> T1w pull, RAS
    transform = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    transform.set_parameters(list(np.eye(3).ravel()) + (offset * np.array([-1.0, -1.0, 1.0])).tolist())
    path = os.path.join(folder, "init_translation.mat")
    ants.write_transform(transform, path)
    return path


@dataclass(frozen=True)
class Registration:
    """A pull map fixed -> moving: ``matrix`` (4x4 RAS) and, for SyN, ``coords`` on the output grid."""

    matrix: np.ndarray
    coords: np.ndarray | None = None  # (X, Y, Z, 3) moving-space mm of each output-grid voxel


def register_t1w_to_template(t1w: nib.Nifti1Image, method: str, reg_resolution_mm: float, grid: OutputGrid,
                             threads: int = 1, seed: int = 0) -> Registration:
    """Register a bias-corrected T1w to the MNI template (rigid, affine or SyN).

    The fixed mask is the dilated template brain mask, so skull and neck in a T1w that is not
    skull-stripped do not pull the fit (the template is brain-extracted), and the fit starts from
    the estimated brain centre (:func:`estimate_brain_center`), not the head's centre of mass.
    """
    import ants
    from scipy import ndimage

    _set_threads(threads, seed)
    fixed_img = template_image("t1", reg_resolution_mm)
    mask_img = template_image("mask", reg_resolution_mm)
    dilated = ndimage.binary_dilation(np.asarray(mask_img.dataobj) > 0, iterations=2).astype(np.float32)
    fixed = to_ants(fixed_img)
    moving = to_ants(t1w)
    mask = to_ants(nib.Nifti1Image(dilated, mask_img.affine))
    with tempfile.TemporaryDirectory(prefix="m2m-ants-") as tmp:
        result = ants.registration(fixed=fixed, moving=moving, type_of_transform=_ANTS_TYPES[method], mask=mask,
                                   initial_transform=[_initial_translation(t1w, tmp)],
                                   outprefix=os.path.join(tmp, "t1w2mni_"),
                                   reg_iterations=(40, 20, 0))
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


def register_rigid_to_t1w(moving: nib.Nifti1Image, t1w: nib.Nifti1Image, *, threads: int = 1,
                          seed: int = 0) -> np.ndarray:
    """Rigid registration of another contrast of the same head (mean BOLD, PET) to its T1w, with
    Mattes mutual information (the contrasts differ); returns the T1w -> ``moving`` pull map."""
    import ants

    _set_threads(threads, seed)
    fixed = to_ants(t1w)
    moving_ants = to_ants(moving)
    with tempfile.TemporaryDirectory(prefix="m2m-ants-") as tmp:
        result = ants.registration(fixed=fixed, moving=moving_ants, type_of_transform="Rigid",
                                   outprefix=os.path.join(tmp, "rigid2t1w_"),
                                   aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
                                   aff_iterations=(500, 250, 50))
        return ants_affine_to_ras(result["fwdtransforms"][0])
