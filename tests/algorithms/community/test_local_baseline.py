import pytest
import torch

from fedlightning.algorithms.community import train_local
from fedlightning.models.autoencoders import ConvAutoencoder5


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (0.5 + 0.1 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)


def test_local_training_improves_and_is_seeded():
    x = _images(60)
    prototype = ConvAutoencoder5(lr=1e-2)
    model, epochs = train_local(prototype, x, max_epochs=8, patience=3, seed=1)
    assert 1 <= epochs <= 8
    untrained = ConvAutoencoder5()
    assert float(model.anomaly_score(x).mean()) < float(untrained.anomaly_score(x).mean())
    again, _ = train_local(prototype, x, max_epochs=8, patience=3, seed=1)
    torch.testing.assert_close(again.net[0].weight, model.net[0].weight)
    # The prototype itself is never trained.
    assert not torch.equal(prototype.net[0].weight, model.net[0].weight)


def test_early_stopping_stops_when_validation_stalls():
    # lr so small that the validation loss cannot improve measurably after the first epochs.
    x = _images(40)
    _, epochs = train_local(ConvAutoencoder5(lr=1e-12), x, max_epochs=40, patience=2, seed=0)
    assert epochs < 40


def test_bad_settings():
    x = _images(10)
    with pytest.raises(ValueError, match="max_epochs"):
        train_local(ConvAutoencoder5(), x, max_epochs=0)
    with pytest.raises(ValueError, match="val_fraction"):
        train_local(ConvAutoencoder5(), x, val_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        train_local(ConvAutoencoder5(), x[:1])
