"""Tests of seed 002's convolutional beta-VAE (fedlightning.models.vae)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from fedlightning.client import LogSink, capture_logs, fit_local
from fedlightning.evaluation import evaluate
from fedlightning.models import ConvVAE, gaussian_kl, vae_loss


def _small(**kw: object) -> ConvVAE:
    """A small VAE of the same architecture, fast enough to train in tests."""
    torch.manual_seed(0)
    return ConvVAE(latent_dim=4, image_size=12, channels=(4, 8), **kw)  # type: ignore[arg-type]


def _blobs(n: int = 64, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Binary images: a bright square in one of four corners."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    half = size // 2
    for i, k in enumerate(torch.randint(0, 4, (n,), generator=g).tolist()):
        r, c = divmod(k, 2)
        x[i, 0, r * half : (r + 1) * half, c * half : (c + 1) * half] = 1.0
    return x


def test_parameter_count_matches_the_notebook() -> None:
    # Encoder convs 160 + 4,640, BatchNorms 32 + 64 + 32 + 2, two heads 2 x 3,686,600,
    # decoder linear 3,704,832, transposed convs 4,624 + 145.
    assert ConvVAE().num_parameters == 11_087_731
    assert ConvVAE(latent_dim=10).num_parameters == 11_087_731 - 190 * (18_432 * 3 + 2)


def test_shapes_and_ranges() -> None:
    vae = ConvVAE()
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 200)
    recon, _, _ = vae(x)
    assert recon.shape == x.shape and bool(((recon >= 0) & (recon <= 1)).all())
    samples = vae.sample(5, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (5, 1, 28, 28) and bool(((samples >= 0) & (samples <= 1)).all())
    assert vae.reconstruct(x).shape == x.shape
    assert vae.training  # sample/reconstruct restore the mode


def test_sample_and_reconstruct_are_deterministic_given_generator() -> None:
    vae = _small()
    a = vae.sample(4, generator=torch.Generator().manual_seed(3))
    b = vae.sample(4, generator=torch.Generator().manual_seed(3))
    c = vae.sample(4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    x = _blobs(8)
    assert torch.equal(vae.reconstruct(x), vae.reconstruct(x))
    # reconstruct decodes the posterior mean, in evaluation mode
    vae.eval()
    assert torch.allclose(vae.reconstruct(x), vae.decode(vae.encode(x)[0]))


def test_gaussian_kl_by_hand() -> None:
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    # mu = 1, sigma = 1 per dimension: 0.5 * (1 + 1 - 1 - 0) = 0.5 per dimension
    assert torch.allclose(gaussian_kl(torch.ones(1, 4), torch.zeros(1, 4)), torch.tensor([2.0]))
    # mu = 0, log sigma^2 = log 2: 0.5 * (2 - 1 - log 2)
    kl = gaussian_kl(torch.zeros(1, 1), torch.log(torch.tensor([[2.0]])))
    assert torch.allclose(kl, torch.tensor([0.5 * (1 - torch.log(torch.tensor(2.0)))]))


def test_vae_loss_terms_and_beta() -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 6, 6, generator=g) > 0.5).float()
    r = torch.rand(4, 1, 6, 6, generator=g) * 0.98 + 0.01
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    one = vae_loss(x, r, mu, logvar, beta=1.0)
    five = vae_loss(x, r, mu, logvar, beta=5.0)
    bce = functional.binary_cross_entropy(r, x, reduction="sum") / 4
    assert torch.allclose(one.recon, bce)
    assert torch.allclose(one.kl, gaussian_kl(mu, logvar).mean())
    assert torch.allclose(five.loss, one.recon + 5 * one.kl)
    assert torch.allclose(one.elbo, five.elbo)  # beta does not enter the ELBO
    assert torch.allclose(one.elbo, -(one.recon + one.kl))


def test_training_step_logs_recon_kl_loss() -> None:
    vae = _small(beta=2.0)
    sink = LogSink()
    with capture_logs(vae, sink):
        loss = vae.training_step((_blobs(8), torch.zeros(8)), 0)
    means = sink.means()
    assert set(means) == {"recon", "kl", "loss"}
    assert means["loss"] == pytest.approx(means["recon"] + 2.0 * means["kl"], rel=1e-5)
    assert float(loss.detach()) == pytest.approx(means["loss"], rel=1e-6)


def test_test_step_is_deterministic_and_complete() -> None:
    vae = _small()
    loader = [(_blobs(16, seed=s), torch.zeros(16)) for s in range(3)]
    first = evaluate(vae, loader)
    assert {"test_elbo", "test_recon", "test_kl", "test_loss"} <= set(first)
    assert first == evaluate(vae, loader)  # same posterior noise on every call
    assert first["test_elbo"] == pytest.approx(-(first["test_recon"] + first["test_kl"]), rel=1e-5)


def test_training_improves_the_elbo() -> None:
    vae = _small()
    x = _blobs(64)
    loader = [(x[i : i + 16], torch.zeros(16)) for i in range(0, 64, 16)]
    before = evaluate(vae, loader)["test_elbo"]
    torch.manual_seed(0)
    fit_local(vae, loader, epochs=15)
    after = evaluate(vae, loader)["test_elbo"]
    assert after > before + 0.15 * abs(before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got latent_dim=0"),
        ({"beta": -1.0}, "beta must be >= 0, got beta=-1.0"),
        ({"lr": 0.0}, "lr must be > 0, got lr=0.0"),
        ({"image_size": 4}, "image_size must be an integer >= 5"),
        ({"channels": (4,)}, "channels must be a pair"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        ConvVAE(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    vae = _small()
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, 1, 12, 12\), got \(2, 1, 28, 28\)"
    ):
        vae.encode(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"z must have shape \(N, 4\)"):
        vae.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n must be an integer >= 1, got n=0"):
        vae.sample(0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        vae_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), -1.0)
    with pytest.raises(ValueError, match="reconstruction shape"):
        vae_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 1), torch.zeros(1, 1))
