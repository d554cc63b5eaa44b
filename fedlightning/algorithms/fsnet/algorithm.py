"""Fed-FSNet: FedAvg plus server-synthesized "mimic IID" samples and a KL-to-uniform
regularizer on them (Algorithm 1 of the paper).

One round, in the library's hooks:

* ``server_message``: the global weights, plus the synthetic samples D' (extras) and the
  round's beta (a scalar) once D' exists (from round 2; round 1 is plain FedAvg, as in
  Algorithm 1, line 3). D' travels as the float32 extra ``"synthetic"``, or, with a
  ``synthetic_codec``, as the parts of its encoding (extras ``"synthetic/<part>"``, e.g.
  ``"synthetic/q"``, ``"synthetic/lo"``, ``"synthetic/scale"`` for
  :class:`~fedlightning.codecs.UInt8`), so that the message counts their bytes exactly;
* ``training_loss`` (client): eq. (11), cross-entropy + beta * KL(U || P(y|x')) on D'
  (decoded once per client run when it travels encoded);
* ``client_message`` (client): the weight update plus the client's mean and variance
  (extras, so their bytes are counted);
* ``aggregate`` (server): FedAvg, and the clients' statistics are kept (latest per client);
* ``on_round_end`` (server): train the hidden model H through the frozen global model on
  the Gaussian mixture of all statistics received so far (eq. 3), then synthesize D' from
  the matrix S of eq. (9).

References:
    J. Guo, S. Guo, J. Zhang, Z. Liu, "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning
    via Fuzzy Synthesizing Network", arXiv:2208.12044, 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply
from fedlightning.algorithms.fsnet.functional import (
    MixtureWeights,
    Statistics,
    client_statistics,
    kl_uniform,
    synthesis_matrix,
)
from fedlightning.algorithms.fsnet.hidden import HiddenModel, MixturePrior, train_hidden_model
from fedlightning.algorithms.fsnet.schedules import BetaSchedule, StepDecay
from fedlightning.codecs import Codec, Identity
from fedlightning.messages import Message
from fedlightning.models.follow import follow_module, module_device, to_module

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import ServerContext

__all__ = ["FedFSNet"]

SYNTHETIC = "synthetic"
MEAN = "mean"
VARIANCE = "variance"
BETA = "beta"

_STREAM_HIDDEN = 3003
_CTX_SYNTHETIC = "_fsnet_synthetic"  # D' as decoded by a client, cached on its ClientContext


class FedFSNet(Algorithm):
    """Fed-FSNet: a server-side fuzzy synthesizing network regularizes non-IID clients.

    Hyper-parameters default to the paper's values where it gives them (60 synthetic
    samples, beta = 1 divided by 10 every 10 rounds, scalar client statistics, mixture
    coefficients summing to 1). Where it is silent, the choices are documented on each
    argument and in ``docs/fsnet.md``.

    Args:
        num_synthetic: Size of D' (section 4.5: 60), >= 1.
        beta: Schedule of the regularizer weight; any ``round -> float`` callable
            (default :class:`~fedlightning.algorithms.fsnet.StepDecay`: 1, /10 every 10
            rounds, section 4.3).
        statistics: ``"scalar"``: each client sends one mean and one variance (section
            3.2.1, "two simple scalars"); ``"pixel"``: per-feature mean and variance.
        mixture_weights: How the mixture coefficients pi_k are chosen (the paper: they are
            "variational" and sum to 1): ``"dirichlet"`` (redrawn every hidden-model batch,
            default), ``"samples"`` (sample shares) or ``"uniform"``.
        dominance: Range of the dominant entry C_i of each row of S (eq. 9), drawn
            uniformly; the paper only asks C_i >> epsilon.
        hidden_widths: Hidden layer widths of the default hidden model
            (:class:`~fedlightning.algorithms.fsnet.HiddenModel`); override
            :meth:`make_hidden_model` for another architecture.
        hidden_steps: Adam steps of hidden-model training per round (not in the paper).
        hidden_batch_size: Mixture draws per hidden-model step (not in the paper).
        hidden_lr: Adam learning rate of the hidden model (not in the paper).
        uplink: Codec for client updates.
        downlink: Codec for the global weights (D' has its own, ``synthetic_codec``).
        local_bn: Keep BatchNorm layers local.
        synthetic_codec: Codec for D' on the downlink (not in the paper, whose D' is sent
            as it is): e.g. :class:`~fedlightning.codecs.Float16` (half the bytes) or
            :class:`~fedlightning.codecs.UInt8` (8-bit codes plus a float32 offset and
            scale per sample: about a quarter). Its parts travel as extras
            ``"synthetic/<part>"`` and each client decodes them back to float32 images of
            shape ``(num_synthetic, *input_shape)`` once per local run. ``None`` (or
            :class:`~fedlightning.codecs.Identity`): D' travels as float32 images under
            ``"synthetic"``, as without this argument.

    Raises:
        ValueError: If a setting is out of range, or ``synthetic_codec`` is not a
            :class:`~fedlightning.codecs.Codec`.

    Placement: the hidden model H lives where the trainer put the global model (its device
    and floating dtype; float32 under mixed precision, where server-side work runs without
    autocast) and is trained there; the mixture draws and S come from a CPU generator and
    are moved, so a GPU run draws the numbers a CPU run draws. D' is float32 images whatever
    the precision, as the datasets' images are (and travels so unless ``synthetic_codec``
    encodes it); clients convert it to their module's device and dtype. Under
    ``precision="bf16-true"`` H and its Adam optimizer are bfloat16.

    Example:
        >>> from fedlightning.algorithms.fsnet import ConstantBeta
        >>> algorithm = FedFSNet(num_synthetic=60, beta=ConstantBeta(0.5))

    References:
        J. Guo et al., "Fed-FSNet: Mitigating Non-I.I.D. Federated Learning via Fuzzy
        Synthesizing Network", arXiv:2208.12044, 2022 (eq. 3, 9, 11; Algorithm 1).
    """

    server_attributes: ClassVar[tuple[str, ...]] = (
        "_hidden",
        "_optimizer",
        "client_stats",
        "synthetic",
        "synthetic_classes",
        "_synthetic_encoded",
    )

    def __init__(
        self,
        *,
        num_synthetic: int = 60,
        beta: BetaSchedule | None = None,
        statistics: Statistics = "scalar",
        mixture_weights: MixtureWeights = "dirichlet",
        dominance: tuple[float, float] = (0.7, 0.95),
        hidden_widths: Sequence[int] = (256, 512),
        hidden_steps: int = 200,
        hidden_batch_size: int = 128,
        hidden_lr: float = 1e-3,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
        local_bn: bool = False,
        synthetic_codec: Codec | None = None,
    ) -> None:
        super().__init__(uplink=uplink, downlink=downlink, local_bn=local_bn)
        if synthetic_codec is not None and not isinstance(synthetic_codec, Codec):
            raise ValueError(
                "synthetic_codec must be a fedlightning.codecs.Codec (e.g. UInt8()) or None, "
                f"got synthetic_codec={synthetic_codec!r}"
            )
        for name, value in (
            ("num_synthetic", num_synthetic),
            ("hidden_steps", hidden_steps),
            ("hidden_batch_size", hidden_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if statistics not in ("scalar", "pixel"):
            raise ValueError(
                f"statistics must be 'scalar' or 'pixel', got statistics={statistics!r}"
            )
        if mixture_weights not in ("dirichlet", "samples", "uniform"):
            raise ValueError(
                "mixture_weights must be 'dirichlet', 'samples' or 'uniform', got "
                f"mixture_weights={mixture_weights!r}"
            )
        if not (math.isfinite(hidden_lr) and hidden_lr > 0):
            raise ValueError(f"hidden_lr must be > 0, got hidden_lr={hidden_lr}")
        if len(tuple(dominance)) != 2 or not 0.0 < dominance[0] <= dominance[1] <= 1.0:
            raise ValueError(
                f"dominance must be (low, high) with 0 < low <= high <= 1, got "
                f"dominance={dominance}"
            )
        if beta is not None and not callable(beta):
            raise ValueError(f"beta must be a callable round -> float, got beta={beta!r}")
        self.num_synthetic = num_synthetic
        self.beta: BetaSchedule = beta if beta is not None else StepDecay()
        self.statistics: Statistics = statistics
        self.mixture_weights: MixtureWeights = mixture_weights
        self.dominance = (float(dominance[0]), float(dominance[1]))
        self.hidden_widths = tuple(int(w) for w in hidden_widths)
        self.hidden_steps = hidden_steps
        self.hidden_batch_size = hidden_batch_size
        self.hidden_lr = float(hidden_lr)
        self.synthetic_codec: Codec = synthetic_codec if synthetic_codec is not None else Identity()
        self._hidden: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self.num_classes = 0
        self.input_shape: tuple[int, ...] = ()
        self.client_stats: dict[int, tuple[Tensor, Tensor, int]] = {}
        self.synthetic: Tensor | None = None
        self.synthetic_classes: Tensor | None = None
        # (D', its encoded extras): encoded once per D', not once per client message.
        self._synthetic_encoded: tuple[Tensor, dict[str, Tensor]] | None = None

    # ------------------------------------------------------------------ server
    @property
    def hidden_model(self) -> nn.Module:
        """The hidden model H (built in :meth:`setup`)."""
        if self._hidden is None:
            raise RuntimeError("FedFSNet is not set up: call trainer.fit first")
        return self._hidden

    def make_hidden_model(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """Build H: probabilities ``(N, num_classes)`` -> samples ``(N, *input_shape)``.

        Override for another decoder architecture.
        """
        return HiddenModel(num_classes, input_shape, self.hidden_widths)

    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        super().setup(server, model, datamodule)
        num_classes = int(datamodule.num_classes)
        if num_classes < 2:
            raise ValueError(f"FedFSNet needs >= 2 classes, got num_classes={num_classes}")
        if self.dominance[0] <= 1.0 / num_classes:
            raise ValueError(
                f"dominance must start above 1/num_classes = {1.0 / num_classes:.4g} so that "
                f"C_i dominates, got dominance={self.dominance}"
            )
        self.num_classes = num_classes
        self.input_shape = tuple(int(s) for s in datamodule.input_shape)
        generator_seed = server.seed_for(0, _STREAM_HIDDEN)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator_seed)
            hidden = self.make_hidden_model(self.num_classes, self.input_shape)
        # Built on the CPU (the same initial weights everywhere), then where the global model
        # is: its device and floating dtype.
        self._hidden = follow_module(hidden, model)
        self._optimizer = torch.optim.Adam(self._hidden.parameters(), lr=self.hidden_lr)
        self.client_stats = {}
        self.synthetic = None
        self.synthetic_classes = None
        self._synthetic_encoded = None

    def _sends_plain(self) -> bool:
        return type(self.synthetic_codec) is Identity

    def synthetic_extras(self) -> dict[str, Tensor]:
        """The extras that carry D' (empty before D' exists).

        ``{"synthetic": D'}`` without a ``synthetic_codec``; else the parts of
        ``synthetic_codec.encode(D')`` as ``{"synthetic/<part>": ...}``, encoded once per D'.
        """
        synthetic = self.synthetic
        if synthetic is None:
            return {}
        if self._sends_plain():
            return {SYNTHETIC: synthetic}
        cached = self._synthetic_encoded
        if cached is None or cached[0] is not synthetic:
            parts = self.synthetic_codec.encode(synthetic)
            cached = (synthetic, {f"{SYNTHETIC}/{name}": part for name, part in parts.items()})
            self._synthetic_encoded = cached
        return dict(cached[1])

    @override
    def server_message(self, round: int, client: int) -> Message:
        """The global weights; from round 2 on, plus D' (extras) and beta (a scalar).

        D' is encoded by ``synthetic_codec`` (:meth:`synthetic_extras`).
        """
        if self.synthetic is None:
            return Message.of_state(self.global_model, self.global_state(), codec=self.downlink)
        return Message.of_state(
            self.global_model,
            self.global_state(),
            extras=self.synthetic_extras(),
            scalars={BETA: float(self.beta(round))},
            codec=self.downlink,
        )

    @override
    def aggregate(self, round: int, replies: list[Reply]) -> None:
        """FedAvg, then keep each replying client's latest (mean, variance, sample count)."""
        super().aggregate(round, replies)
        for reply in replies:
            extras = reply.message.extras
            if MEAN in extras and VARIANCE in extras:
                self.client_stats[reply.client] = (
                    extras[MEAN].detach().clone(),
                    extras[VARIANCE].detach().clone(),
                    int(reply.num_samples),
                )

    def prior(self) -> MixturePrior:
        """The Gaussian mixture of every client's latest statistics, by client id."""
        if not self.client_stats:
            raise RuntimeError("no client statistics received yet")
        clients = sorted(self.client_stats)
        # On the CPU, where the hidden model's generator draws (results identical on every
        # device); train_hidden_model moves each draw to the hidden model.
        return MixturePrior(
            means=torch.stack([self.client_stats[c][0].cpu() for c in clients]),
            variances=torch.stack([self.client_stats[c][1].cpu() for c in clients]),
            num_samples=torch.tensor([self.client_stats[c][2] for c in clients]),
            weights=self.mixture_weights,
        )

    @override
    def on_round_end(self, round: int) -> None:
        """Train H on eq. (3) through the frozen global model, then synthesize D' (eq. 9)."""
        if not self.client_stats:
            return
        hidden, optimizer = self.hidden_model, self._optimizer
        assert optimizer is not None
        generator = torch.Generator().manual_seed(self.server.seed_for(round, _STREAM_HIDDEN))
        model = self.global_model
        was_training = model.training
        model.eval()
        try:
            losses = train_hidden_model(
                hidden,
                model,
                self.prior(),
                optimizer,
                steps=self.hidden_steps,
                batch_size=self.hidden_batch_size,
                input_shape=self.input_shape,
                generator=generator,
            )
            s, classes = synthesis_matrix(
                self.num_classes, self.num_synthetic, self.dominance, generator
            )
            hidden.eval()
            with torch.no_grad():
                # D' travels as float32 images, whatever the precision (as the datasets'
                # images do); it stays on the global model's device.
                synthetic = hidden(to_module(s, hidden)).detach().to(torch.float32).contiguous()
                predicted = model(to_module(synthetic, model)).argmax(dim=1).cpu()
                agreement = float((predicted == classes).float().mean())
        finally:
            model.train(was_training)
        self.synthetic, self.synthetic_classes = synthetic, classes
        tail = losses[-max(1, len(losses) // 10) :]
        self.server.log(
            {
                "fsnet_hidden_loss": sum(tail) / len(tail),
                "fsnet_synthetic_agreement": agreement,
                "fsnet_beta_next": float(self.beta(round + 1)),
            }
        )

    # ------------------------------------------------------------------ client
    def received_synthetic(
        self, message: Message, device: torch.device | str | None = None
    ) -> Tensor | None:
        """D' as a client gets it from ``message``: float32 images, or ``None`` if absent.

        The plain ``"synthetic"`` extra is returned as it is; encoded parts
        (``"synthetic/<part>"``) are decoded by ``synthetic_codec`` into shape
        ``(num_synthetic, *input_shape)``.

        Args:
            message: A message built by :meth:`server_message`.
            device: Where to decode (the parts are moved there first); default: where they
                are.

        Returns:
            D' (float32 for a float32 D'), or ``None`` when the message carries none.

        Raises:
            RuntimeError: If the parts need decoding but the algorithm was never set up
                (the input shape is unknown).
        """
        plain = message.extras.get(SYNTHETIC)
        if plain is not None:
            return plain
        prefix = f"{SYNTHETIC}/"
        parts = {k[len(prefix) :]: v for k, v in message.extras.items() if k.startswith(prefix)}
        if not parts:
            return None
        if not self.input_shape:
            raise RuntimeError(
                "FedFSNet cannot decode the synthetic samples: input_shape is unknown (the "
                "algorithm is set up by trainer.fit)"
            )
        if device is not None:
            parts = {k: v.to(device) for k, v in parts.items()}
        shape = torch.Size((self.num_synthetic, *self.input_shape))
        return self.synthetic_codec.decode(parts, shape, torch.float32)

    @override
    def training_loss(
        self, ctx: ClientContext, module: LightningModule, batch: Any, loss: Tensor
    ) -> Tensor:
        """Eq. (11): ``loss + beta * KL(U || P(y | x'))`` averaged over D'.

        Encoded D' (``synthetic_codec``) is decoded at the first batch of the client run and
        kept on ``ctx`` for the others.
        """
        beta = ctx.message.scalars.get(BETA, 0.0)
        if beta == 0.0:
            return loss
        synthetic = self._client_synthetic(ctx, module)
        if synthetic is None:
            return loss
        logits = module(to_module(synthetic, module))
        return loss + beta * kl_uniform(logits)

    def _client_synthetic(self, ctx: ClientContext, module: LightningModule) -> Tensor | None:
        plain = ctx.message.extras.get(SYNTHETIC)
        if plain is not None:  # as before synthetic_codec: nothing to decode or cache
            return plain
        cached = ctx.__dict__.get(_CTX_SYNTHETIC)
        if cached is not None and cached[0] is ctx.message:
            return cached[1]
        synthetic = self.received_synthetic(ctx.message, device=module_device(module))
        ctx.__dict__[_CTX_SYNTHETIC] = (ctx.message, synthetic)
        return synthetic

    @override
    def client_message(self, ctx: ClientContext, module: LightningModule) -> Message:
        """The weight update, plus this client's input mean and variance as extras."""
        message = super().client_message(ctx, module)
        if ctx.data is None:
            raise ValueError("FedFSNet.client_message needs ctx.data, the client's datamodule")
        x, _ = ctx.data.client_data(ctx.client)
        mean, variance = client_statistics(x, self.statistics)
        return message.add_extras({MEAN: mean, VARIANCE: variance})

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden_model.state_dict(),
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
            "client_stats": dict(self.client_stats),
            "synthetic": self.synthetic,
            "synthetic_classes": self.synthetic_classes,
        }

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hidden_model.load_state_dict(state["hidden"])
        if self._optimizer is not None and state.get("optimizer") is not None:
            self._optimizer.load_state_dict(state["optimizer"])
        self.client_stats = dict(state["client_stats"])
        synthetic = state["synthetic"]
        if synthetic is not None:  # checkpoints load on the CPU
            synthetic = synthetic.to(module_device(self.global_model))
        self.synthetic = synthetic
        self.synthetic_classes = state["synthetic_classes"]
        self._synthetic_encoded = None
