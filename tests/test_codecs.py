import pytest
import torch

from fedlightning.codecs import Float16, Identity, TopK, UInt8, index_dtype
from fedlightning.messages import Message


def test_identity_round_trip_is_exact() -> None:
    t = torch.randn(3, 4)
    codec = Identity()
    assert torch.equal(codec.decode(codec.encode(t), t.shape, t.dtype), t)


def test_float16_halves_bytes_and_loses_only_precision() -> None:
    t = torch.randn(100)
    parts = Float16().encode(t)
    assert parts["data"].dtype == torch.float16
    back = Float16().decode(parts, t.shape, t.dtype)
    assert back.dtype == torch.float32
    assert torch.allclose(back, t, atol=1e-2)


def test_topk_keeps_largest_magnitudes() -> None:
    t = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 1.0, 0.05, 0.0, 0.4])
    codec = TopK(0.2)
    parts = codec.encode(t)
    assert parts["values"].numel() == 2
    back = codec.decode(parts, t.shape, t.dtype)
    expected = torch.zeros(10)
    expected[1], expected[3] = -5.0, 3.0
    assert torch.equal(back, expected)


@pytest.mark.parametrize("numel,dtype", [(100, torch.int16), (40_000, torch.int32)])
def test_topk_indices_use_narrowest_type(numel: int, dtype: torch.dtype) -> None:
    parts = TopK(0.1).encode(torch.randn(numel))
    assert parts["indices"].dtype == dtype == index_dtype(numel)


def test_topk_leaves_integer_tensors_alone() -> None:
    t = torch.arange(10)
    assert set(TopK(0.1).encode(t)) == {"data"}


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
def test_topk_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        TopK(ratio)


def test_topk_ratio_one_sends_dense() -> None:
    t = torch.randn(7)
    parts = TopK(1.0).encode(t)
    assert set(parts) == {"data"}


def _quantization_error_bound(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """scale / 2 per element (plus float32 rounding), broadcast to ``shape``."""
    scale = parts["scale"]
    if scale.dim() > 0:
        scale = scale.reshape(-1, *([1] * (len(shape) - 1)))
    return (scale / 2 + 1e-6).expand(shape)


@pytest.mark.parametrize("per_row", [True, False])
def test_uint8_round_trip_is_within_half_a_step(per_row: bool) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 3, 5, 5, generator=g) * torch.arange(1.0, 7.0).reshape(6, 1, 1, 1)
    codec = UInt8(per_row=per_row)
    parts = codec.encode(t)
    assert parts["q"].dtype == torch.uint8 and parts["q"].shape == t.shape
    assert parts["lo"].dtype == parts["scale"].dtype == torch.float32
    back = codec.decode(parts, t.shape, t.dtype)
    assert back.dtype == torch.float32 and back.shape == t.shape
    assert bool(((back - t).abs() <= _quantization_error_bound(parts, t.shape)).all())
    # The codes span the full 0..255 range of every quantized group.
    groups = parts["q"].reshape(6, -1) if per_row else parts["q"].reshape(1, -1)
    assert groups.amin(dim=1).eq(0).all() and groups.amax(dim=1).eq(255).all()


def test_uint8_per_row_has_one_offset_and_scale_per_row() -> None:
    t = torch.stack([torch.linspace(0.0, 1.0, 50), torch.linspace(-10.0, 30.0, 50)])
    row = UInt8().encode(t)
    assert row["lo"].shape == row["scale"].shape == (2,)
    torch.testing.assert_close(row["lo"], torch.tensor([0.0, -10.0]))
    torch.testing.assert_close(row["scale"], torch.tensor([1.0, 40.0]) / 255)
    tensor = UInt8(per_row=False).encode(t)
    assert tensor["lo"].shape == tensor["scale"].shape == ()
    assert tensor["lo"].item() == -10.0
    assert tensor["scale"].item() == pytest.approx(40.0 / 255)
    # The small-range row keeps its precision per row, not per tensor.
    err_row = (UInt8().decode(row, t.shape, t.dtype) - t)[0].abs().max()
    err_tensor = (UInt8(per_row=False).decode(tensor, t.shape, t.dtype) - t)[0].abs().max()
    assert err_row <= 0.5 / 255 + 1e-7 < err_tensor


@pytest.mark.parametrize("per_row", [True, False])
def test_uint8_constant_rows_decode_exactly(per_row: bool) -> None:
    t = torch.empty(4, 1, 3, 3)
    t[0], t[1], t[2] = 0.0, -1.2345678, 3.1e-5
    t[3] = torch.linspace(-1, 1, 9).reshape(1, 3, 3)
    codec = UInt8(per_row=per_row)
    back = codec.decode(codec.encode(t), t.shape, t.dtype)
    if per_row:
        assert torch.equal(back[:3], t[:3])
    constant = torch.full((2, 5), 0.7)
    assert torch.equal(
        codec.decode(codec.encode(constant), constant.shape, torch.float32), constant
    )
    half = torch.full((3, 4), -2.5, dtype=torch.float16)
    assert torch.equal(codec.decode(codec.encode(half), half.shape, torch.float16), half)


def test_uint8_leaves_integer_tensors_alone() -> None:
    t = torch.arange(10)
    parts = UInt8().encode(t)
    assert set(parts) == {"data"} and parts["data"] is t
    assert torch.equal(UInt8().decode(parts, t.shape, t.dtype), t)


def test_uint8_decodes_to_the_requested_dtype() -> None:
    t = torch.rand(3, 8, dtype=torch.float64)
    codec = UInt8()
    parts = codec.encode(t)
    back = codec.decode(parts, t.shape, torch.float64)
    assert back.dtype == torch.float64
    assert bool(((back - t).abs() <= _quantization_error_bound(parts, t.shape)).all())
    assert codec.decode(parts, t.shape, torch.bfloat16).dtype == torch.bfloat16


def test_uint8_handles_empty_and_scalar_tensors() -> None:
    codec = UInt8()
    empty = torch.empty(0, 1, 28, 28)
    assert codec.decode(codec.encode(empty), empty.shape, torch.float32).shape == empty.shape
    scalar = torch.tensor(1.5)
    parts = codec.encode(scalar)
    assert parts["lo"].shape == ()
    assert codec.decode(parts, scalar.shape, torch.float32).item() == 1.5


def test_uint8_rejects_non_finite_values_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="finite"):
        UInt8().encode(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="per_row"):
        UInt8(per_row=1)  # type: ignore[arg-type]


def test_uint8_repr_shows_its_arguments() -> None:
    assert repr(UInt8()) == "UInt8(per_row=True)"
    assert repr(UInt8(per_row=False)) == "UInt8(per_row=False)"


@pytest.mark.parametrize(("per_row", "overhead"), [(True, 60 * 8), (False, 8)])
def test_uint8_bytes_are_one_per_value_plus_eight_per_row(per_row: bool, overhead: int) -> None:
    images = torch.rand(60, 1, 28, 28)
    message = Message(extras=UInt8(per_row=per_row).encode(images))
    assert message.nbytes == 47_040 + overhead
    assert Message(extras={"x": images}).nbytes == 4 * 47_040
    # As a message's codec too (tensors), e.g. a downlink of images.
    assert Message({"x": images}, codec=UInt8(per_row=per_row)).nbytes == 47_040 + overhead
