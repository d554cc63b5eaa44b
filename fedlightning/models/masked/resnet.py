"""Soft-masked ResNet8 (table 7) and ResNet18 (table 9) of seed 004, as LightningModules.

Every convolution's output channels belong to a mask group (eq. 6). The skip-connection
constraint of appendix A holds: a block with a convolutional skip path shares one mask
between its second convolution and the skip convolution; a block with an identity skip
path keeps its input's mask as its output mask. The final linear classifier is unmasked
(section 4.2).

* ResNet8 (table 7): a 3 x 3 stem of 64 channels and four blocks of 64, 128, 256, 512
  channels (strides 1, 2, 2, 2), each with a 1 x 1 convolutional skip path, global average
  pooling, a linear classifier: 4,906,314 parameters for 28 x 28 x 1 inputs.
* ResNet18 (table 9): the standard CIFAR ResNet18 (two blocks per stage; identity skip
  paths where the shape allows): 11,173,962 parameters for 32 x 32 x 3 inputs, as in the
  paper's table 2.

Skip paths are Conv + BN; the ReLU that tables 7 and 9 list with them is applied after
the addition, as in He et al. (2016).

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), tables 7 and 9, appendix A; K. He et al., "Deep Residual
    Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn import functional as F
from typing_extensions import override

from fedlightning.models.masked.base import LayerSpec, MaskedClassifier

__all__ = ["MaskedResNet", "MaskedResNet8", "MaskedResNet18"]


class _Block(nn.Module):
    """A basic residual block: conv-BN-ReLU, conv-BN, plus a skip path, then ReLU."""

    def __init__(
        self, cin: int, mid: int, cout: int, stride: int, conv_skip: bool, groups: tuple[str, str]
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Conv2d | None = None
        self.skip_bn: nn.BatchNorm2d | None = None
        if conv_skip:
            self.skip = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.skip_bn = nn.BatchNorm2d(cout)
        self.mid_group, self.out_group = groups

    def forward(self, x: Tensor, masks: Mapping[str, Tensor] | None) -> Tensor:
        h = F.relu(MaskedClassifier.apply_mask(self.bn1(self.conv1(x)), masks, self.mid_group))
        out = MaskedClassifier.apply_mask(self.bn2(self.conv2(h)), masks, self.out_group)
        if self.skip is not None and self.skip_bn is not None:
            out = out + MaskedClassifier.apply_mask(
                self.skip_bn(self.skip(x)), masks, self.out_group
            )
        else:  # identity: x already carries this group's mask
            out = out + x
        return F.relu(out)


class MaskedResNet(MaskedClassifier):
    """A soft-masked ResNet of basic blocks; subclasses set ``stages`` and ``always_conv_skip``.

    ``stages`` lists ``(channels, stride, blocks)`` per stage. See
    :class:`~fedlightning.models.masked.base.MaskedClassifier` for the arguments.
    """

    stem_channels: int = 64
    stages: tuple[tuple[int, int, int], ...] = ()
    always_conv_skip: bool = False

    def _block_layout(self) -> list[tuple[str, str, int, int, bool]]:
        """Per block: (mid group, out group, stride, full out channels, conv skip)."""
        layout: list[tuple[str, str, int, int, bool]] = []
        cin, group_in = self.stem_channels, "stem"
        for s, (channels, stride, blocks) in enumerate(self.stages):
            for b in range(blocks):
                block_stride = stride if b == 0 else 1
                conv_skip = self.always_conv_skip or block_stride != 1 or cin != channels
                out_group = f"s{s}b{b}_out" if conv_skip else group_in
                layout.append((f"s{s}b{b}_mid", out_group, block_stride, channels, conv_skip))
                cin, group_in = channels, out_group
        return layout

    @override
    def default_widths(self) -> dict[str, int]:
        widths = {"stem": self.stem_channels}
        for mid, out, _, channels, conv_skip in self._block_layout():
            widths[mid] = channels
            if conv_skip:
                widths[out] = channels
        return widths

    @override
    def build(self) -> None:
        w = self.widths
        size = self.image_size
        self.stem = nn.Conv2d(self.in_channels, w["stem"], 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w["stem"])
        self.specs.append(
            LayerSpec(
                "stem", None, "stem", self.in_channels, w["stem"], 9, size * size, False, "stem_bn"
            )
        )
        self.blocks = nn.ModuleList()
        group_in = "stem"
        for i, (mid, out, stride, _, conv_skip) in enumerate(self._block_layout()):
            block = _Block(w[group_in], w[mid], w[out], stride, conv_skip, (mid, out))
            self.blocks.append(block)
            size = (size - 1) // stride + 1
            pix = size * size
            name = f"blocks.{i}"
            self.specs.append(
                LayerSpec(
                    f"{name}.conv1",
                    group_in,
                    mid,
                    w[group_in],
                    w[mid],
                    9,
                    pix,
                    False,
                    f"{name}.bn1",
                )
            )
            self.specs.append(
                LayerSpec(f"{name}.conv2", mid, out, w[mid], w[out], 9, pix, False, f"{name}.bn2")
            )
            if conv_skip:
                self.specs.append(
                    LayerSpec(
                        f"{name}.skip",
                        group_in,
                        out,
                        w[group_in],
                        w[out],
                        1,
                        pix,
                        False,
                        f"{name}.skip_bn",
                    )
                )
            group_in = out
        self.last_group = group_in
        self.fc = nn.Linear(w[group_in], self.num_classes)
        self.specs.append(
            LayerSpec("fc", group_in, None, w[group_in], self.num_classes, 1, 1, True, None)
        )

    @override
    def forward_masked(self, x: Tensor, masks: Mapping[str, Tensor] | None) -> Tensor:
        h = F.relu(self.apply_mask(self.stem_bn(self.stem(x)), masks, "stem"))
        for block in self.blocks:
            h = block(h, masks)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(h)


class MaskedResNet8(MaskedResNet):
    """Soft-masked ResNet8 of seed 004's table 7 (the MNIST / EMNIST network).

    Every block has a 1 x 1 convolutional skip path, as table 7 lists. Defaults follow
    appendix B.2 / table 3 for MNIST: SGD lr 0.1, momentum 0.9, weight decay 5e-4, tau 1e-3,
    mask logits initialised around 0.1.

    Args:
        in_channels: Image channels (1 for Fashion-MNIST / MNIST, 3 for CIFAR-10).
        image_size: Image side (28 or 32).
        num_classes: Number of classes.
        masked: Carry soft masks (the server's network) or not (plain network).
        widths: Channels per mask group (default: the table's widths).
        tau: Temperature of eq. (6).
        mask_init_mean: Mean of the mask logits' logistic initialisation.
        mask_init_scale: Scale of that logistic initialisation.
        lr: Local SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        seed: Seed of the mask initialisation.

    Example:
        >>> net = MaskedResNet8(in_channels=1, image_size=28, masked=False)
        >>> sum(p.numel() for p in net.parameters())
        4906314

    References:
        Seed 004, table 7 and appendix B.2.
    """

    stages = ((64, 1, 1), (128, 2, 1), (256, 2, 1), (512, 2, 1))
    always_conv_skip = True

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        masked: bool = True,
        widths: Mapping[str, int] | None = None,
        tau: float = 1e-3,
        mask_init_mean: float = 0.1,
        mask_init_scale: float = 1.0,
        lr: float = 0.1,
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


class MaskedResNet18(MaskedResNet):
    """Soft-masked ResNet18 of seed 004's table 9 (the CIFAR-10 network).

    Identity skip paths where the shape allows, 1 x 1 convolutional ones elsewhere: 11,173,962
    parameters for 32 x 32 x 3 inputs, the paper's table 2 count. Defaults follow table 3 for
    CIFAR-10: SGD lr 0.05, mask logits initialised around 0.3.

    Args:
        in_channels: Image channels.
        image_size: Image side.
        num_classes: Number of classes.
        masked: Carry soft masks or not.
        widths: Channels per mask group.
        tau: Temperature of eq. (6).
        mask_init_mean: Mean of the mask logits' logistic initialisation.
        mask_init_scale: Scale of that logistic initialisation.
        lr: Local SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        seed: Seed of the mask initialisation.

    References:
        Seed 004, tables 2, 3 and 9.
    """

    stages = ((64, 1, 2), (128, 2, 2), (256, 2, 2), (512, 2, 2))
    always_conv_skip = False

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
