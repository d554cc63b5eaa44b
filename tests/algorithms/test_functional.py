import pytest
import torch

from fedlightning.algorithms.functional import weighted_average


def test_weighted_average_by_hand() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(20)}
    out = weighted_average([a, b], [1.0, 3.0])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 18  # round(17.5) in float64 -> 18


def test_weighted_average_of_identical_inputs_is_the_input() -> None:
    a = {"w": torch.randn(5)}
    out = weighted_average([a, a, a], [1.0, 2.0, 3.0])
    assert torch.allclose(out["w"], a["w"], atol=1e-6)


@pytest.mark.parametrize("weights", [[0.0, 0.0], [-1.0, 2.0]])
def test_weighted_average_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_average([{"w": torch.ones(1)}, {"w": torch.ones(1)}], weights)


def test_weighted_average_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one weight per mapping"):
        weighted_average([{"w": torch.ones(1)}], [1.0, 2.0])


def test_proximal_term_by_hand() -> None:
    from torch import nn

    from fedlightning.algorithms.functional import proximal_term

    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.fill_(3.0)
    anchor = {"weight": torch.tensor([[0.0, 0.0]])}  # the bias is not anchored
    assert float(proximal_term(layer, anchor, mu=0.5).detach()) == 0.25 * (1.0 + 4.0)
