#!/usr/bin/env python
"""Benchmark the preprocessing of one raw participant of realistic size, stage by stage.

T1w 176x256x256 at 1 mm and BOLD 64x64x36 at 3.5 mm with 200 volumes (synthetic, made from the
MNI template with a known head pose and motion). Reports wall time and the process's peak RSS
after each stage (stages run in this process, in the order the workflow runs them), then the
whole participant through ``preprocess_participants`` (nipype MultiProc) with the peak RSS of the
whole process tree (workers included, sampled from /proc every 0.1 s). Targets: < 90 s and < 4 GB
peak RSS on 2 cores.

    python benchmarks/preproc.py --threads 2 [--volumes 200] [--pet] [--out /tmp/m2m-bench-preproc]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def tree_rss_gb(root: int) -> float:
    """Current RSS (GB) of process ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / 1024**3


class TreePeak:
    """Samples :func:`tree_rss_gb` of this process in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.peak, self.interval_s = 0.0, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_gb(os.getpid()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "TreePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_inputs(root: Path, n_volumes: int) -> tuple[Path, Path, dict]:
    """A realistic-size T1w + BOLD pair (template moved by a rigid head pose, BOLD with motion)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "preproc"))
    from helpers import head_image, rigid_matrix, subject_affine

    from m2m_bids.preproc.grid import OutputGrid
    from m2m_bids.preproc.motion import params_to_matrices
    from m2m_bids.preproc.resample import resample_series

    pose = rigid_matrix((5, -3, 4), (4, -6, 3))
    t1_shape = (176, 256, 256)
    t1_aff = subject_affine(t1_shape, 1.0, flip_x=True)
    t1 = head_image(1.0, pose, t1_shape, t1_aff)
    t1_path = root / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(t1.astype(np.int16), t1_aff), str(t1_path))
    shape = (64, 64, 36)
    aff = subject_affine(shape, 3.5)
    base = head_image(2.0, pose, shape, aff)
    rng = np.random.default_rng(0)
    motion = np.cumsum(rng.normal(0, [0.05, 0.05, 0.05, 0.001, 0.001, 0.001], (n_volumes, 6)), axis=0)
    center = aff[:3, :3] @ ((np.asarray(shape) - 1) / 2) + aff[:3, 3]
    series = resample_series(np.repeat(base[..., None], n_volumes, -1), aff, OutputGrid(shape, aff, 3.5),
                             np.linalg.inv(params_to_matrices(motion, center)))
    series += rng.normal(0, 10, series.shape)
    bold_path = root / "sub-01_task-rest_bold.nii.gz"
    img = nib.Nifti1Image(series.astype(np.int16), aff)
    img.header.set_zooms((3.5, 3.5, 3.5, 2.0))
    nib.save(img, str(bold_path))
    n_slices = shape[2]
    times = np.zeros(n_slices)
    times[list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))] = np.arange(n_slices) * 2.0 / n_slices
    meta = {"RepetitionTime": 2.0, "SliceTiming": times.round(4).tolist(), "SliceEncodingDirection": "k"}
    return t1_path, bold_path, meta


def make_pet(root: Path, frames: int = 3) -> Path:
    """A realistic-size static FDG PET (88x104x88 at 2 mm, ``frames`` 5-min frames) of the same head:
    the template's GM/WM/CSF uptake (1 : 0.35 : 0.05) moved by the benchmark's head pose, plus noise."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "preproc"))
    from helpers import rigid_matrix, subject_affine
    from scipy import ndimage

    from m2m_bids.preproc.grid import OutputGrid
    from m2m_bids.preproc.resample import resample_series
    from m2m_bids.synth.sources import load_templates

    raw, affine = load_templates()
    csf = np.clip(raw["mask"] - raw["gm"] - raw["wm"], 0, 1)
    uptake = ndimage.gaussian_filter((raw["gm"] + 0.35 * raw["wm"] + 0.05 * csf) * raw["mask"], 6.0 / 2.3548)
    shape = (88, 104, 88)
    aff = subject_affine(shape, 2.0)
    grid = OutputGrid(shape, aff, 2.0)
    pet = 12000.0 * resample_series(uptake, affine, grid, rigid_matrix((5, -3, 4), (4, -6, 3))[None])
    rng = np.random.default_rng(1)
    data = np.stack([np.clip(pet + rng.normal(0, 600, shape), 0, None) for _ in range(frames)], axis=-1)
    path = root / "sub-01_trc-FDG_pet.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), aff), str(path))
    return path


def run_stages(t1_path: Path, bold_path: Path, meta: dict, work: Path, threads: int, registration: str,
               pet_path: Path | None = None) -> list[tuple[str, float, float]]:
    from m2m_bids.preproc import sink, steps

    res, shape = 3.0, [64, 64, 64]
    rows = []

    def stage(name, func, *args):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        out = func(*args, out_dir=str(folder)) if name != "store_cache" else func(*args)
        rows.append((name, time.perf_counter() - start, peak_rss_gb()))
        return out

    t1p, brain, record = stage("prepare_t1w", steps.t1w_prepare, str(t1_path), res, threads)
    tx = stage("register_t1w", steps.t1w_register, t1p, brain, registration, res, shape, 0)
    t1g, maskg, brain_grid, qc_anat = stage("resample_t1w", steps.t1w_to_grid, t1p, brain, record, tx, res, shape)
    boldp = stage("prepare_bold", steps.bold_prepare, str(bold_path), 0, 20)
    stc, stc_record = stage("slice_timing", steps.bold_slice_timing, boldp, str(bold_path), json.dumps(meta), 0.5, True)
    motion, boldref = stage("estimate_motion", steps.bold_motion, boldp, True)
    coreg, qc_bold = stage("coregister_bold", steps.rigid_coregister, boldref, t1p, brain, 0)
    grid = stage("resample_bold", steps.bold_to_grid, stc, motion, coreg, tx, res, shape)
    smoothed = stage("smooth_bold", steps.smooth_grid, grid, 6.0, res)
    gm = stage("grey_matter", functools.partial(steps.grey_matter_grid, brain_grid=brain_grid), t1g, maskg, res)
    alff, falff, mean = stage("bold_maps", steps.bold_maps, smoothed, maskg, 2.0, [0.01, 0.08])
    stage("store_cache", sink.store_run, "ab" * 32, str(work / "cache"), json.dumps({"participant": "01"}), t1g,
          maskg, smoothed, motion, stc_record, True, {"gm": gm, "alff": alff, "falff": falff, "bold_mean": mean},
          brain_grid, qc_anat, qc_bold)
    if pet_path is not None:
        pet_mean = stage("prepare_pet", steps.pet_prepare, str(pet_path), [300.0, 300.0, 300.0])
        pet_coreg, _ = stage("coregister_pet", steps.rigid_coregister, pet_mean, t1p, brain, 0)
        stage("resample_pet", steps.pet_to_grid, pet_mean, pet_coreg, tx, maskg, res, shape)
    return rows


def run_workflow(t1_path: Path, bold_path: Path, meta: dict, out: Path, threads: int, registration: str,
                 pet_path: Path | None = None) -> tuple[float, float]:
    from m2m_bids.bids.inputs import BoldRun, ParticipantInputs, PetImage, SessionInputs
    from m2m_bids.config import RunConfig
    from m2m_bids.preproc.api import preprocess_participants

    run = BoldRun(path=bold_path, entities={"subject": "01", "task": "rest"}, metadata=meta,
                  n_volumes=nib.load(str(bold_path)).shape[3], repetition_time=2.0)
    pet = None if pet_path is None else PetImage(pet_path, {"subject": "01", "tracer": "FDG"},
                                                 {"FrameDuration": [300.0, 300.0, 300.0]})
    person = ParticipantInputs("01", (SessionInputs(None, t1_path, (run,), {"subject": "01"}, pet),))
    cfg = RunConfig.model_validate({"execution": {"bids_dir": t1_path.parent, "output_dir": out.parent / f"{out.name}-out",
                                                  "analysis_level": "participant", "nprocs": threads,
                                                  "omp_nthreads": threads},
                                   "preproc": {"registration": registration}})
    start = time.perf_counter()
    with TreePeak() as peak:
        result = preprocess_participants([person], cfg)[0]
    if result.error is not None:
        raise SystemExit(result.error.render())
    return time.perf_counter() - start, peak.peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-workflow", action="store_true")
    parser.add_argument("--pet", action="store_true", help="add a realistic-size FDG PET and the PET branch")
    parser.add_argument("--registration", default="syn", choices=["rigid", "affine", "syn"])
    args = parser.parse_args(argv)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # as the pipeline runs ANTs (reproducible)
    import torch

    torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="m2m-bench-preproc-"))
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(root.parent / f"{root.name}-out", ignore_errors=True)
    root.mkdir(parents=True)
    t1_path, bold_path, meta = make_inputs(root, args.volumes)
    pet_path = make_pet(root) if args.pet else None
    print(f"inputs: T1w {nib.load(str(t1_path)).shape}, BOLD {nib.load(str(bold_path)).shape}"
          + (f", PET {nib.load(str(pet_path)).shape}" if pet_path else ""))
    rows = run_stages(t1_path, bold_path, meta, root / "stages", args.threads, args.registration, pet_path)
    print("| stage | wall (s) | peak RSS so far (GB) |\n|---|---|---|")
    for name, wall, rss in rows:
        print(f"| {name} | {wall:.2f} | {rss:.2f} |")
    print(f"| **all stages** | **{sum(r[1] for r in rows):.1f}** | **{max(r[2] for r in rows):.2f}** |")
    if not args.skip_workflow:
        wall, peak = run_workflow(t1_path, bold_path, meta, root, args.threads, args.registration, pet_path)
        print(f"\nwhole participant through preprocess_participants (MultiProc, nprocs={args.threads}, "
              f"{args.registration}): {wall:.1f} s, peak RSS of the process tree {peak:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
