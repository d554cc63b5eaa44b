import pytest
import torch

from fedlightning.client import fit_local
from fedlightning.datamodules import TensorLoader
from fedlightning.models.autoencoders import (
    ConvAutoencoder5,
    ConvAutoencoder7,
    FlatAutoencoder,
    reconstruction_distance,
)


@pytest.mark.parametrize(
    ("cls", "count"),
    [(ConvAutoencoder5, 3_217), (ConvAutoencoder7, 28_353), (FlatAutoencoder, 105_392)],
)
def test_parameter_counts_match_seed000_appendix(cls, count):
    model = cls()
    assert model.num_parameters == count
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # sigmoid output


def test_anomaly_score_is_euclidean_reconstruction_distance():
    torch.manual_seed(0)
    model = ConvAutoencoder5().eval()
    x = torch.rand(4, 1, 28, 28)
    expected = torch.sqrt(((model(x) - x) ** 2).sum(dim=(1, 2, 3)))
    torch.testing.assert_close(model.anomaly_score(x, batch_size=3), expected)
    assert model.training is False
    with pytest.raises(ValueError, match="reconstruction shape"):
        reconstruction_distance(x, x[:2])


def test_channels_last_changes_speed_not_maths():
    torch.manual_seed(0)
    plain = ConvAutoencoder7()
    fast = ConvAutoencoder7(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)


def test_training_lowers_reconstruction_error_and_scores_outliers_higher():
    torch.manual_seed(0)
    # Inliers: a fixed bright square plus small noise; outliers: uniform noise.
    base = torch.zeros(1, 28, 28)
    base[:, 8:20, 8:20] = 0.9
    inliers = (base + 0.05 * torch.rand(64, 1, 28, 28)).clamp(0, 1)
    outliers = torch.rand(16, 1, 28, 28)
    model = ConvAutoencoder5(lr=1e-2)
    before = float(model.anomaly_score(inliers).mean())
    loader = TensorLoader(inliers, torch.zeros(64), batch_size=16, shuffle=True, seed=0)
    metrics = fit_local(model, loader, epochs=15)
    assert "train_loss" in metrics
    after = model.anomaly_score(inliers)
    assert float(after.mean()) < 0.5 * before
    assert float(model.anomaly_score(outliers).min()) > float(after.max())


def test_bad_settings_are_rejected_with_the_parameter_named():
    with pytest.raises(ValueError, match="lr must be > 0"):
        ConvAutoencoder5(lr=0.0)
    with pytest.raises(ValueError, match="in_channels"):
        ConvAutoencoder7(in_channels=0)
    with pytest.raises(ValueError, match="hidden"):
        FlatAutoencoder(hidden=())
    with pytest.raises(ValueError, match="input_shape"):
        FlatAutoencoder(input_shape=(1, 0, 28))


def test_flat_autoencoder_adapts_to_input_shape():
    model = FlatAutoencoder(input_shape=(3, 8, 8), hidden=(16, 4, 16))
    d = 3 * 8 * 8
    assert model.num_parameters == d * 16 + 16 + 16 * 4 + 4 + 4 * 16 + 16 + 16 * d + d
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
