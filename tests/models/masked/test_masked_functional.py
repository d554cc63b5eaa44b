import math

import pytest
import torch

from fedlightning.models.masked.functional import (
    js_divergence,
    keep_probability,
    logistic_noise,
    relaxed_mask,
    straight_through_mask,
)


def test_logistic_noise_is_seeded_and_standard_logistic() -> None:
    a = logistic_noise((200_000,), generator=torch.Generator().manual_seed(3))
    b = logistic_noise((200_000,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert abs(float(a.mean())) < 0.02
    assert float(a.var()) == pytest.approx(math.pi**2 / 3, rel=0.03)  # logistic variance
    assert torch.isfinite(a).all()


def test_relaxed_mask_deterministic_and_noisy() -> None:
    v = torch.tensor([-0.5, 0.0, 0.02])
    assert torch.allclose(relaxed_mask(v, 0.1), torch.sigmoid(v / 0.1))
    noise = torch.tensor([1.0, -1.0, 0.0])
    assert torch.allclose(relaxed_mask(v, 0.5, noise), torch.sigmoid((v + noise) / 0.5))
    with pytest.raises(ValueError, match="tau must be > 0"):
        relaxed_mask(v, 0.0)


def test_keep_probability_is_the_low_temperature_mean_of_the_noisy_mask() -> None:
    v = torch.tensor([-1.0, 0.3, 2.0])
    noise = logistic_noise((100_000, 3), generator=torch.Generator().manual_seed(0))
    mc = relaxed_mask(v, 1e-3, noise).mean(0)
    assert torch.allclose(mc, keep_probability(v), atol=0.01)


def test_js_divergence_values() -> None:
    p = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(js_divergence(p, p)) == pytest.approx(0.0, abs=1e-7)
    q = torch.tensor([[0.0, 1.0, 0.5]])
    assert float(js_divergence(p, q)) == pytest.approx(float(js_divergence(q, p)), abs=1e-7)
    # disjoint one-hot distributions: log 2
    a, b = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    assert float(js_divergence(a, b)) == pytest.approx(math.log(2), rel=1e-5)
    # by hand: p = (0.5, 0.5), q = (1, 0) -> m = (0.75, 0.25)
    pp, qq = torch.tensor([[0.0, 0.0]]), torch.tensor([[50.0, -50.0]])
    expected = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    expected += 0.5 * math.log(1 / 0.75)
    assert float(js_divergence(pp, qq)) == pytest.approx(expected, rel=1e-5)
    rows = js_divergence(torch.cat([p, q]), torch.cat([q, q]), reduction="none")
    assert rows.shape == (2,) and float(rows[1]) == pytest.approx(0.0, abs=1e-7)


def test_js_divergence_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        js_divergence(torch.zeros(2, 3), torch.zeros(2, 3), reduction="max")


def test_straight_through_mask_is_hard_forward_and_sigmoid_backward() -> None:
    v = torch.tensor([-2.0, -1e-4, 0.0, 0.7], requires_grad=True)
    m = straight_through_mask(v, temperature=0.5)
    assert torch.equal(m.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (m * weights).sum().backward()
    assert v.grad is not None
    s = torch.sigmoid(v.detach() / 0.5)
    assert torch.allclose(v.grad, weights * s * (1 - s) / 0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        straight_through_mask(v, temperature=0.0)
