"""Soft-masked ResNet/VGG classifiers of seed 004 (FedMorph) and their morphing.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004).
"""

from fedlightning.models.masked.base import LayerSpec, MaskedClassifier
from fedlightning.models.masked.functional import (
    js_divergence,
    keep_probability,
    logistic_noise,
    relaxed_mask,
)
from fedlightning.models.masked.morph import (
    count_flops,
    count_params,
    cut,
    kept_from_masks,
    random_kept,
    relaxed_size,
    scatter,
    shift_masks_to_keep,
    size_from_widths,
    slice_state,
)
from fedlightning.models.masked.resnet import MaskedResNet, MaskedResNet8, MaskedResNet18
from fedlightning.models.masked.vgg import MaskedVGG16

__all__ = [
    "LayerSpec",
    "MaskedClassifier",
    "MaskedResNet",
    "MaskedResNet8",
    "MaskedResNet18",
    "MaskedVGG16",
    "count_flops",
    "count_params",
    "cut",
    "js_divergence",
    "keep_probability",
    "kept_from_masks",
    "logistic_noise",
    "random_kept",
    "relaxed_mask",
    "relaxed_size",
    "scatter",
    "shift_masks_to_keep",
    "size_from_widths",
    "slice_state",
]
