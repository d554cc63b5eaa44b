"""``executor="auto"``: vectorized where measured to be faster for the module, else sequential.

Whether stacking clients pays depends on the module and the hardware: on a CPU, batched
linear layers gain from fewer, larger kernels, while batched-weight convolutions can be
several times slower than a loop; on a GPU, where small models are launch-bound, stacking
usually wins. So the choice is measured, not guessed: before the first round, the executor
times a few local steps of the round's own clients both ways, on copies of the model (nothing
of the run is changed), and keeps the faster path for the rest of the fit.

References:
    McMahan et al., AISTATS 2017 (FedAvg): the local steps timed are those of its client
    update.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply
from fedlightning.client import fit_local
from fedlightning.executors.base import ClientFailure, Executor
from fedlightning.executors.sequential import SequentialExecutor
from fedlightning.executors.vectorized import (
    StackedRound,
    UnvectorizableError,
    VectorizedExecutor,
    vectorizable,
)

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer

__all__ = ["AutoExecutor"]

log = logging.getLogger(__name__)


class AutoExecutor(Executor):
    """Chooses between the vectorized and the sequential executor by timing both.

    Args:
        probe_steps: Local steps timed per path (after one warm-up step; the median
            counts, as the machine may be shared), >= 1.
        probe_clients: Clients timed on the sequential path (the vectorized path always
            stacks all the round's clients, as it would in the run), >= 1.
        margin: Vectorized must be at least this many times faster to be chosen, >= 1.
        vmap_losses: As :class:`~fedlightning.executors.vectorized.VectorizedExecutor`.

    Attributes:
        choice: ``"vectorized"`` or ``"sequential"`` once decided (before round 1).
        reason: Why: the measured times, or why vectorizing is not possible.
        timings: Seconds per round-step for each path, and their ratio (``speedup``).

    Raises:
        ValueError: For a setting out of range.

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(executor="auto", rounds=10)
    """

    name = "auto"

    def __init__(
        self,
        *,
        probe_steps: int = 3,
        probe_clients: int = 4,
        margin: float = 1.1,
        vmap_losses: Sequence[type[Algorithm]] = (),
    ) -> None:
        for key, value in (
            ("probe_steps", probe_steps),
            ("probe_clients", probe_clients),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {key}={value!r}")
        if not margin >= 1.0:
            raise ValueError(f"margin must be >= 1, got margin={margin!r}")
        self.probe_steps = probe_steps
        self.probe_clients = probe_clients
        self.margin = float(margin)
        self.vectorized = VectorizedExecutor(vmap_losses=vmap_losses)
        self.sequential = SequentialExecutor()
        self.choice: str | None = None
        self.reason = ""
        self.timings: dict[str, float] = {}

    @override
    def setup(self, trainer: FederatedTrainer) -> None:
        self.vectorized.setup(trainer)
        self.choice = None
        self.reason = ""
        self.timings = {}

    @override
    def run(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> list[Reply | ClientFailure]:
        if self.choice is None:
            self.choice, self.reason = self.decide(trainer, round, messages)
            log.info("executor=auto chose %s: %s", self.choice, self.reason)
        chosen: Executor = self.vectorized if self.choice == "vectorized" else self.sequential
        return chosen.run(trainer, round, messages)

    def decide(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> tuple[str, str]:
        """Time both paths on the round's clients and return ``(choice, reason)``.

        Args:
            trainer: The trainer.
            round: The round whose clients are timed.
            messages: That round's messages.

        Returns:
            ``("vectorized" | "sequential", reason)``; also fills :attr:`timings`.
        """
        model = trainer.global_model
        static = vectorizable(model, trainer.algorithm, self.vectorized.vmap_losses)
        if static is not None:
            return "sequential", f"cannot vectorize: {static}"
        with torch.random.fork_rng(devices=[]):
            seq = self._time_sequential(trainer, round, messages)
            try:
                vec = self._time_vectorized(trainer, round, messages, give_up_after=2.0 * seq)
            except UnvectorizableError as exc:
                return "sequential", f"cannot vectorize: {exc}"
            except Exception as exc:  # a probe failure must never take the run down
                return "sequential", f"vectorized probe raised {type(exc).__name__}: {exc}"
        speedup = seq / vec if vec > 0 else float("inf")
        self.timings = {
            "sequential_s_per_step": seq,
            "vectorized_s_per_step": vec,
            "speedup": speedup,
            "clients": float(len(messages)),
        }
        summary = (
            f"{len(messages)} clients, one local step of all of them: sequential {seq:.4f} s, "
            f"vectorized {vec:.4f} s ({speedup:.2f}x; needs {self.margin:.2f}x)"
        )
        return ("vectorized" if speedup >= self.margin else "sequential"), summary

    def _time_vectorized(
        self,
        trainer: FederatedTrainer,
        round: int,
        messages: dict[int, Message],
        give_up_after: float = float("inf"),
    ) -> float:
        """Seconds for one vectorized step of all the round's clients (median of steps).

        The warm-up step is where ``vmap`` rejects a module; when it alone takes longer than
        ``give_up_after``, vectorizing has clearly lost and its time is returned at once.
        """
        probe = copy.deepcopy(trainer.global_model)
        stacked = StackedRound(trainer, probe, round, messages, self.vectorized.vmap_losses)
        start = time.perf_counter()
        stacked.train(max_steps=1)
        warm = time.perf_counter() - start
        if warm > give_up_after:
            return warm
        times = []
        for _ in range(self.probe_steps):
            start = time.perf_counter()
            if stacked.train(max_steps=1) == 0:
                break
            times.append(time.perf_counter() - start)
        return statistics.median(times) if times else warm

    def _time_sequential(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> float:
        """Seconds for one local step of every client of the round, one after another."""
        probe = copy.deepcopy(trainer.global_model)
        algorithm = trainer.algorithm
        clients = list(messages)[: self.probe_clients + 1]
        per_step: list[float] = []
        for n, client in enumerate(clients):
            ctx = _context(trainer, round, client, messages[client])
            torch.manual_seed(ctx.seed)
            start = time.perf_counter()
            module = algorithm.configure_client(ctx, probe)
            loader = trainer.datamodule.train_loader(client, seed=ctx.seed)
            metrics = fit_local(
                module,
                loader,
                epochs=None,
                steps=self.probe_steps,
                loss_hook=_hook(algorithm, ctx, module),
            )
            if n > 0 or len(clients) == 1:  # the first client warms up
                per_step.append((time.perf_counter() - start) / max(int(metrics["steps"]), 1))
        return statistics.median(per_step) * len(messages)


def _hook(algorithm: Algorithm, ctx: ClientContext, module: Any) -> Any:
    def hook(batch: Any, loss: torch.Tensor) -> torch.Tensor:
        return algorithm.training_loss(ctx, module, batch, loss)

    return hook


def _context(trainer: FederatedTrainer, round: int, client: int, message: Message) -> ClientContext:
    state: dict[str, Any] = {}
    if trainer.algorithm.stateful_clients:
        state = copy.deepcopy(trainer.client_states.get(client, {}))
    return trainer.client_context(round, client, message, state)
