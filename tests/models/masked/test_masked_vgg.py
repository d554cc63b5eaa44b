import torch

from fedlightning.models.masked import MaskedVGG16, count_params


def test_vgg16_parameter_count_of_table_2() -> None:
    assert count_params(MaskedVGG16(masked=False)) == 14_728_266


def test_vgg16_forward_on_both_input_sizes() -> None:
    full = MaskedVGG16(masked=False)
    widths = {g: max(2, w // 32) for g, w in full.full_widths.items()}
    assert len(widths) == 13
    for channels, size in ((3, 32), (1, 28)):
        net = MaskedVGG16(in_channels=channels, image_size=size, widths=widths)
        assert net(torch.rand(2, channels, size, size)).shape == (2, 10)
        assert net.specs[-1].out_group is None and net.specs[-1].in_group == "conv12"
