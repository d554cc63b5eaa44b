from __future__ import annotations

import pytest
import torch

from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.messages import Message


def brightness_images(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8x8 images: dark (class 0) and bright (class 1), with noise."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([0.2, 0.8])
    y = torch.arange(2).repeat_interleave(n_per_class)
    x = levels[y].view(-1, 1, 1, 1) + 0.05 * torch.randn(len(y), 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture
def two_class_data() -> AnomalyDataModule:
    """6 clients (3 per class), 60 inliers + 6 outliers each; 100 test images per class."""
    dm = AnomalyDataModule(
        brightness_images(200, 0),
        test=brightness_images(100, 1),
        clients_per_class=3,
        outlier_fraction=0.1,
        num_classes=2,
        batch_size=32,
        seed=0,
    )
    dm.setup()
    return dm


class MeanBrightnessDetector:
    """A cheap detector: inlier when the mean pixel is within the training 5-95% range."""

    def __init__(self) -> None:
        self.bounds = torch.zeros(2)

    def fit(self, x: torch.Tensor, seed: int = 0) -> MeanBrightnessDetector:
        means = x.mean(dim=(1, 2, 3))
        self.bounds = torch.quantile(means, torch.tensor([0.05, 0.95]))
        return self

    def inlier_mask(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(1, 2, 3))
        return (means >= self.bounds[0]) & (means <= self.bounds[1])

    def to_message(self) -> Message:
        return Message(extras={"bounds": self.bounds.to(torch.float32)})

    def from_message(self, message: Message) -> MeanBrightnessDetector:
        other = MeanBrightnessDetector()
        other.bounds = message.extras["bounds"]
        return other


@pytest.fixture
def brightness_detector() -> type[MeanBrightnessDetector]:
    """The cheap detector class (fixtures avoid importing from conftest)."""
    return MeanBrightnessDetector
