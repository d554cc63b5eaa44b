"""The client runtime: one client's local run, from explicit arguments, for every executor.

:class:`ClientRuntime` is the one place where a client trains. It holds only what a local run
needs (the algorithm's client hooks, the federated data, the round's plan, the placement and
the Lightning options of local training, the evaluation metrics) and reads nothing else: it
builds no trainer, reads no trainer attribute and writes nothing shared. A run is:

1. :meth:`ClientRuntime.context`: decode the message onto the device, copy the client's state;
2. under the client's seed (:meth:`ClientRuntime.seeded`): ``configure_client``, the client's
   loader, :func:`~fedlightning.client.fit_local` with the algorithm's loss hook;
3. :meth:`ClientRuntime.finish`: local evaluation when the plan asks for it, then
   ``client_message``; the result is a :class:`~fedlightning.round.Trained` (the reply and the
   client's new state) or a :class:`~fedlightning.round.ClientFailure`.

The sequential executor calls :meth:`ClientRuntime.run` in-process, Ray actors call the same
method on their copy of the runtime, the auto executor's probe times it, and the vectorized
executor shares steps 1 and 3 and the seeding, replacing only the local training with its
batched step. Callbacks fire on the driver, in the trainer, never here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torchmetrics import Metric

from fedlightning.accelerators import Placement
from fedlightning.client import fit_local
from fedlightning.evaluation import evaluate
from fedlightning.round import ClientContext, ClientFailure, ClientTask, Reply, RoundPlan, Trained

if TYPE_CHECKING:
    from fedlightning.algorithms.base import Algorithm
    from fedlightning.datamodules import FederatedDataModule

__all__ = ["ClientRuntime", "LocalSettings", "probe_plan", "seed_torch"]


@dataclass(frozen=True)
class LocalSettings:
    """The ``lightning.Trainer`` options that every client's local run honours.

    Attributes:
        gradient_clip_val: Clip gradients at this value (or norm); ``None``: no clipping.
        gradient_clip_algorithm: ``"norm"`` (default when ``None``) or ``"value"``.
        accumulate_grad_batches: One optimizer step every this many batches.
    """

    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None
    accumulate_grad_batches: int = 1


def seed_torch(seed: int, placement: Placement | None = None) -> None:
    """Seed torch's CPU generator, and the accelerator's when the run uses one.

    ``torch.manual_seed`` also queues seeding calls for every lazy accelerator backend,
    recording a stack trace each time: milliseconds per client on a CPU-only run.
    """
    torch.random.default_generator.manual_seed(seed)
    if placement is not None and placement.accelerator == "cuda":
        torch.cuda.manual_seed(seed)
    elif torch.cuda.is_initialized():  # is_available() probes the driver on every call
        torch.cuda.manual_seed_all(seed)


class ClientRuntime:
    """Trains one client at a time from explicit arguments; what every executor schedules.

    Args:
        hooks: The algorithm whose client-side hooks run (``configure_client``,
            ``training_loss``, ``client_message``); nothing server-side is called.
        datamodule: The federated data (each client's loader, the test sets).
        plan: The round's local work; ``plan.eval_local`` already says whether this round
            evaluates locally.
        placement: Device and precision.
        metrics: torchmetrics objects for local evaluation (``acc_local`` / ``acc_client``).
        settings: Gradient clipping and accumulation.

    Example:
        >>> runtime = ClientRuntime(FedAvg(), dm, RoundPlan(1, None, False))  # doctest: +SKIP
        >>> outcome = runtime.run(task, worker_module)  # doctest: +SKIP
    """

    def __init__(
        self,
        hooks: Algorithm,
        datamodule: FederatedDataModule,
        plan: RoundPlan,
        *,
        placement: Placement | None = None,
        metrics: Mapping[str, Metric] | None = None,
        settings: LocalSettings | None = None,
    ) -> None:
        self.hooks = hooks
        self.datamodule = datamodule
        self.plan = plan
        self.placement = placement if placement is not None else Placement()
        self.metrics = dict(metrics) if metrics is not None else {}
        self.settings = settings if settings is not None else LocalSettings()

    def with_plan(self, plan: RoundPlan) -> ClientRuntime:
        """The same runtime with another plan (e.g. a step budget for a timing probe)."""
        return ClientRuntime(
            self.hooks,
            self.datamodule,
            plan,
            placement=self.placement,
            metrics=self.metrics,
            settings=self.settings,
        )

    # ------------------------------------------------------------------ the steps
    def context(self, task: ClientTask) -> ClientContext:
        """The client's context: the message decoded onto the device, a copy of its state."""
        device = self.placement.device
        received = {k: v.to(device) for k, v in task.message.decode().items()}
        return ClientContext(
            client=task.client,
            round=task.round,
            message=task.message,
            received=received,
            num_samples=task.num_samples,
            state=dict(task.state),
            seed=task.seed,
            data=self.datamodule,
        )

    @contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """Run a block with torch's generators seeded by ``seed``, restoring them after."""
        devices = [self.placement.index or 0] if self.placement.accelerator == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed_torch(seed, self.placement)
            yield

    def configure(self, ctx: ClientContext, worker: LightningModule) -> LightningModule:
        """The algorithm's ``configure_client`` on the worker (call under :meth:`seeded`)."""
        return self.hooks.configure_client(ctx, worker)

    def train_loader(self, ctx: ClientContext) -> Iterable[Any]:
        """The client's training batches, shuffled by the client's seed."""
        return self.datamodule.train_loader(ctx.client, seed=ctx.seed)

    def fit(self, ctx: ClientContext, module: LightningModule) -> dict[str, float]:
        """Local training with the algorithm's loss hook (call under :meth:`seeded`)."""
        hooks = self.hooks
        settings = self.settings
        return fit_local(
            module,
            self.train_loader(ctx),
            epochs=self.plan.epochs,
            steps=self.plan.steps,
            loss_hook=lambda batch, loss: hooks.training_loss(ctx, module, batch, loss),
            placement=self.placement,
            gradient_clip_val=settings.gradient_clip_val,
            gradient_clip_algorithm=settings.gradient_clip_algorithm,
            accumulate_grad_batches=settings.accumulate_grad_batches,
        )

    def finish(
        self, ctx: ClientContext, module: LightningModule, metrics: dict[str, float]
    ) -> Trained:
        """Local evaluation (when the plan asks for it) and the client's reply."""
        if self.plan.eval_local:
            metrics.update(self.local_eval(ctx.client, module))
        message = self.hooks.client_message(ctx, module)
        return Trained(Reply(ctx.client, message, ctx.num_samples, metrics), ctx.state)

    def run(self, task: ClientTask, worker: LightningModule) -> Trained | ClientFailure:
        """Train one client on ``worker`` (the executor's working copy of the model).

        Args:
            task: The client's share of the round.
            worker: A module of the global model's architecture; it is overwritten.

        Returns:
            The reply and new state, or the failure: a failing client never raises.
        """
        start = time.perf_counter()
        try:
            ctx = self.context(task)
            with self.seeded(task.seed):
                module = self.configure(ctx, worker)
                metrics = self.fit(ctx, module)
                trained = self.finish(ctx, module, metrics)
        except Exception as exc:  # a failing client never takes the run down
            return ClientFailure(task.client, f"{type(exc).__name__}: {exc}")
        trained.seconds = time.perf_counter() - start
        return trained

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, module: LightningModule, loader: Iterable[Any]) -> dict[str, float]:
        """Evaluate ``module`` on ``loader`` with the run's metrics, device and precision."""
        return evaluate(module, loader, self.metrics, placement=self.placement)

    def local_eval(self, client: int, module: LightningModule) -> dict[str, float]:
        """``acc_local`` (the shared test set) and ``acc_client`` (the client's own, if any)."""
        metrics: dict[str, float] = {}
        local = self.evaluate(module, self.datamodule.test_loader())
        if "acc" in local:
            metrics["acc_local"] = local["acc"]
        client_loader = self.datamodule.client_test_loader(client)
        if client_loader is not None:
            own = self.evaluate(module, client_loader)
            if "acc" in own:
                metrics["acc_client"] = own["acc"]
        return metrics


def probe_plan(plan: RoundPlan, steps: int) -> RoundPlan:
    """``plan`` bounded to ``steps`` optimizer steps without local evaluation (for probes)."""
    return replace(plan, epochs=None, steps=steps, eval_local=False)
