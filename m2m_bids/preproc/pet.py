"""PET on the grid: frame averaging and the intensity normalisation of Arco et al.

FDG PET is read as a static uptake image: the frames of the (post-uptake) acquisition are averaged,
weighted by their durations so a long frame counts for its counts. Its absolute scale (Bq/mL)
depends on the injected dose, body weight and scanner calibration, so it is normalised per
image: divided by the mean of the brightest 0.1 % of brain voxels (a robust "maximum" that single
hot voxels cannot drive), and voxels below 10 % of that are set to 0 (background and CSF), as
Arco et al. do for their siamese PET/MRI classifier.
"""

from __future__ import annotations

import numpy as np

#: Fraction of the in-mask voxels whose mean is the reference intensity.
TOP_FRACTION = 0.001
#: Voxels under this fraction of the reference are set to 0.
FLOOR_FRACTION = 0.1


def frame_average(data: np.ndarray, durations: list[float] | None) -> np.ndarray:
    """Mean over the frames of a 4D PET (X, Y, Z, F), weighted by ``durations`` when given.

    A 3D image is returned as it is. Raises ``ValueError`` when ``durations`` does not have one
    positive value per frame.
    """
    volume = np.asarray(data, dtype=np.float32)
    if volume.ndim == 3:
        return volume
    if durations is None:
        return volume.mean(axis=-1)
    weights = np.asarray(durations, dtype=np.float64)
    if weights.shape != (volume.shape[-1],) or np.any(weights <= 0):
        raise ValueError(f"FrameDuration has {weights.size} value(s) for {volume.shape[-1]} frame(s) "
                         "(or a value <= 0)")
    return (np.tensordot(volume, weights / weights.sum(), axes=([-1], [0]))).astype(np.float32)


def normalise_pet(pet: np.ndarray, mask: np.ndarray, *, top_fraction: float = TOP_FRACTION,
                  floor_fraction: float = FLOOR_FRACTION) -> np.ndarray:
    """``pet`` divided by the mean of its top ``top_fraction`` in-mask voxels; under
    ``floor_fraction`` of that, and outside the mask, 0."""
    inside = np.asarray(mask) > 0
    out = np.zeros(inside.shape, dtype=np.float32)
    values = np.asarray(pet, dtype=np.float32)[inside]
    if values.size == 0:
        return out
    n_top = max(1, int(np.ceil(top_fraction * values.size)))
    reference = float(np.partition(values, values.size - n_top)[values.size - n_top:].mean())
    if reference <= 0:
        return out
    scaled = values / reference
    out[inside] = np.where(scaled >= floor_fraction, scaled, 0.0)
    return out
