"""Figures of the examples: loss curves, image grids and t-SNE maps."""

from fedlightning.plotting.generative import (
    image_grid,
    plot_image_panels,
    plot_loss_curves,
    plot_tsne,
    tsne_embedding,
)

__all__ = ["image_grid", "plot_image_panels", "plot_loss_curves", "plot_tsne", "tsne_embedding"]
