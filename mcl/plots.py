"""Matplotlib helpers shared by the dataset card and the analysis figures (PNG, offline)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from mcl.io import atomic_path  # noqa: E402

# The ARC palette: 0 black (background), then blue, red, green, yellow, grey, magenta, orange, azure, maroon.
ARC_COLOURS = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]
ARC_CMAP = ListedColormap(ARC_COLOURS)


def draw_grid(ax, grid, title: str | None = None) -> None:
    """Draw one 8x8 colour grid on ``ax`` with cell lines and no ticks."""
    ax.imshow(grid, cmap=ARC_CMAP, vmin=0, vmax=9, interpolation="nearest")
    n = len(grid)
    ax.set_xticks([x - 0.5 for x in range(1, n)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, n)], minor=True)
    ax.grid(which="minor", color="#444444", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    if title:
        ax.set_title(title, fontsize=8)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Save ``fig`` as PNG atomically (temp file, then rename) and close it."""
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
