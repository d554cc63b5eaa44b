import pytest
import torch

from fedlightning.models.masked import (
    MaskedResNet8,
    MaskedResNet18,
    MaskedVGG16,
    count_flops,
    count_params,
    cut,
    kept_from_masks,
    random_kept,
    relaxed_size,
    scatter,
    shift_masks_to_keep,
    slice_state,
)
from fedlightning.models.masked.base import MaskedClassifier


def small(cls: type, div: int = 16, **kw: object) -> MaskedClassifier:
    full = cls(masked=False, **kw)
    widths = {g: max(3, w // div) for g, w in full.full_widths.items()}
    return cls(widths=widths, **kw)


ARCHS = [
    (MaskedResNet8, {"in_channels": 1, "image_size": 28}),
    (MaskedResNet18, {"in_channels": 3, "image_size": 32}),
    (MaskedVGG16, {"in_channels": 3, "image_size": 32}),
    (MaskedVGG16, {"in_channels": 1, "image_size": 28}),
]


@pytest.mark.parametrize(("cls", "kw"), ARCHS)
def test_cut_is_smaller_and_computes_what_the_masked_network_computes(cls: type, kw: dict) -> None:
    net = small(cls, **kw)
    net.eval()
    with torch.no_grad():  # masks far from the threshold: sigmoid(+-1 / 1e-3) is 1 or 0
        for v in net.mask_logits.values():
            v.copy_(torch.where(v >= 0, 1.0, -1.0))
    # make the BN statistics non-trivial
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sub = cut(net)
    kept = kept_from_masks(net)
    assert sub.widths == {g: int(i.numel()) for g, i in kept.items()}
    assert not sub.masked and len(list(sub.mask_logits)) == 0
    assert count_params(sub) < count_params(net)
    x = torch.rand(3, kw["in_channels"], kw["image_size"], kw["image_size"])
    assert torch.allclose(net(x), sub(x), atol=1e-4)


@pytest.mark.parametrize(("cls", "kw"), ARCHS)
def test_exact_counts_equal_the_hard_relaxed_counts(cls: type, kw: dict) -> None:
    net = small(cls, **kw)
    sub = cut(net)
    assert count_params(sub) == int(relaxed_size(net, "params", hard=True))
    # FlopCounterMode on the real sub-network == the closed form over the layer specs
    assert count_flops(sub) == int(relaxed_size(net, "flops", hard=True))
    full = net.with_widths(net.widths)
    assert count_flops(full) > count_flops(sub) > 0


def test_flops_by_hand_for_a_tiny_vgg() -> None:
    widths = {f"conv{i}": 1 for i in range(13)}
    net = MaskedVGG16(in_channels=1, image_size=32, widths=widths, masked=False)
    # 3x3 convs with one channel: 2 * 9 * pixels each; sizes 32,32,16,16,8,8,8,4,4,4,2,2,2
    pixels = [32 * 32] * 2 + [16 * 16] * 2 + [8 * 8] * 3 + [4 * 4] * 3 + [2 * 2] * 3
    expected = sum(2 * 9 * p for p in pixels) + 2 * 1 * 10
    assert count_flops(net) == expected


def test_a_group_with_only_negative_logits_keeps_its_best_channel() -> None:
    net = small(MaskedResNet8)
    with torch.no_grad():
        net.mask_logits["stem"].copy_(torch.linspace(-3.0, -1.0, net.widths["stem"]))
    kept = kept_from_masks(net)
    assert kept["stem"].tolist() == [net.widths["stem"] - 1]


def test_scatter_writes_back_only_the_kept_positions() -> None:
    net = small(MaskedResNet8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kept = kept_from_masks(net)
    sub = cut(net, kept)
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    scatter(net, sub.state_dict(), kept)
    after = net.state_dict()
    assert all(
        torch.equal(a, b)
        for a, b in zip(slice_state(net, kept).values(), sub.state_dict().values(), strict=True)
    )
    w = "blocks.2.conv1.weight"
    out_idx, in_idx = kept["s2b0_mid"], kept["s1b0_out"]
    changed = after[w] - before[w]
    assert torch.allclose(changed[out_idx][:, in_idx], torch.ones(()))
    mask = torch.ones_like(changed, dtype=torch.bool)
    mask[out_idx.reshape(-1, 1), in_idx.reshape(1, -1)] = False
    assert float(changed[mask].abs().max()) == 0.0
    assert torch.equal(after["mask_logits.stem"], before["mask_logits.stem"])


def test_scatter_and_slice_reject_mismatches() -> None:
    net = small(MaskedResNet8)
    kept = kept_from_masks(net)
    with pytest.raises(ValueError, match="expected"):
        scatter(net, {"stem.weight": torch.zeros(1, 1, 3, 3)}, kept)
    with pytest.raises(ValueError, match="not in"):
        scatter(net, {"nope": torch.zeros(1)}, kept)
    with pytest.raises(ValueError, match="kept must name exactly"):
        slice_state(net, {"stem": kept["stem"]})
    with pytest.raises(ValueError, match="has no masks"):
        kept_from_masks(net.with_widths(net.widths))


def test_relaxed_size_is_differentiable_and_monotone() -> None:
    net = small(MaskedResNet8)
    size = relaxed_size(net, "params")
    size.backward()
    grads = [net.mask_logits[g].grad for g in net.groups]
    assert all(g is not None and bool((g > 0).all()) for g in grads)
    with torch.no_grad():
        for v in net.mask_logits.values():
            v.add_(1.0)
    assert float(relaxed_size(net, "params").detach()) > float(size.detach())
    with pytest.raises(ValueError, match="kind"):
        relaxed_size(net, "bytes")


def test_random_kept_is_seeded_and_sized() -> None:
    net = MaskedResNet8()
    a = random_kept(net, 0.25, torch.Generator().manual_seed(1))
    b = random_kept(net, 0.25, torch.Generator().manual_seed(1))
    c = random_kept(net, 0.25, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[g], b[g]) for g in a)
    assert any(not torch.equal(a[g], c[g]) for g in a)
    assert a["stem"].numel() == 16 and a["s3b0_out"].numel() == 128
    assert bool((a["stem"][1:] > a["stem"][:-1]).all())
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        random_kept(net, 0.0, torch.Generator())


@pytest.mark.parametrize("keep_ratio", [0.25, 0.5, 1.0])
def test_shift_masks_to_keep_keeps_the_largest_logits_in_exact_shares(keep_ratio: float) -> None:
    net = small(MaskedResNet8, div=8, mask_init_mean=-1.0, seed=3)
    before = {g: v.detach().clone() for g, v in net.mask_logits.items()}
    kept = shift_masks_to_keep(net, keep_ratio)
    assert {g: i.tolist() for g, i in kept.items()} == {
        g: i.tolist() for g, i in kept_from_masks(net).items()
    }
    for group, v0 in before.items():
        width = v0.shape[0]
        k = max(1, -(-int(keep_ratio * width * 1000) // 1000))  # ceil without float error
        assert kept[group].numel() == k
        top = v0.topk(k).indices.sort().values
        assert torch.equal(kept[group], top)
        shift = net.mask_logits[group].detach() - v0
        assert torch.allclose(shift, shift[0].expand_as(shift))  # one constant per group
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        shift_masks_to_keep(net, 1.5)
    with pytest.raises(ValueError, match="has no masks"):
        shift_masks_to_keep(MaskedResNet8(masked=False), 0.5)
    tied = small(MaskedResNet8, mask_init_scale=0.0)  # every logit equal ...
    first = tied.groups[0]
    untied = torch.arange(tied.widths[first], dtype=torch.float32)
    with torch.no_grad():
        tied.mask_logits[first].copy_(untied)  # ... but the first group's
    with pytest.raises(ValueError, match="tie at the boundary"):
        shift_masks_to_keep(tied, 0.5)
    assert torch.equal(tied.mask_logits[first].detach(), untied)  # nothing changed
