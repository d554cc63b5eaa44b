"""TensorLoader: batches, lengths, reproducible per-epoch shuffling."""

from __future__ import annotations

import pytest
import torch

from fedlightning.datamodules import TensorLoader


def make(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 3), torch.arange(n)


def test_unshuffled_batches_in_order() -> None:
    x, y = make(10)
    loader = TensorLoader(x, y, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.equal(batches[0][0], x[:4])


def test_drop_last() -> None:
    x, y = make(10)
    loader = TensorLoader(x, y, batch_size=4, drop_last=True, shuffle=True)
    assert len(loader) == 2 and [len(b[1]) for b in loader] == [4, 4]


def test_shuffle_covers_every_sample_and_pairs_stay_aligned() -> None:
    x, y = make(23)
    loader = TensorLoader(x, y, batch_size=5, shuffle=True, seed=7)
    seen = []
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)
        seen.append(yb)
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(23))
    assert not torch.equal(order, torch.arange(23))


def test_same_seed_same_batches_new_order_each_epoch() -> None:
    x, y = make(50)
    a = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    b = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    first_a, second_a = torch.cat([t for _, t in a]), torch.cat([t for _, t in a])
    first_b, second_b = torch.cat([t for _, t in b]), torch.cat([t for _, t in b])
    assert torch.equal(first_a, first_b) and torch.equal(second_a, second_b)
    assert not torch.equal(first_a, second_a)  # a new permutation per epoch
    other = torch.cat([t for _, t in TensorLoader(x, y, 8, shuffle=True, seed=4)])
    assert not torch.equal(first_a, other)
    c = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    c.set_epoch(1)
    assert torch.equal(torch.cat([t for _, t in c]), second_a)
    assert torch.equal(a.permutation(0), torch.cat([t for _, t in TensorLoader(x, y, 50, True, 3)]))


def test_empty_loader() -> None:
    loader = TensorLoader(torch.zeros(0, 2), torch.zeros(0), batch_size=4, shuffle=True)
    assert len(loader) == 0 and list(loader) == []


@pytest.mark.parametrize(
    ("batch_size", "seed", "match"),
    [
        (0, 0, "batch_size must be an integer >= 1, got batch_size=0"),
        (2, -1, "seed must be an integer >= 0"),
    ],
)
def test_bad_input(batch_size: int, seed: int, match: str) -> None:
    x, y = make(4)
    with pytest.raises(ValueError, match=match):
        TensorLoader(x, y, batch_size, seed=seed)
    with pytest.raises(ValueError, match="same length"):
        TensorLoader(x, y[:3], batch_size=1)
