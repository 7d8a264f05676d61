"""How large the planted fMRI effect is in preprocessed data: per class, region coherence and lag-1
autocorrelation of the cached (z-scored) BOLD in the regions of ``FLUCTUATION_LOSS_AD``.

The synthetic generator lowers the fluctuation amplitude of posterior cingulate and precuneus in AD;
after the per-voxel z-score the amplitude itself is gone, and what remains is how much of each voxel's
series is the shared regional signal (coherence = mean pairwise correlation of the region's voxels)
and how smooth it is in time (lag-1 autocorrelation). A reference set of regions without a planted
change shows the level both reach by themselves.

    python benchmarks/fmri_effect.py /tmp/cmp/cache /tmp/cmp/bids/participants.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from m2m_bids.atlases import load_atlas
from m2m_bids.preproc.cache import TensorCache
from m2m_bids.synth.spec import FLUCTUATION_LOSS_AD

REFERENCE = ("Cingulate_Mid_L", "Cingulate_Mid_R", "Insula_L", "Insula_R")


def region_stats(fmri: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean pairwise voxel correlation and mean lag-1 autocorrelation of the voxels in ``mask``."""
    series = fmri[mask]
    series = series[series.std(axis=1) > 0]
    n = len(series)
    corr = np.corrcoef(series)
    coherence = (corr.sum() - n) / (n * n - n)
    lag1 = np.mean([np.corrcoef(v[:-1], v[1:])[0, 1] for v in series])
    return float(coherence), float(lag1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache", type=Path)
    p.add_argument("participants", type=Path, help="participants.tsv with a diagnosis column")
    args = p.parse_args(argv)
    diagnosis = pd.read_csv(args.participants, sep="\t").set_index("participant_id")["diagnosis"]
    cache = TensorCache(args.cache)
    rows = []
    for key in cache.keys():
        entry = cache.get(key, verify=False)
        fmri = np.asarray(entry.load("fmri"), dtype=np.float32)
        grid = nib.Nifti1Image(np.zeros(fmri.shape[:3], np.uint8), entry.meta.affine)
        atlas = load_atlas("aal", target=grid)
        target = region_stats(fmri, atlas.mask(list(FLUCTUATION_LOSS_AD)))
        reference = region_stats(fmri, atlas.mask(list(REFERENCE)))
        rows.append({"diagnosis": diagnosis[f"sub-{entry.meta.participant}"], "coherence": target[0],
                     "lag1": target[1], "coherence_ref": reference[0], "lag1_ref": reference[1]})
    table = pd.DataFrame(rows).groupby("diagnosis").agg(["mean", "std"]).round(3)
    sys.stdout.write(table.to_string() + "\n")


if __name__ == "__main__":
    main()
