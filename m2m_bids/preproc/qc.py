"""Quality-control figures: registration overlay, carpet plot, motion traces (matplotlib, Agg).

Each function draws and returns the figure; the derivatives sink saves it.

A person checking a run wants three answers at a glance: is the brain where the template says
(overlay of the template brain outline on the normalised T1w and mean BOLD), is the series clean
(carpet plot of in-mask voxels over time, as Power 2017), and how much did the head move
(6 parameters + framewise displacement).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

#: Resolution of the PNG figures (the derivatives sink saves them).
DPI = 100


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure and its axes grid; :class:`Figure` directly (no pyplot, no global backend switch),
    so it renders headless and needs no closing."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def registration_overlay(t1w: np.ndarray, bold_mean: np.ndarray, template_mask: np.ndarray) -> Figure:
    """Three orthogonal mid-slices of T1w and mean BOLD with the template brain outline in red."""
    fig, axes = _figure(2, 3, (9, 6))
    centre = [s // 2 for s in t1w.shape]
    for row, (name, vol) in enumerate((("T1w", t1w), ("mean BOLD", bold_mean))):
        for col in range(3):
            take = [slice(None)] * 3
            take[col] = centre[col]
            ax = axes[row][col]
            ax.imshow(np.rot90(vol[tuple(take)]), cmap="gray")
            ax.contour(np.rot90(template_mask[tuple(take)]), levels=[0.5], colors="r", linewidths=0.8)
            ax.set_axis_off()
            ax.set_title(f"{name} ({'xyz'[col]} = {centre[col]})", fontsize=8)
    return fig


def carpet_plot(bold: np.ndarray, mask: np.ndarray, fd: np.ndarray, max_voxels: int = 4000) -> Figure:
    """Voxel x time image of the z-scored in-mask series (subsampled), FD trace above it."""
    fig, axes = _figure(2, 1, (9, 6))
    series = bold[mask > 0]
    if len(series) > max_voxels:
        series = series[np.linspace(0, len(series) - 1, max_voxels).astype(int)]
    std = series.std(axis=1, keepdims=True)
    z = (series - series.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1)
    axes[0][0].plot(fd, color="k", linewidth=0.8)
    axes[0][0].set_ylabel("FD (mm)")
    axes[1][0].imshow(z, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest")
    axes[1][0].set_xlabel("volume")
    axes[1][0].set_ylabel("voxels in brain mask")
    return fig


def motion_traces(motion: np.ndarray) -> Figure:
    """Translations (mm), rotations (degrees) and framewise displacement over time."""
    fig, axes = _figure(3, 1, (8, 6))
    for k, name in enumerate("xyz"):
        axes[0][0].plot(motion[:, k], label=f"trans {name}")
        axes[1][0].plot(np.rad2deg(motion[:, 3 + k]), label=f"rot {name}")
    axes[2][0].plot(motion[:, 6], color="k", label="FD")
    for ax, unit in zip((axes[0][0], axes[1][0], axes[2][0]), ("mm", "degrees", "mm")):
        ax.set_ylabel(unit)
        ax.legend(fontsize=7, loc="upper right")
    axes[2][0].set_xlabel("volume")
    return fig
