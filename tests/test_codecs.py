import pytest
import torch

from fedlightning.codecs import Float16, Identity, TopK, index_dtype


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
