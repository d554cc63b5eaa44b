"""Soft-masked VGG16 of seed 004's table 8, as a LightningModule.

Thirteen Conv(3 x 3, bias) + BN + ReLU layers in five stages separated by 2 x 2 max pooling,
global average pooling and an unmasked linear classifier: 14,728,266 parameters for
32 x 32 x 3 inputs (the paper's table 2). Pooling rounds up (``ceil_mode``), so 28 x 28
inputs reach 1 x 1 too (28, 14, 7, 4, 2, 1); for 32 x 32 inputs it is the usual floor.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), tables 2, 3 and 8; K. Simonyan and A. Zisserman, "Very
    Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn import functional as F
from typing_extensions import override

from fedlightning.models.masked.base import LayerSpec, MaskedClassifier

__all__ = ["MaskedVGG16", "VGG16_LAYOUT"]

#: Channels per convolution, ``0`` standing for a 2 x 2 max pooling (table 8).
VGG16_LAYOUT: tuple[int, ...] = (
    64,
    64,
    0,
    128,
    128,
    0,
    256,
    256,
    256,
    0,
    512,
    512,
    512,
    0,
    512,
    512,
    512,
    0,
)


class MaskedVGG16(MaskedClassifier):
    """Soft-masked VGG16 (table 8); each convolution's output channels are one mask group.

    Args:
        in_channels: Image channels.
        image_size: Image side.
        num_classes: Number of classes.
        masked: Carry soft masks or not.
        widths: Channels per mask group (``conv0`` ... ``conv12``).
        tau: Temperature of eq. (6).
        mask_init_mean: Mean of the mask logits' logistic initialisation.
        mask_init_scale: Scale of that logistic initialisation.
        lr: Local SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        seed: Seed of the mask initialisation.

    References:
        Seed 004, tables 2, 3 and 8.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 10,
        masked: bool = True,
        widths: Mapping[str, int] | None = None,
        tau: float = 1e-3,
        mask_init_mean: float = 0.3,
        mask_init_scale: float = 1.0,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        seed: int = 0,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
            masked=masked,
            widths=widths,
            tau=tau,
            mask_init_mean=mask_init_mean,
            mask_init_scale=mask_init_scale,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
        )

    @override
    def default_widths(self) -> dict[str, int]:
        channels = [c for c in VGG16_LAYOUT if c]
        return {f"conv{i}": c for i, c in enumerate(channels)}

    @override
    def build(self) -> None:
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.pool_after: list[bool] = []
        size = self.image_size
        cin, group_in = self.in_channels, None
        index = 0
        for c in VGG16_LAYOUT:
            if c == 0:
                self.pool_after[-1] = True
                size = -(-size // 2)
                continue
            group = f"conv{index}"
            cout = self.widths[group]
            self.convs.append(nn.Conv2d(cin, cout, 3, 1, 1, bias=True))
            self.bns.append(nn.BatchNorm2d(cout))
            self.pool_after.append(False)
            self.specs.append(
                LayerSpec(
                    f"convs.{index}",
                    group_in,
                    group,
                    cin,
                    cout,
                    9,
                    size * size,
                    True,
                    f"bns.{index}",
                )
            )
            cin, group_in = cout, group
            index += 1
        self.fc = nn.Linear(cin, self.num_classes)
        self.specs.append(LayerSpec("fc", group_in, None, cin, self.num_classes, 1, 1, True, None))

    @override
    def forward_masked(self, x: Tensor, masks: Mapping[str, Tensor] | None) -> Tensor:
        h = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            h = F.relu(self.apply_mask(bn(conv(h)), masks, f"conv{i}"))
            if self.pool_after[i]:
                h = F.max_pool2d(h, 2, 2, ceil_mode=True)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(h)
