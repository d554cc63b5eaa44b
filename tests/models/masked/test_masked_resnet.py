import pytest
import torch

from fedlightning.models.masked import MaskedResNet8, MaskedResNet18, count_params, cut


def small(cls: type, **kw: object) -> MaskedResNet8:
    full = cls(masked=False, **kw)
    widths = {g: max(2, w // 16) for g, w in full.full_widths.items()}
    return cls(widths=widths, **kw)


def test_parameter_counts_of_the_tables() -> None:
    assert count_params(MaskedResNet8(in_channels=1, image_size=28, masked=False)) == 4_906_314
    # the paper's table 2 count for CIFAR-10 ResNet18
    assert count_params(MaskedResNet18(masked=False)) == 11_173_962


@pytest.mark.parametrize(
    ("cls", "channels", "size"),
    [
        (MaskedResNet8, 1, 28),
        (MaskedResNet8, 3, 32),
        (MaskedResNet18, 3, 32),
        (MaskedResNet18, 1, 28),
    ],
)
def test_forward_shapes(cls: type, channels: int, size: int) -> None:
    net = small(cls, in_channels=channels, image_size=size)
    out = net(torch.rand(3, channels, size, size))
    assert out.shape == (3, 10)
    net.eval()
    assert net(torch.rand(2, channels, size, size)).shape == (2, 10)


def test_resnet8_skip_paths_share_the_block_output_mask() -> None:
    net = MaskedResNet8()
    specs = {s.name: s for s in net.specs}
    for i in range(4):
        assert specs[f"blocks.{i}.skip"].out_group == specs[f"blocks.{i}.conv2"].out_group
        assert specs[f"blocks.{i}.skip"].in_group == specs[f"blocks.{i}.conv1"].in_group
    assert len(net.groups) == 9  # stem + (mid, out) per block
    assert specs["fc"].out_group is None  # the classifier is unmasked


def test_resnet18_identity_blocks_keep_their_input_mask() -> None:
    net = MaskedResNet18()
    specs = {s.name: s for s in net.specs}
    # block 1 (stage 0, second block) has an identity skip path
    assert "blocks.1.skip" not in specs
    assert specs["blocks.1.conv2"].out_group == specs["blocks.1.conv1"].in_group
    assert "blocks.2.skip" in specs  # stride 2: a 1x1 convolution
    assert specs["blocks.2.skip"].out_group == specs["blocks.2.conv2"].out_group


def test_a_masked_output_channel_is_zero_on_both_paths() -> None:
    net = small(MaskedResNet8)
    group = net.blocks[1].out_group
    with torch.no_grad():
        net.mask_logits[group].fill_(1.0)
        net.mask_logits[group][0] = -5.0
    net.eval()
    seen: dict[str, torch.Tensor] = {}
    net.blocks[1].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    with torch.no_grad():
        net(torch.rand(4, 1, 28, 28))
    assert float(seen["out"][:, 0].abs().max()) < 1e-6
    assert float(seen["out"][:, 1:].abs().max()) > 0


def test_masks_are_noisy_in_training_and_deterministic_in_eval() -> None:
    net = small(MaskedResNet8)
    net.noise_generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_straight_through_masks_compute_exactly_the_cut_sub_network() -> None:
    net = small(MaskedResNet8)
    with torch.no_grad():
        for i, v in enumerate(net.mask_logits.values()):
            v.copy_(torch.linspace(-1.0, 1.0, v.shape[0]).roll(i))
    sub = cut(net)
    net.train()
    sub.train()
    net.train_masks = "straight_through"
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert torch.allclose(out, sub(x), atol=1e-5)
    out.sum().backward()
    assert all(
        v.grad is not None and bool(v.grad.abs().sum() > 0) for v in net.mask_logits.values()
    )


def test_training_step_reaches_mask_logits_and_mask_init_is_seeded() -> None:
    net = small(MaskedResNet8)
    loss = net.training_step((torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.mask_logits.values())
    a, b = MaskedResNet8(seed=5), MaskedResNet8(seed=5)
    assert all(torch.equal(a.mask_logits[g], b.mask_logits[g]) for g in a.groups)
    shifted = MaskedResNet8(seed=5, mask_init_mean=3.0, mask_init_scale=0.0)
    assert all(bool((v == 3.0).all()) for v in shifted.mask_logits.values())


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="widths must name exactly"):
        MaskedResNet8(widths={"stem": 4})
    net = MaskedResNet8(masked=False)
    with pytest.raises(ValueError, match=r"widths\['stem'\] must be an integer in \[1, 64\]"):
        MaskedResNet8(widths={**net.full_widths, "stem": 65})
    with pytest.raises(ValueError, match="tau must be > 0"):
        MaskedResNet8(tau=0.0)
    with pytest.raises(ValueError, match="image_size"):
        MaskedResNet8(image_size=4)
