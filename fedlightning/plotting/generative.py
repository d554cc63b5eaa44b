"""Figures that compare generative models: loss curves, image grids and t-SNE maps.

Every function writes one PNG and returns its path; matplotlib runs on the non-interactive
Agg backend, so nothing needs a display.

References:
    "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002),
    Figures 1-4 (reconstructions, generations, loss curves, t-SNE).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

_VAE_TERMS = (("recon", "reconstruction"), ("kl", "KL"), ("loss", "total"))

__all__ = ["image_grid", "plot_image_panels", "plot_loss_curves", "plot_tsne", "tsne_embedding"]


def image_grid(images: Tensor, ncols: int | None = None, padding: int = 1) -> NDArray[np.float32]:
    """Tile images into one array, row by row.

    Args:
        images: Shape ``(N, C, H, W)`` with ``C`` in {1, 3}, values in [0, 1].
        ncols: Images per row (default: ``ceil(sqrt(N))``).
        padding: Pixels of white space between images.

    Returns:
        ``(rows * (H + p) - p, ncols * (W + p) - p)`` for grayscale, with a trailing
        channel axis of 3 for colour images.

    Raises:
        ValueError: If ``images`` is not ``(N, 1|3, H, W)`` with ``N >= 1`` or ``ncols < 1``.
    """
    if images.dim() != 4 or images.shape[0] < 1 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    cols = ncols if ncols is not None else math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"ncols must be an integer >= 1, got ncols={ncols!r}")
    rows = math.ceil(n / cols)
    grid = np.ones((c, rows * (h + padding) - padding, cols * (w + padding) - padding), np.float32)
    data = images.detach().to(torch.float32).clamp(0, 1).cpu().numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = r * (h + padding), col * (w + padding)
        grid[:, top : top + h, left : left + w] = data[i]
    return grid[0] if c == 1 else np.transpose(grid, (1, 2, 0))


def plot_image_panels(
    panels: Mapping[str, Tensor], path: str | Path, ncols: int | None = None, title: str = ""
) -> Path:
    """Draw image grids side by side, one titled panel per entry (e.g. inputs | models).

    Args:
        panels: Panel title -> images ``(N, C, H, W)`` in [0, 1].
        path: PNG file to write.
        ncols: Images per row in every panel (default: square grids).
        title: Figure title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``panels`` is empty.
    """
    if not panels:
        raise ValueError("panels must hold at least one panel, got none")
    grids = {name: image_grid(images, ncols) for name, images in panels.items()}
    height, width = next(iter(grids.values())).shape[:2]
    scale = 4.0 / max(height, width) * max(1.0, max(height, width) / 120)
    fig, axes = plt.subplots(
        1,
        len(grids),
        figsize=(len(grids) * width * scale + 0.5, height * scale + 0.8),
        squeeze=False,
    )
    for ax, (name, grid) in zip(axes[0], grids.items(), strict=True):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_loss_curves(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path,
    *,
    keys: Sequence[tuple[str, str]] = _VAE_TERMS,
    x_key: Mapping[str, str] | None = None,
    test_prefix: str = "test_",
    train_prefix: str = "",
) -> Path:
    """Loss curves of several runs: one row per run, one column per loss term.

    Each row shows the training value (``train_prefix + key``) and the test value
    (``test_prefix + key``) of each term against the run's own x axis (epochs for a
    centralized run, rounds for a federated one).

    Args:
        runs: Run name -> history (one mapping of metric values per epoch or round).
        path: PNG file to write.
        keys: ``(metric key, column title)`` pairs.
        x_key: Run name -> history key of the x axis (default ``"epoch"`` when present,
            else ``"round"``, else the entry's position from 1).
        test_prefix: Prefix of the test metrics.
        train_prefix: Prefix of the training metrics.

    Returns:
        The path written.

    Raises:
        ValueError: If ``runs`` is empty.
    """
    if not runs:
        raise ValueError("runs must hold at least one run, got none")
    fig, axes = plt.subplots(
        len(runs), len(keys), figsize=(4.2 * len(keys), 3.0 * len(runs)), squeeze=False
    )
    for row, (name, history) in enumerate(runs.items()):
        axis_key = (x_key or {}).get(name) or _default_x(history)
        xs = [h.get(axis_key, i + 1) if axis_key else i + 1 for i, h in enumerate(history)]
        for col, (key, label) in enumerate(keys):
            ax = axes[row][col]
            for prefix, style, what in (
                (train_prefix, "-o", "train"),
                (test_prefix, "--s", "test"),
            ):
                points = [
                    (x, h[prefix + key])
                    for x, h in zip(xs, history, strict=True)
                    if prefix + key in h
                ]
                if points:
                    px, py = zip(*points, strict=True)
                    ax.plot(px, py, style, markersize=3, label=what)
            ax.set_title(f"{name}: {label}")
            ax.set_xlabel(axis_key or "step")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
    return _save(fig, path)


def _default_x(history: Sequence[Mapping[str, float]]) -> str | None:
    if history and "epoch" in history[0]:
        return "epoch"
    if history and "round" in history[0]:
        return "round"
    return None


def tsne_embedding(
    points: Tensor, seed: int = 0, perplexity: float = 30.0, pca_dim: int | None = 50
) -> NDArray[np.float64]:
    """2-D t-SNE of flattened points (after PCA to ``pca_dim`` dimensions, when smaller).

    Args:
        points: Shape ``(N, ...)``, flattened per sample; ``N > perplexity``.
        seed: ``random_state`` of PCA and t-SNE.
        perplexity: t-SNE perplexity, < N.
        pca_dim: Dimensions kept by PCA first (``None``: no PCA).

    Returns:
        ``(N, 2)`` coordinates.

    Raises:
        ValueError: If ``perplexity >= N``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    data = points.detach().reshape(points.shape[0], -1).to(torch.float64).cpu().numpy()
    if not 0 < perplexity < data.shape[0]:
        raise ValueError(
            f"perplexity must be in (0, number of points={data.shape[0]}), "
            f"got perplexity={perplexity}"
        )
    if pca_dim is not None and data.shape[1] > pca_dim and data.shape[0] > pca_dim:
        data = PCA(n_components=pca_dim, random_state=seed).fit_transform(data)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    out: NDArray[np.float64] = tsne.fit_transform(data)
    return out


def plot_tsne(
    panels: Mapping[str, tuple[Tensor, Tensor]],
    path: str | Path,
    *,
    seed: int = 0,
    perplexity: float = 30.0,
    class_names: Sequence[str] | None = None,
) -> Path:
    """t-SNE maps side by side, points coloured by label (one panel per entry).

    Args:
        panels: Panel title -> ``(points (N, ...), labels (N,))``; each panel is embedded
            on its own.
        path: PNG file to write.
        seed: Seed of every embedding.
        perplexity: t-SNE perplexity.
        class_names: Legend names of the labels (default: the label numbers).

    Returns:
        The path written.

    Raises:
        ValueError: If ``panels`` is empty or points and labels differ in length.
    """
    if not panels:
        raise ValueError("panels must hold at least one panel, got none")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    handles = {}
    for ax, (name, (points, labels)) in zip(axes[0], panels.items(), strict=True):
        if points.shape[0] != labels.shape[0]:
            raise ValueError(
                f"panel {name!r}: points and labels must have the same length, got "
                f"{points.shape[0]} and {labels.shape[0]}"
            )
        xy = tsne_embedding(points, seed=seed, perplexity=perplexity)
        lab = labels.cpu().numpy()
        for value in np.unique(lab):
            mask = lab == value
            text = class_names[int(value)] if class_names is not None else str(int(value))
            handles[text] = ax.scatter(
                xy[mask, 0], xy[mask, 1], s=4, color=cmap(int(value) % 10), label=text
            )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(10, len(handles)),
        markerscale=3,
        frameon=False,
    )
    fig.subplots_adjust(bottom=0.14)
    return _save(fig, path, tight=False)


def _save(fig: plt.Figure, path: str | Path, tight: bool = True) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
