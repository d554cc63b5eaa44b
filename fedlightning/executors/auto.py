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
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm
from fedlightning.executors.base import Executor, Outcome
from fedlightning.executors.sequential import SequentialExecutor
from fedlightning.executors.vectorized import (
    StackedRound,
    UnvectorizableError,
    VectorizedExecutor,
    vectorizable,
)
from fedlightning.round import ClientFailure, ClientTask
from fedlightning.runtime import probe_plan

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule

    from fedlightning.runtime import ClientRuntime

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
        self._model: LightningModule | None = None

    @override
    def setup(self, model: LightningModule, runtime: ClientRuntime) -> None:
        self.vectorized.setup(model, runtime)
        self.sequential.setup(model, runtime)
        self._model = model
        self.choice = None
        self.reason = ""
        self.timings = {}

    @override
    def run(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> list[Outcome]:
        if self.choice is None:
            self.choice, self.reason = self.decide(runtime, tasks)
            log.info("executor=auto chose %s: %s", self.choice, self.reason)
        chosen: Executor = self.vectorized if self.choice == "vectorized" else self.sequential
        return chosen.run(runtime, tasks)

    @override
    def teardown(self) -> None:
        self.vectorized.teardown()
        self.sequential.teardown()
        self._model = None

    def decide(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> tuple[str, str]:
        """Time both paths on the round's clients and return ``(choice, reason)``.

        Args:
            runtime: The round's client runtime.
            tasks: The round's clients.

        Returns:
            ``("vectorized" | "sequential", reason)``; also fills :attr:`timings`.
        """
        if self._model is None:
            raise RuntimeError("AutoExecutor.decide before setup: the trainer calls setup")
        static = vectorizable(self._model, runtime.hooks, self.vectorized.vmap_losses)
        static = static or self.vectorized.disabled
        if static is not None:
            return "sequential", f"cannot vectorize: {static}"
        with torch.random.fork_rng(devices=[]):
            try:
                seq = self._time_sequential(runtime, tasks)
            except Exception as exc:  # a probe failure must never take the run down
                return "sequential", f"sequential probe raised {type(exc).__name__}: {exc}"
            try:
                vec = self._time_vectorized(runtime, tasks, give_up_after=2.0 * seq)
            except UnvectorizableError as exc:
                return "sequential", f"cannot vectorize: {exc}"
            except Exception as exc:  # a probe failure must never take the run down
                return "sequential", f"vectorized probe raised {type(exc).__name__}: {exc}"
        speedup = seq / vec if vec > 0 else float("inf")
        self.timings = {
            "sequential_s_per_step": seq,
            "vectorized_s_per_step": vec,
            "speedup": speedup,
            "clients": float(len(tasks)),
        }
        summary = (
            f"{len(tasks)} clients, one local step of all of them: sequential {seq:.4f} s, "
            f"vectorized {vec:.4f} s ({speedup:.2f}x; needs {self.margin:.2f}x)"
        )
        return ("vectorized" if speedup >= self.margin else "sequential"), summary

    def _time_vectorized(
        self,
        runtime: ClientRuntime,
        tasks: Sequence[ClientTask],
        give_up_after: float = float("inf"),
    ) -> float:
        """Seconds for one vectorized step of all the round's clients (median of steps).

        The warm-up step is where ``vmap`` rejects a module; when it alone takes longer than
        ``give_up_after``, vectorizing has clearly lost and its time is returned at once.
        """
        assert self._model is not None
        probe = copy.deepcopy(self._model)
        stacked = StackedRound(runtime, probe, tasks, self.vectorized.vmap_losses)
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

    def _time_sequential(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> float:
        """Seconds for one local step of every client of the round, one after another.

        Each probe is :meth:`ClientRuntime.run` itself, on a copy of the model, with the
        plan bounded to ``probe_steps`` steps and no local evaluation.
        """
        assert self._model is not None
        probe = copy.deepcopy(self._model)
        timed = runtime.with_plan(probe_plan(runtime.plan, self.probe_steps))
        chosen = list(tasks)[: self.probe_clients + 1]
        per_step: list[float] = []
        for n, task in enumerate(chosen):
            copied = replace(task, state=copy.deepcopy(dict(task.state)))
            start = time.perf_counter()
            outcome = timed.run(copied, probe)
            elapsed = time.perf_counter() - start
            if isinstance(outcome, ClientFailure):
                raise RuntimeError(f"sequential probe: client {task.client}: {outcome.error}")
            if n > 0 or len(chosen) == 1:  # the first client warms up
                steps = int(outcome.reply.metrics.get("steps", 1.0))
                per_step.append(elapsed / max(steps, 1))
        return statistics.median(per_step) * len(tasks)
