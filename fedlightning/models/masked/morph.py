"""Morphing: cut a real, smaller network out of a masked one, and scatter it back.

``cut`` keeps, in every mask group, the channels whose mask logit is ``v >= 0`` (the paper
prunes ``v < 0``, section 4.1), drops the next layers' input channels to match (section 4.2)
and returns a plain :class:`~fedlightning.models.masked.base.MaskedClassifier` of the same
architecture with those widths: its tensors are physically smaller, so are the messages that
carry them. ``scatter`` writes a (trained) sub-network back into the positions it was cut
from. ``relaxed_size`` is the differentiable parameter or FLOP count of eq. (5)'s
regularizer; with hard masks it equals the exact count of the cut network.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), sections 4.1-4.2, appendix A and Algorithm 1 (line 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fedlightning.models.follow import follow_module, module_device, module_dtype
from fedlightning.models.masked.base import MaskedClassifier
from fedlightning.models.masked.functional import keep_probability

__all__ = [
    "Kept",
    "count_flops",
    "count_params",
    "cut",
    "full_kept",
    "kept_from_masks",
    "random_kept",
    "relaxed_size",
    "scatter",
    "shift_masks_to_keep",
    "size_from_widths",
    "slice_state",
]

#: Kept channel indices (sorted, int64) per mask group.
Kept = dict[str, Tensor]


def kept_from_masks(model: MaskedClassifier) -> Kept:
    """Channels kept by the masks: ``v >= 0``; a group keeps at least its largest ``v``.

    Args:
        model: A masked network.

    Returns:
        Sorted kept indices per group.

    Raises:
        ValueError: If ``model`` has no masks.
    """
    if not model.masked:
        raise ValueError(f"{type(model).__name__} has no masks (masked=False)")
    kept: Kept = {}
    for group, v in model.mask_logits.items():
        idx = torch.nonzero(v.detach() >= 0).flatten()
        if idx.numel() == 0:
            idx = v.detach().argmax().reshape(1)
        kept[group] = idx.sort().values.to(torch.long)
    return kept


def full_kept(model: MaskedClassifier) -> Kept:
    """Every channel of every group (the full network)."""
    return {g: torch.arange(w, dtype=torch.long) for g, w in model.widths.items()}


def random_kept(model: MaskedClassifier, keep_ratio: float, generator: torch.Generator) -> Kept:
    """A uniformly random ``ceil(keep_ratio * C)`` channels of every group.

    This is the sub-network of FedDropout (Caldas et al., 2018) and FedPruned (seed 004).

    Args:
        model: The network.
        keep_ratio: Share of channels kept per group, in (0, 1].
        generator: Source of randomness (explicit seed).

    Returns:
        Sorted kept indices per group.

    Raises:
        ValueError: If ``keep_ratio`` is not in (0, 1].
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got keep_ratio={keep_ratio!r}")
    kept: Kept = {}
    for group, width in model.widths.items():
        k = _keep_count(width, keep_ratio)
        perm = torch.randperm(width, generator=generator)[:k]
        kept[group] = perm.sort().values.to(torch.long)
    return kept


def _keep_count(width: int, keep_ratio: float) -> int:
    return max(1, min(width, math.ceil(keep_ratio * width - 1e-9)))


def shift_masks_to_keep(model: MaskedClassifier, keep_ratio: float) -> Kept:
    """Shift every group's mask logits so that exactly ``ceil(keep_ratio * C)`` are >= 0.

    Each group's logits move by one constant (the midpoint between the k-th and the
    (k+1)-th largest), so their order and spread, drawn at initialisation, are kept: the
    channels kept are the k with the largest initial logits, and the sub-network has the
    same per-group widths as :func:`random_kept`'s. A reading of seed 004's "mask
    initialised with its mean value being the preset compression ratio" that makes the
    ratio exact in every layer instead of only in expectation.

    Args:
        model: A masked network (its logits are shifted in place).
        keep_ratio: Share of channels kept per group, in (0, 1].

    Returns:
        The kept indices per group (what :func:`kept_from_masks` now returns).

    Raises:
        ValueError: If ``model`` has no masks, ``keep_ratio`` is not in (0, 1], or a group's
            logits tie at the boundary (then no shift keeps exactly k).
    """
    if not model.masked:
        raise ValueError(f"{type(model).__name__} has no masks (masked=False)")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got keep_ratio={keep_ratio!r}")
    shifts: dict[str, Tensor] = {}
    for group, v in model.mask_logits.items():  # check every group before changing any
        k = _keep_count(v.shape[0], keep_ratio)
        logits = v.detach()
        # A sentinel below the smallest logit, for k = C (every channel kept).
        ordered = torch.cat([logits.sort(descending=True).values, logits.min().reshape(1) - 2.0])
        if not ordered[k - 1] > ordered[k]:
            raise ValueError(
                f"mask logits tie at the boundary of the {k} largest in group {group!r} "
                "(e.g. mask_init_scale=0); no shift keeps exactly that many"
            )
        shifts[group] = (ordered[k - 1] + ordered[k]) / 2
    with torch.no_grad():
        for group, v in model.mask_logits.items():
            v.sub_(shifts[group])
    return kept_from_masks(model)


def _check_kept(model: MaskedClassifier, kept: Mapping[str, Tensor]) -> None:
    if set(kept) != set(model.widths):
        raise ValueError(
            f"kept must name exactly the mask groups {sorted(model.widths)}, got {sorted(kept)}"
        )
    for group, idx in kept.items():
        width = model.widths[group]
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= width:
            raise ValueError(
                f"kept[{group!r}] must hold 1 to {width} indices in [0, {width}), got "
                f"{idx.numel()} indices"
            )


def slice_state(model: MaskedClassifier, kept: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The sub-network's state: each tensor of ``model`` sliced to the kept channels.

    Mask logits are left out (a sub-network is plain).

    Args:
        model: The full (masked or plain) network.
        kept: Kept indices per group.

    Returns:
        State-dict of the sub-network (new tensors).
    """
    _check_kept(model, kept)
    state = model.state_dict()
    cmap = model.channel_map()
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("mask_logits."):
            continue
        value = tensor.detach()
        for dim, group in cmap.get(key, ()):
            value = value.index_select(dim, kept[group].to(value.device))
        out[key] = value.clone()
    return out


def cut(model: MaskedClassifier, kept: Mapping[str, Tensor] | None = None) -> MaskedClassifier:
    """Cut a plain sub-network out of ``model``.

    Args:
        model: The full network.
        kept: Kept indices per group (default: :func:`kept_from_masks`).

    Returns:
        A plain network of the same architecture with the kept widths and the kept weights,
        in ``model``'s training mode, on its device and in its floating dtype.
    """
    kept = kept_from_masks(model) if kept is None else kept
    sub = model.with_widths({g: int(kept[g].numel()) for g in model.widths}, masked=False)
    follow_module(sub, model)  # before loading: float64 weights must not pass through float32
    sub.load_state_dict(slice_state(model, kept))
    sub.train(model.training)
    return sub


def scatter(
    model: MaskedClassifier, sub_state: Mapping[str, Tensor], kept: Mapping[str, Tensor]
) -> None:
    """Write a sub-network's tensors back into ``model`` at the kept positions, in place.

    Args:
        model: The full network.
        sub_state: State of a sub-network cut with ``kept`` (all keys, or a subset).
        kept: The kept indices the sub-network was cut with.

    Raises:
        ValueError: If a key is unknown or a shape does not match the kept widths.
    """
    _check_kept(model, kept)
    state = model.state_dict()
    cmap = model.channel_map()
    with torch.no_grad():
        for key, value in sub_state.items():
            if key not in state:
                raise ValueError(f"sub-network key {key!r} is not in {type(model).__name__}")
            target = state[key]
            value = value.to(device=target.device, dtype=target.dtype)
            _scatter_into(target, value, cmap.get(key, ()), kept, key)


def _scatter_into(
    target: Tensor,
    value: Tensor,
    dims: tuple[tuple[int, str], ...],
    kept: Mapping[str, Tensor],
    key: str,
) -> None:
    expected = list(target.shape)
    for dim, group in dims:
        expected[dim] = int(kept[group].numel())
    if list(value.shape) != expected:
        raise ValueError(
            f"sub-network tensor {key!r} has shape {tuple(value.shape)}, expected "
            f"{tuple(expected)} for the kept channels"
        )
    if not dims:
        target.copy_(value)
        return
    (dim, group), rest = dims[0], dims[1:]
    idx = kept[group].to(target.device)
    if rest:
        block = target.index_select(dim, idx)
        _scatter_into(block, value, rest, kept, key)
        target.index_copy_(dim, idx, block)
    else:
        target.index_copy_(dim, idx, value)


def count_params(module: nn.Module, *, include_masks: bool = False) -> int:
    """Exact number of parameters of ``module`` (mask logits excluded unless asked)."""
    total = 0
    for name, p in module.named_parameters():
        if not include_masks and name.startswith("mask_logits."):
            continue
        total += p.numel()
    return total


def count_flops(module: MaskedClassifier) -> int:
    """Exact floating-point operations of one forward pass on one image.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add is 2
    FLOPs; convolutions and matrix products, as in the paper's FLOPs ratios); the network is
    run in evaluation mode without masks multiplying into the count, on its device and in its
    dtype (the count does not depend on either).

    Args:
        module: The network.

    Returns:
        FLOPs per image.
    """
    x = torch.zeros(
        1,
        module.in_channels,
        module.image_size,
        module.image_size,
        device=module_device(module),
        dtype=module_dtype(module),
    )
    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module.forward_masked(x, None)
    module.train(was_training)
    return int(counter.get_total_flops())


def relaxed_size(model: MaskedClassifier, kind: str = "params", *, hard: bool = False) -> Tensor:
    """The relaxed size of the masked network: the regularizer of eq. (5).

    Every group's width is replaced by the sum of its keep probabilities
    ``sigmoid(v)`` (the expected value of eq. (6)'s noisy mask as tau -> 0), and each layer
    contributes ``kernel * width_in * width_out`` weights (+ bias and BatchNorm terms per
    output channel) or ``2 * kernel * width_in * width_out * pixels_out`` FLOPs. The result
    is differentiable in the mask logits; with ``hard=True`` (width = number of ``v >= 0``)
    it is the exact count of :func:`cut`'s network.

    Args:
        model: A masked network.
        kind: ``"params"`` or ``"flops"``.
        hard: Use the hard masks (exact count, no gradient) instead of the relaxed ones.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If ``kind`` is unknown or the model has no masks.

    References:
        Seed 004, eq. (5) and section 4.1 ("the L1 norm of the soft-mask layer's
        parameters with a non-parametric multiplication factor").
    """
    if kind not in ("params", "flops"):
        raise ValueError(f"kind must be 'params' or 'flops', got kind={kind!r}")
    if not model.masked:
        raise ValueError(f"{type(model).__name__} has no masks (masked=False)")
    if hard:
        kept = kept_from_masks(model)
        width: dict[str, Tensor | float] = {g: float(idx.numel()) for g, idx in kept.items()}
    else:
        width = {g: keep_probability(v).sum() for g, v in model.mask_logits.items()}
    return size_from_widths(model, width, kind)


def size_from_widths(
    model: MaskedClassifier, widths: Mapping[str, Tensor | float], kind: str = "params"
) -> Tensor:
    """Parameter or FLOP count of ``model``'s architecture with the given group widths.

    Widths may be real numbers or tensors (relaxed widths, then the count is differentiable).
    With integer widths it is the exact count of the network of those widths: parameters as
    :func:`count_params`, FLOPs per image as :func:`count_flops`.

    Args:
        model: The network (its architecture and input size are used).
        widths: Width of every mask group.
        kind: ``"params"`` or ``"flops"``.

    Returns:
        A float64 scalar tensor, on the device of the tensor widths (the CPU for numbers).

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    if kind not in ("params", "flops"):
        raise ValueError(f"kind must be 'params' or 'flops', got kind={kind!r}")
    device = next((w.device for w in widths.values() if isinstance(w, Tensor)), None)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for spec in model.specs:
        w_in = widths[spec.in_group] if spec.in_group is not None else float(spec.in_channels)
        w_out = widths[spec.out_group] if spec.out_group is not None else float(spec.out_channels)
        if kind == "flops":
            total = total + 2.0 * spec.kernel * spec.out_pixels * w_in * w_out
            continue
        total = total + spec.kernel * w_in * w_out
        per_out = (1 if spec.bias else 0) + (2 if spec.bn is not None else 0)
        if per_out:
            total = total + per_out * w_out
    return total
