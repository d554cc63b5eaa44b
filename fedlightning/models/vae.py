"""The convolutional beta-VAE of seed 002 as a LightningModule.

Architecture of the authors' notebook (see ``NOTES.md``), for 1 x 28 x 28 inputs:

* encoder: Conv(1->16, 3x3) -> BatchNorm -> LeakyReLU(0.01) -> Conv(16->32, 3x3) ->
  BatchNorm -> LeakyReLU -> flatten (32 x 24 x 24 = 18,432) -> two Linear(18,432 -> 200)
  heads for the posterior mean and log-variance;
* decoder: Linear(200 -> 18,432) -> (32, 24, 24) -> ConvTranspose(32->16, 3x3) -> BatchNorm
  -> LeakyReLU -> ConvTranspose(16->1, 3x3) -> BatchNorm -> Sigmoid.

With latent size 200 it has 11,087,731 parameters ("about 11.1 M"). The loss is the
beta-VAE objective: per-image summed binary cross-entropy plus ``beta`` times the KL
divergence of the diagonal Gaussian posterior from N(0, I), averaged over the batch. The
notebook declares beta = 5 but never applies it, so its effective beta is 1, our default.

References:
    "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002),
    sections 2.2-2.3; C. P. Burgess et al., "Understanding disentangling in beta-VAE", 2018;
    D. P. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from fedlightning.models.follow import draw_device, module_device, module_dtype

__all__ = ["ConvVAE", "VAELoss", "gaussian_kl", "vae_loss"]


@dataclass(frozen=True)
class VAELoss:
    """The terms of the beta-VAE objective, each a per-image mean over the batch (nats).

    Attributes:
        recon: Summed binary cross-entropy of an image and its reconstruction.
        kl: KL divergence of the posterior q(z|x) from the prior N(0, I).
        loss: ``recon + beta * kl``, the quantity minimised.
        elbo: The evidence lower bound ``-(recon + kl)`` (beta does not enter it).
    """

    recon: Tensor
    kl: Tensor
    loss: Tensor
    elbo: Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, in nats.

    Args:
        mu: Posterior means, shape ``(N, D)``.
        logvar: Posterior log-variances, shape ``(N, D)``.

    Returns:
        Shape ``(N,)``: ``0.5 * sum(exp(logvar) + mu^2 - 1 - logvar)``.
    """
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=1)


def vae_loss(
    x: Tensor, reconstruction: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0
) -> VAELoss:
    """The beta-VAE loss of a batch.

    Args:
        x: Inputs in [0, 1], shape ``(N, C, H, W)``.
        reconstruction: Decoder outputs (Bernoulli means) in [0, 1], same shape.
        mu: Posterior means, ``(N, D)``.
        logvar: Posterior log-variances, ``(N, D)``.
        beta: Weight of the KL term, >= 0.

    Returns:
        The loss terms, averaged over the batch.

    Raises:
        ValueError: If shapes disagree or ``beta < 0``.
    """
    if x.shape != reconstruction.shape:
        raise ValueError(
            f"reconstruction shape {tuple(reconstruction.shape)} must equal input shape "
            f"{tuple(x.shape)}"
        )
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got beta={beta}")
    recon = F.binary_cross_entropy(reconstruction, x, reduction="none").flatten(1).sum(1).mean()
    kl = gaussian_kl(mu, logvar).mean()
    return VAELoss(recon=recon, kl=kl, loss=recon + beta * kl, elbo=-(recon + kl))


def _images(batch: Any) -> Tensor:
    """The inputs of a batch: a tensor, or the first element of an ``(x, y)`` pair."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(f"batch must be a tensor or an (x, y) pair, got {type(batch).__name__}")


class ConvVAE(LightningModule):
    """Convolutional beta-VAE of seed 002, trained with Adam on the beta-VAE loss.

    ``forward(x)`` returns ``(reconstruction, mu, logvar)`` with a reparameterised sample
    of z (from torch's generator, which the federated trainer seeds per client run).
    ``training_step`` logs ``recon``, ``kl`` and ``loss``; ``test_step`` (and
    ``validation_step``) log ``test_elbo``, ``test_recon``, ``test_kl`` and ``test_loss``
    (resp. ``val_*``), per-image means in nats. Evaluation draws its posterior noise from a
    generator seeded with ``(eval_seed, batch_idx)``, so two models are scored with the
    same noise and a score does not depend on what ran before.

    Args:
        latent_dim: Size of z (seed 002: 200).
        beta: Weight of the KL term (the notebook's effective value: 1).
        lr: Adam learning rate (seed 002: 1e-3).
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images, >= 5.
        channels: Output channels of the two encoder convolutions (seed 002: 16, 32).
        eval_seed: Seed of the posterior noise used by ``test_step``/``validation_step``.

    Raises:
        ValueError: If a setting is out of range.

    Example:
        >>> vae = ConvVAE()
        >>> vae.num_parameters
        11087731
        >>> vae.sample(4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 28, 28])

    References:
        "Federated learning with variational autoencoders", ICLR 2023 Tiny Papers (seed 002),
        section 2.2 and the authors' notebook.
    """

    def __init__(
        self,
        latent_dim: int = 200,
        beta: float = 1.0,
        lr: float = 1e-3,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        channels: tuple[int, int] = (16, 32),
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        _check_int("latent_dim", latent_dim, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("image_size", image_size, 5)
        if len(channels) != 2:
            raise ValueError(f"channels must be a pair of integers, got channels={channels!r}")
        for value in channels:
            _check_int("channels", value, 1)
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got beta={beta}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got lr={lr}")
        self.save_hyperparameters()
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.lr = float(lr)
        self.eval_seed = int(eval_seed)
        self.input_shape = (int(in_channels), int(image_size), int(image_size))
        c1, c2 = (int(c) for c in channels)
        side = image_size - 4
        self._hidden_shape = (c2, side, side)
        flat = c2 * side * side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3),
            nn.BatchNorm2d(c1),
            nn.LeakyReLU(0.01),
            nn.Conv2d(c1, c2, kernel_size=3),
            nn.BatchNorm2d(c2),
            nn.LeakyReLU(0.01),
            nn.Flatten(),
        )
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.fc_decode = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, kernel_size=3),
            nn.BatchNorm2d(c1),
            nn.LeakyReLU(0.01),
            nn.ConvTranspose2d(c1, in_channels, kernel_size=3),
            nn.BatchNorm2d(in_channels),
            nn.Sigmoid(),
        )

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ the model
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance of a batch of images, each ``(N, latent_dim)``."""
        self._check_input(x)
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli means in [0, 1] of shape ``(N, *input_shape)`` for latents ``(N, D)``."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.fc_decode(z).view(-1, *self._hidden_shape)
        out: Tensor = self.decoder(h)
        return out

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode, draw z = mu + sigma * eps, decode.

        Args:
            x: Images, shape ``(N, *input_shape)``.
            generator: Source of eps (default: torch's global generator); it draws on its
                own device and eps is moved to ``mu``'s.

        Returns:
            ``(reconstruction, mu, logvar)``.
        """
        mu, logvar = self.encode(x)
        eps = torch.randn(
            mu.shape, generator=generator, dtype=mu.dtype, device=draw_device(generator, mu.device)
        ).to(mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> VAELoss:
        """The beta-VAE loss terms of a batch (one posterior sample per image)."""
        reconstruction, mu, logvar = self(x, generator=generator)
        return vae_loss(x, reconstruction, mu, logvar, beta=self.beta)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``n`` latents drawn from the prior N(0, I), in evaluation mode.

        Args:
            n: Number of samples, >= 1.
            generator: Source of z (default: torch's global generator); it draws on its own
                device, then z is moved to the model's device and floating dtype.

        Returns:
            Images in [0, 1] of shape ``(n, *input_shape)``.

        Raises:
            ValueError: If ``n < 1``.
        """
        _check_int("n", n, 1)
        was_training = self.training
        self.eval()
        device = module_device(self)
        z = torch.randn(
            (n, self.latent_dim),
            generator=generator,
            device=draw_device(generator, device),
            dtype=module_dtype(self),
        ).to(device)
        out = self.decode(z)
        self.train(was_training)
        return out

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstructions: decode the posterior means, in evaluation mode.

        Args:
            x: Images, shape ``(N, *input_shape)``.

        Returns:
            Reconstructions of the same shape, in [0, 1].
        """
        was_training = self.training
        self.eval()
        mu, _ = self.encode(x)
        out = self.decode(mu)
        self.train(was_training)
        return out

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The beta-VAE loss of one batch; logs ``recon``, ``kl`` and ``loss``."""
        x = _images(batch)
        terms = self.loss(x)
        n = int(x.shape[0])
        self.log("recon", terms.recon, batch_size=n)
        self.log("kl", terms.kl, batch_size=n)
        self.log("loss", terms.loss, batch_size=n)
        return terms.loss

    def _evaluate(self, batch: Any, batch_idx: int, prefix: str) -> dict[str, Tensor]:
        x = _images(batch)
        generator = torch.Generator(device=x.device).manual_seed(
            self.eval_seed * 1_000_003 + batch_idx
        )
        terms = self.loss(x, generator=generator)
        values = {
            f"{prefix}_elbo": terms.elbo,
            f"{prefix}_recon": terms.recon,
            f"{prefix}_kl": terms.kl,
            f"{prefix}_loss": terms.loss,
        }
        n = int(x.shape[0])
        for name, value in values.items():
            self.log(name, value, batch_size=n)
        return values

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Logs ``test_elbo``, ``test_recon``, ``test_kl`` and ``test_loss`` (nats/image)."""
        return self._evaluate(batch, batch_idx, "test")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Logs ``val_elbo``, ``val_recon``, ``val_kl`` and ``val_loss``."""
        return self._evaluate(batch, batch_idx, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the configured learning rate (seed 002: 1e-3)."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
