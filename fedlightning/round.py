"""The types of one federated round, shared by the trainer, algorithms, executors and callbacks.

Nothing here imports the trainer: algorithms and executors depend on this module, never on
:mod:`fedlightning.trainer`, so the round's vocabulary has one home and no import circle.

* :class:`RoundPlan`: how much local work a client does this round.
* :class:`ClientTask`: what the server hands an executor for one client (its message, state
  and seed); :class:`ClientContext`: what the client's hooks see while it trains.
* :class:`Reply` / :class:`ClientFailure`: what comes back; :class:`Trained` pairs a reply
  with the client's new persistent state.
* :func:`derive_seed` / :func:`derive_rng` and the named seed streams every random choice
  derives from.
* :class:`ServerContext`: what server-side algorithm hooks see of the run (``self.server``),
  a narrow face of any :class:`RunHandle` (the trainer is one).

References:
    H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017 (the round these types describe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.messages import Message

__all__ = [
    "STREAM_CLIENT",
    "STREAM_SELECT",
    "ClientContext",
    "ClientFailure",
    "ClientTask",
    "Direction",
    "Reply",
    "RoundPlan",
    "RunHandle",
    "ServerContext",
    "Trained",
    "derive_rng",
    "derive_seed",
]

Direction = Literal["down", "up"]
"""Which way a message travels: ``"down"`` server -> client, ``"up"`` client -> server."""

STREAM_SELECT = 0
"""Seed stream of client selection: ``derive_rng(seed, round, STREAM_SELECT)``."""
STREAM_CLIENT = 1
"""Seed stream of a client's local run: ``derive_seed(seed, round, client, STREAM_CLIENT)``."""


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (what ``FederatedTrainer.seed_for`` gives).

    Args:
        seed: The root seed.
        *keys: Non-negative integers naming the stream, e.g. ``(round, client)``.

    Returns:
        An integer in ``[0, 2**63)``.

    Example:
        >>> derive_seed(0, 1, 2) == derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
        True
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def derive_rng(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator derived from ``seed`` and ``keys`` (``FederatedTrainer.rng``)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


@dataclass(frozen=True)
class RoundPlan:
    """How much local work a client does per round.

    Attributes:
        epochs: Local epochs (or ``None`` when only ``steps`` bounds the work).
        steps: Local optimizer steps (optional bound).
        eval_local: Whether each client evaluates its local model after training. The
            trainer hands executors a plan where this is already combined with the round's
            evaluation schedule (``eval_every``).
    """

    epochs: int | None
    steps: int | None
    eval_local: bool


@dataclass(frozen=True)
class ClientTask:
    """One client's share of a round, as the server hands it to an executor.

    Attributes:
        client: Client id.
        round: Round number, from 1.
        message: What the server sent it (decoded where the client trains).
        num_samples: Number of local training samples.
        seed: Seed of this local run: ``derive_seed(seed, round, client, STREAM_CLIENT)``.
        state: The client's persistent state (empty unless the algorithm keeps some).
    """

    client: int
    round: int
    message: Message
    num_samples: int
    seed: int
    state: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ClientContext:
    """What a client knows during its local round.

    Attributes:
        client: Client id.
        round: Round number, from 1.
        message: The message the server sent this client.
        received: ``message.decode()``: the dense tensors received, on the client's device.
        num_samples: Number of local training samples.
        state: Per-client state kept across rounds (checkpointed); filled by algorithms that
            ask for it (``Algorithm.stateful_clients``).
        seed: Seed of this client run, derived from (trainer seed, round, client).
        data: The federated datamodule, for client-side hooks that read the client's own
            data (``data.client_data(ctx.client)``); ``None`` outside a run.
    """

    client: int
    round: int
    message: Message
    received: dict[str, Tensor]
    num_samples: int
    state: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    data: FederatedDataModule | None = None


@dataclass
class Reply:
    """A client's answer to the server.

    Attributes:
        client: Client id.
        message: The message sent back.
        num_samples: Number of local training samples (the FedAvg weight).
        metrics: Means of what the module logged during local training, plus local
            evaluation results where asked for.
    """

    client: int
    message: Message
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Trained:
    """A client that trained: its reply and its new persistent state.

    Attributes:
        reply: What it sends back.
        state: Its state after the round (the trainer stores it when the algorithm keeps
            client state).
        seconds: Wall time of the local run, as measured where it ran.
    """

    reply: Reply
    state: dict[str, Any]
    seconds: float = 0.0

    @property
    def client(self) -> int:
        """The client id."""
        return self.reply.client


@dataclass(frozen=True)
class ClientFailure:
    """A client that raised instead of replying.

    Attributes:
        client: Client id.
        error: The exception's type and message.
    """

    client: int
    error: str


class RunHandle(Protocol):
    """What a :class:`ServerContext` reads of the run (``FederatedTrainer`` is one).

    Algorithms never hold it: server hooks get the :class:`ServerContext` in front of it,
    and client hooks run wherever the executor puts them, with only a
    :class:`ClientContext`.
    """

    seed: int
    rounds: int
    current_round: int

    @property
    def datamodule(self) -> FederatedDataModule:
        """The federated data."""
        ...

    @property
    def global_model(self) -> LightningModule:
        """The server's model."""
        ...

    def num_selected(self, num_clients: int) -> int:
        """How many of ``num_clients`` clients take part in a round."""
        ...

    def seed_for(self, *keys: int) -> int:
        """A seed derived from the run's seed and ``keys``."""
        ...

    def rng(self, *keys: int) -> np.random.Generator:
        """A NumPy generator derived from the run's seed and ``keys``."""
        ...

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record metrics for the current round."""
        ...

    def dispatch(self, round: int, client: int, direction: Direction, message: Message) -> None:
        """Count a message that crosses the wire outside the round's own exchange."""
        ...


class ServerContext:
    """What server-side algorithm hooks see of the run: a narrow face of the trainer.

    Server hooks (``setup``, ``round_plan``, ``select_clients``, ``server_message``,
    ``aggregate``, ``on_round_end``) read the round, draw from the run's seed streams, log
    metrics, count extra exchanges and read the federated data through it; they never see
    the trainer's loggers, callbacks, executor or checkpoints.

    Args:
        run: The trainer (or any object with :class:`RunHandle`'s members).
        resuming: Whether the run continues from a checkpoint (``setup`` then keeps what the
            checkpoint will restore instead of recomputing it, e.g. seed 000's Phase I).

    Example:
        >>> ctx.rng(round, STREAM_SELECT).choice(10, 3, replace=False)  # doctest: +SKIP
    """

    def __init__(self, run: RunHandle, *, resuming: bool = False) -> None:
        self._run = run
        self.resuming = bool(resuming)

    @property
    def seed(self) -> int:
        """The run's root seed."""
        return self._run.seed

    @property
    def rounds(self) -> int:
        """The run's number of rounds."""
        return self._run.rounds

    @property
    def round(self) -> int:
        """The current round (0 before the first)."""
        return self._run.current_round

    @property
    def current_round(self) -> int:
        """Alias of :attr:`round`."""
        return self._run.current_round

    @property
    def datamodule(self) -> FederatedDataModule:
        """The federated data: client ids, sample counts, client data, test loaders."""
        return self._run.datamodule

    @property
    def global_model(self) -> LightningModule:
        """The server's model."""
        return self._run.global_model

    def num_selected(self, num_clients: int) -> int:
        """How many of ``num_clients`` clients take part in a round."""
        return self._run.num_selected(num_clients)

    def seed_for(self, *keys: int) -> int:
        """A seed derived from the run's seed and ``keys`` (:func:`derive_seed`)."""
        return self._run.seed_for(*keys)

    def rng(self, *keys: int) -> np.random.Generator:
        """A NumPy generator derived from the run's seed and ``keys`` (:func:`derive_rng`)."""
        return self._run.rng(*keys)

    def log(self, metrics: Mapping[str, float]) -> None:
        """Record metrics for the current round (they reach every logger at round end)."""
        self._run.log_metrics(metrics)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Alias of :meth:`log`."""
        self._run.log_metrics(metrics)

    def dispatch(self, round: int, client: int, direction: Direction, message: Message) -> None:
        """Count a message that crosses the wire outside the round's own exchange."""
        self._run.dispatch(round, client, direction, message)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"server hooks get a ServerContext, which has no {name!r}: it offers round, "
            "rounds, seed, seed_for, rng, num_selected, log, dispatch, datamodule, "
            "global_model and resuming"
        )
