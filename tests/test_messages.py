import pytest
import torch

from fedlightning.codecs import Float16, TopK
from fedlightning.messages import SCALAR_BYTES, Message


def test_nbytes_counts_tensors_extras_and_scalars() -> None:
    m = Message(
        {"w": torch.zeros(10, 10), "b": torch.zeros(10)},
        extras={"x": torch.zeros(4, dtype=torch.float64)},
        scalars={"num_samples": 5},
    )
    assert m.nbytes == 110 * 4 + 4 * 8 + SCALAR_BYTES


def test_topk_message_counts_values_plus_indices() -> None:
    w = torch.randn(1000)
    m = Message({"w": w}, codec=TopK(0.1))
    # 100 float32 values + 100 int16 indices (1000 entries need 16-bit indices)
    assert m.nbytes == 100 * 4 + 100 * 2
    dense = m.decode()["w"]
    assert int((dense != 0).sum()) == 100
    kept = dense != 0
    assert torch.equal(dense[kept], w[kept])
    assert dense[kept].abs().min() >= w[~kept].abs().max()


def test_float16_message_is_half_size() -> None:
    m = Message({"w": torch.randn(64)}, codec=Float16())
    assert m.nbytes == 64 * 2


def test_message_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match="tensors\\['w'\\]"):
        Message({"w": [1.0, 2.0]})  # type: ignore[dict-item]


def test_decode_keeps_shapes_and_dtypes() -> None:
    m = Message({"a": torch.ones(2, 3), "n": torch.tensor(7)}, codec=TopK(0.5))
    out = m.decode()
    assert out["a"].shape == (2, 3)
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 7


def test_dense_names_bypass_a_lossy_codec() -> None:
    stats = torch.randn(100)
    m = Message(
        {"w": torch.randn(100), "bn.running_mean": stats},
        codec=TopK(0.1),
        dense={"bn.running_mean"},
    )
    assert torch.equal(m.decode()["bn.running_mean"], stats)
    assert m.nbytes == (10 * 4 + 10 * 2) + 100 * 4
