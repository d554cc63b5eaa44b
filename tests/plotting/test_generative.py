"""Tests of the figures of generative models (fedlightning.plotting.generative)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedlightning.plotting import (
    image_grid,
    plot_image_panels,
    plot_loss_curves,
    plot_tsne,
    tsne_embedding,
)


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_grid_places_images_row_by_row() -> None:
    images = torch.stack([torch.full((1, 2, 3), v / 10) for v in range(5)])
    grid = image_grid(images, ncols=2, padding=1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    # image 3 is in row 1, column 1; padding is white
    np.testing.assert_allclose(grid[3:5, 4:7], 0.3, rtol=1e-6)
    assert grid[2, 0] == 1.0 and grid[0, 3] == 1.0
    # the empty sixth slot stays white
    np.testing.assert_allclose(grid[6:8, 4:7], 1.0)
    colour = image_grid(torch.zeros(4, 3, 2, 2))
    assert colour.shape == (5, 5, 3)


def test_image_grid_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1 or 3, H, W\)"):
        image_grid(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="ncols must be an integer >= 1, got ncols=0"):
        image_grid(torch.zeros(2, 1, 4, 4), ncols=0)


def test_plots_write_pngs(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    panels = {"inputs": torch.rand(8, 1, 6, 6, generator=g), "model": torch.rand(8, 1, 6, 6)}
    assert _is_png(plot_image_panels(panels, tmp_path / "a" / "grid.png", ncols=4, title="t"))
    runs = {
        "centralized": [
            {"epoch": e, "train_recon": 3.0 / e, "test_recon": 3.5 / e} for e in (1, 2)
        ],
        "federated": [{"round": 1, "train_recon": 2.0, "test_kl": 1.0}],
    }
    assert _is_png(plot_loss_curves(runs, tmp_path / "curves.png", train_prefix="train_"))
    x = torch.rand(60, 1, 4, 4, generator=g)
    y = torch.arange(60) % 3
    tsne = plot_tsne({"a": (x, y), "b": (x * 2, y)}, tmp_path / "tsne.png", perplexity=10)
    assert _is_png(tsne)
    with pytest.raises(ValueError, match="panels must hold at least one panel"):
        plot_image_panels({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="points and labels must have the same length"):
        plot_tsne({"a": (x, y[:5])}, tmp_path / "y.png", perplexity=10)


def test_tsne_keeps_separated_clusters_apart() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 20, [10.0] * 20])
    labels = torch.arange(80) % 2
    points = centres[labels] + torch.randn(80, 20, generator=g)
    xy = tsne_embedding(points, seed=0, perplexity=10)
    assert xy.shape == (80, 2)
    means = np.stack([xy[labels.numpy() == k].mean(0) for k in (0, 1)])
    nearest = np.argmin(((xy[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels.numpy()).all()
    np.testing.assert_allclose(xy, tsne_embedding(points, seed=0, perplexity=10))
    with pytest.raises(ValueError, match="perplexity must be in"):
        tsne_embedding(points, perplexity=100)
