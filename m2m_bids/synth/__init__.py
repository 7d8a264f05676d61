"""Synthetic BIDS datasets with planted, recorded Alzheimer's-spectrum group differences.

``generate_dataset(out_dir, SynthSpec.preset("tiny"))`` writes T1w + resting BOLD (+ FDG PET with
``pet=True``) + a clinical participants.tsv, with ``sourcedata/ground_truth.json`` holding every planted effect, head pose,
affine, slice timing and motion parameter; ``m2m-synth OUT_DIR`` is the command-line form.
"""

from m2m_bids.synth.cli import main
from m2m_bids.synth.dataset import GROUND_TRUTH, atrophy_severity, generate_dataset, mni_grid
from m2m_bids.synth.geometry import motion_matrices, rigid_matrix
from m2m_bids.synth.spec import PRESETS, SynthSpec

__all__ = ["GROUND_TRUTH", "PRESETS", "SynthSpec", "atrophy_severity", "generate_dataset", "main",
           "mni_grid", "motion_matrices", "rigid_matrix"]
