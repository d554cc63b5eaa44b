"""FederatedTrainer: the round loop.

One round: the algorithm selects clients -> builds each client's message -> each client
loads it into its working copy of the module and trains locally -> builds its reply -> the
algorithm aggregates -> server-side work -> evaluation and callbacks. Callbacks see every
message that crosses the wire.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback as LightningCallback
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.loggers import Logger
from torchmetrics import Metric
from tqdm.auto import tqdm

from fedlightning.accelerators import Placement, resolve_placement
from fedlightning.algorithms.base import Algorithm
from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.settings import render
from fedlightning.callbacks.base import Callback
from fedlightning.callbacks.comm_cost import CommCost
from fedlightning.checkpoint import copy_checkpoint, load_checkpoint
from fedlightning.checkpoint import save_checkpoint as write_checkpoint
from fedlightning.client import check_automatic_optimization, check_local_settings
from fedlightning.datamodules import FederatedDataModule
from fedlightning.environment import environment, environment_differences
from fedlightning.evaluation import evaluate
from fedlightning.executors import Executor, resolve_executor
from fedlightning.messages import Message
from fedlightning.round import (
    STREAM_CLIENT,
    ClientFailure,
    ClientTask,
    Direction,
    Reply,
    RoundPlan,
    ServerContext,
    Trained,
    derive_rng,
    derive_seed,
)
from fedlightning.run_dir import (
    LAST_CHECKPOINT,
    LastCheckpointSchedule,
    checkpoint_dir,
    fingerprint_differences,
    prepare_output_dir,
    run_fingerprint,
    weights_hash,
    write_json,
)
from fedlightning.runtime import ClientRuntime, LocalSettings
from fedlightning.version import __version__

__all__ = ["FederatedTrainer", "RoundPlan", "derive_rng", "derive_seed"]

log = logging.getLogger(__name__)


class FederatedTrainer:
    """Runs a federated algorithm over the clients of a :class:`FederatedDataModule`.

    Args:
        algorithm: The federated algorithm (default :class:`~fedlightning.algorithms.FedAvg`).
        rounds: Number of communication rounds, >= 1.
        clients_per_round: Clients selected each round (default: all clients).
        fraction: Share of clients selected each round, in (0, 1]; excludes
            ``clients_per_round``.
        local_epochs: Local epochs per round.
        local_steps: Local optimizer steps per round (with ``local_epochs=None``, the only
            bound; with both, the first reached stops the client).
        seed: Seed every random choice derives from: (seed, round) for client selection,
            (seed, round, client) for local shuffling and the module's own randomness.
        callbacks: Federated callbacks; a :class:`~fedlightning.callbacks.CommCost` is added
            when none is given.
        logger: A Lightning logger, a list of them, ``True`` for an offline W&B logger (CSV
            when wandb is not installed), or ``False``/``None`` for none.
        eval_every: Evaluate the global model on the test set every this many rounds and
            after the last round; ``None`` never evaluates during ``fit``.
        eval_local: Also evaluate each client's local model on the test set after local
            training (``acc_local``: the mean over the round's clients).
        eval_metrics: torchmetrics objects applied to ``(model(x), y)`` on the test set. By
            default, multiclass accuracy as ``acc`` when the model outputs class scores.
        executor: ``"sequential"``, ``"vectorized"``, ``"ray"``, ``"auto"`` or an
            :class:`~fedlightning.executors.Executor`.
        accelerator: Where clients train, the global model lives and aggregation runs, as
            ``lightning.Trainer``: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``,
            ``"cuda"``, ``"gpu"`` or ``"mps"``.
        devices: One device (``1``, ``"auto"`` or ``[index]``); several GPUs are used
            through Ray workers (``RayExecutor(num_gpus_per_worker=...)``).
        precision: ``"32-true"``, ``"64-true"``, ``"16-mixed"`` (GPU), ``"bf16-mixed"`` or
            ``"bf16-true"``, through Lightning Fabric's precision plugins. Byte counts
            depend only on the parameters' dtype and the codecs: mixed precision does not
            change them.
        gradient_clip_val: As ``lightning.Trainer``: clip each local step's gradients at
            this norm (or value); ``None`` disables clipping.
        gradient_clip_algorithm: ``"norm"`` (default) or ``"value"``.
        accumulate_grad_batches: As ``lightning.Trainer``: one local optimizer step every
            this many batches.
        max_failed_fraction: A round where more than this share of the selected clients
            fail (raise, or send non-finite updates) stops the run with an error naming
            the failures; in [0, 1], default 0.5.
        output_dir: Where ``results.json`` (rewritten after every round, ``complete: false``
            until the run ends, with the versions, CPU and threads it ran on under
            ``environment``) and checkpoints go (optional). Checked before round 1: a
            writable directory holding no other run's ``results.json`` or checkpoints.
        checkpoint_every: ``"auto"`` (default): with ``output_dir``, keep
            ``checkpoints/last.ckpt`` current, every round while writing it costs under 5%
            of a round's time, else at the interval that keeps it under 5%. An integer:
            also keep ``round_NNNN.ckpt`` every this many rounds (needs ``output_dir``).
            ``None``: no checkpoints.
        overwrite: Replace another run's ``results.json`` and checkpoints in ``output_dir``
            instead of refusing the folder.
        resume: A checkpoint path to resume from; the run then ends with the weights an
            uninterrupted run would have (in the same environment: a resume on another
            CPU, torch version or thread count is logged, and the checkpoint's environment
            kept in ``results.json`` under ``earlier_environments``).
        progress_bar: Show a progress bar over rounds with live metrics.

    Raises:
        ValueError: For any setting outside what is allowed; the message names it.

    Example:
        >>> from fedlightning.algorithms import FedProx
        >>> trainer = FederatedTrainer(algorithm=FedProx(mu=0.01), rounds=50,
        ...                            clients_per_round=10, local_epochs=1, seed=0)
    """

    def __init__(
        self,
        *,
        algorithm: Algorithm | None = None,
        rounds: int = 1,
        clients_per_round: int | None = None,
        fraction: float | None = None,
        local_epochs: int | None = 1,
        local_steps: int | None = None,
        seed: int = 0,
        callbacks: Sequence[Callback] | None = None,
        logger: Logger | Iterable[Logger] | bool | None = None,
        eval_every: int | None = 1,
        eval_local: bool = False,
        eval_metrics: Mapping[str, Metric] | None = None,
        executor: str | Executor = "sequential",
        accelerator: str = "auto",
        devices: int | str | list[int] = 1,
        precision: str = "32-true",
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int = 1,
        max_failed_fraction: float = 0.5,
        output_dir: str | Path | None = None,
        checkpoint_every: int | Literal["auto"] | None = "auto",
        overwrite: bool = False,
        resume: str | Path | None = None,
        progress_bar: bool = True,
    ) -> None:
        _check_int("rounds", rounds, 1)
        if clients_per_round is not None:
            _check_int("clients_per_round", clients_per_round, 1)
        if fraction is not None:
            if clients_per_round is not None:
                raise ValueError(
                    "give clients_per_round or fraction, not both: got "
                    f"clients_per_round={clients_per_round}, fraction={fraction}"
                )
            if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
                raise ValueError(f"fraction must be in (0, 1], got fraction={fraction!r}")
        if local_epochs is None and local_steps is None:
            raise ValueError("give local_epochs or local_steps, got both None")
        if local_epochs is not None:
            _check_int("local_epochs", local_epochs, 1)
        if local_steps is not None:
            _check_int("local_steps", local_steps, 1)
        if eval_every is not None:
            _check_int("eval_every", eval_every, 1)
        if checkpoint_every is not None and checkpoint_every != "auto":
            _check_int("checkpoint_every", checkpoint_every, 1)
            if output_dir is None:
                raise ValueError("checkpoint_every needs output_dir, got output_dir=None")
        if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise ValueError(
                f"output_dir must be a directory, got output_dir={output_dir} (a file)"
            )
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got seed={seed!r}")
        if not (
            isinstance(max_failed_fraction, (int, float))
            and not isinstance(max_failed_fraction, bool)
            and 0.0 <= max_failed_fraction <= 1.0
        ):
            raise ValueError(
                "max_failed_fraction must be a number in [0, 1], got "
                f"max_failed_fraction={max_failed_fraction!r}"
            )
        check_local_settings(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches)
        self.placement: Placement = resolve_placement(accelerator, devices, precision)
        self.local_settings = LocalSettings(
            gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches
        )
        self.max_failed_fraction = float(max_failed_fraction)
        _check_callbacks(callbacks)
        self.algorithm: Algorithm = algorithm if algorithm is not None else FedAvg()
        self.rounds = rounds
        self.clients_per_round = clients_per_round
        self.fraction = fraction
        self.configured_plan = RoundPlan(local_epochs, local_steps, eval_local)
        self.plan = self.configured_plan  # the current round's (Algorithm.round_plan)
        self.seed = seed
        self.callbacks: list[Callback] = list(callbacks or [])
        if not any(isinstance(c, CommCost) for c in self.callbacks):
            self.callbacks.append(CommCost())
        self.loggers: list[Logger] = _resolve_loggers(logger, output_dir)
        self.eval_every = eval_every
        self._eval_metrics: dict[str, Metric] | None = (
            dict(eval_metrics) if eval_metrics is not None else None
        )
        self.executor: Executor = resolve_executor(executor)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.overwrite = bool(overwrite)
        self.resume = Path(resume) if resume is not None else None
        self._schedule = LastCheckpointSchedule()
        self._fingerprint: dict[str, str] = {}
        self._initial_weights = ""
        self._wandb_run_id: str | None = None
        # Environments of the run's earlier parts, where a resume continued it on another.
        self._earlier_environments: list[dict[str, Any]] = []
        self.progress_bar = progress_bar

        self.history: list[dict[str, float]] = []
        self.results: dict[str, Any] = {}
        self.client_states: dict[int, dict[str, Any]] = {}
        self.drops: list[dict[str, Any]] = []
        self.current_round = 0
        self._model: LightningModule | None = None
        self._datamodule: FederatedDataModule | None = None
        self._worker: LightningModule | None = None  # for run_client only
        self._pending: dict[str, float] = {}
        self._wall_offset = 0.0
        self._disabled_loggers: set[int] = set()
        self._warned_state = False

    # ------------------------------------------------------------------ public state
    @property
    def global_model(self) -> LightningModule:
        """The server's model."""
        if self._model is None:
            raise RuntimeError("no model yet: call trainer.fit(model, datamodule) first")
        return self._model

    @property
    def datamodule(self) -> FederatedDataModule:
        """The federated data of the run."""
        if self._datamodule is None:
            raise RuntimeError("no datamodule yet: call trainer.fit(model, datamodule) first")
        return self._datamodule

    @property
    def config(self) -> dict[str, Any]:
        """The settings of the run, as written to ``results.json``."""
        return {
            "algorithm": self.algorithm.config,
            **self._subject_config(),
            "rounds": self.rounds,
            "clients_per_round": self.clients_per_round,
            "fraction": self.fraction,
            "local_epochs": self.configured_plan.epochs,
            "local_steps": self.configured_plan.steps,
            "eval_every": self.eval_every,
            "eval_local": self.configured_plan.eval_local,
            "executor": self.executor.name,
            "accelerator": self.placement.accelerator,
            "precision": self.placement.precision,
            "gradient_clip_val": self.local_settings.gradient_clip_val,
            "gradient_clip_algorithm": self.local_settings.gradient_clip_algorithm,
            "accumulate_grad_batches": self.local_settings.accumulate_grad_batches,
            "max_failed_fraction": self.max_failed_fraction,
            "seed": self.seed,
        }

    def _subject_config(self) -> dict[str, Any]:
        """The model's class and hyperparameters and the data's settings, once fit has them."""
        out: dict[str, Any] = {}
        if self._model is not None:
            cls = type(self._model)
            out["model"] = {
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "hparams": render(dict(getattr(self._model, "hparams", {}))),
            }
        if self._datamodule is not None:
            data = self._datamodule
            out["data"] = {
                "class": f"{type(data).__module__}.{type(data).__qualname__}",
                **render(dict(getattr(data, "hparams", {}))),
            }
        return out

    def num_selected(self, num_clients: int) -> int:
        """How many of ``num_clients`` clients take part in a round."""
        if self.clients_per_round is not None:
            if self.clients_per_round > num_clients:
                raise ValueError(
                    f"clients_per_round must be <= the number of clients ({num_clients}), "
                    f"got clients_per_round={self.clients_per_round}"
                )
            return self.clients_per_round
        if self.fraction is not None:
            return max(1, min(num_clients, round(self.fraction * num_clients)))
        return num_clients

    def seed_for(self, *keys: int) -> int:
        """A 63-bit seed derived from the trainer's seed and ``keys``."""
        return derive_seed(self.seed, *keys)

    def rng(self, *keys: int) -> np.random.Generator:
        """A NumPy generator derived from the trainer's seed and ``keys``."""
        return derive_rng(self.seed, *keys)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Record metrics for the current round; they reach every logger at round end."""
        for name, value in metrics.items():
            self._pending[name] = float(value)

    # ------------------------------------------------------------------ fit
    def fit(self, model: LightningModule, datamodule: FederatedDataModule) -> None:
        """Train ``model`` federatedly on ``datamodule``.

        Args:
            model: Any LightningModule with ``training_step`` and ``configure_optimizers``.
            datamodule: The federated data.

        Raises:
            ValueError: If the selection does not fit the number of clients.
        """
        start = time.perf_counter()
        _check_fit_arguments(model, datamodule)
        check_automatic_optimization(model)
        if self.output_dir is not None:
            prepare_output_dir(self.output_dir, resume=self.resume, overwrite=self.overwrite)
        datamodule.setup()
        self.placement.place_module(model)  # in place: the same module object
        self._model = model
        self._datamodule = datamodule
        clients = list(datamodule.client_ids)
        self.num_selected(len(clients))  # validates clients_per_round
        self._initial_weights = weights_hash(model)
        self._fingerprint = run_fingerprint(
            seed=self.seed,
            num_clients=len(clients),
            algorithm=repr(self.algorithm),
            model=model,
            data=getattr(datamodule, "hparams", {}),
        )
        outputs = _class_outputs(model, datamodule, self.placement)
        _check_labels_fit(datamodule, outputs)
        self.algorithm.setup(
            ServerContext(self, resuming=self.resume is not None), model, datamodule
        )
        if self._eval_metrics is None:
            self._eval_metrics = _default_metrics(datamodule, outputs)
        first_round = 1
        if self.resume is not None:
            first_round = self._load_checkpoint(self.resume) + 1
        elif os.environ.get("PL_GLOBAL_SEED") is None:
            log.warning(
                "FederatedTrainer(seed=%d) seeds client selection and local runs, but the "
                "model's initial weights came from a generator that lightning.seed_everything "
                "did not seed: call lightning.seed_everything(%d) before building the model to "
                "start every run from the same weights (their hash is in results.json)",
                self.seed,
                self.seed,
            )
        self.plan = self.algorithm.round_plan(first_round, self.configured_plan)
        self.executor.setup(model, self.client_runtime(first_round, self.plan))
        for callback in self.callbacks:
            callback.on_fit_start(self)
        self._log_hyperparams()
        bar = tqdm(
            total=self.rounds,
            initial=first_round - 1,
            desc="rounds",
            disable=not self.progress_bar,
            dynamic_ncols=True,
        )
        try:
            for rnd in range(first_round, self.rounds + 1):
                self._run_round(rnd, clients)
                bar.update(1)
                bar.set_postfix(_postfix(self.history[-1]), refresh=False)
                elapsed = self._wall_offset + time.perf_counter() - start
                if self.output_dir is not None:
                    self._keep_progress(
                        rnd, elapsed, (elapsed - self._wall_offset) / (rnd - first_round + 1)
                    )
        finally:
            bar.close()
            self.executor.teardown()
        wall = self._wall_offset + time.perf_counter() - start
        for callback in self.callbacks:
            callback.on_fit_end(self)
        self._finish(wall)

    def _run_round(self, rnd: int, clients: list[int]) -> None:
        self.current_round = rnd
        self._pending = {}
        for callback in self.callbacks:
            callback.on_round_start(self, rnd)
        self.plan = self.algorithm.round_plan(rnd, self.configured_plan)
        selected = self.algorithm.select_clients(rnd, clients)
        tasks: list[ClientTask] = []
        for client in selected:
            message = self.algorithm.server_message(rnd, client)
            self.dispatch(rnd, client, "down", message)
            tasks.append(self.client_task(rnd, client, message))
        for task in tasks:
            for callback in self.callbacks:
                callback.on_client_fit_start(self, rnd, task.client)
        outcomes = self.executor.run(self.client_runtime(rnd, self.plan), tasks)
        replies: list[Reply] = []
        failures: list[tuple[int, str]] = []
        for outcome in outcomes:
            if isinstance(outcome, ClientFailure):
                failures.append((outcome.client, outcome.error))
                continue
            reply = self._receive(rnd, outcome)
            if not _is_finite(reply.message):
                failures.append((reply.client, "non-finite update"))
                continue
            replies.append(reply)
        for client, reason in failures:
            self._drop(rnd, client, reason)
        self._check_failures(rnd, len(selected), failures)
        self.algorithm.aggregate(rnd, replies)
        self.algorithm.on_round_end(rnd)
        self.log_metrics(
            {
                "round": rnd,
                "clients": len(selected),
                "clients_dropped": len(selected) - len(replies),
            }
        )
        self.log_metrics(_reply_means(replies))
        if self.is_eval_round(rnd):
            metrics = self.evaluate(self.global_model, self.datamodule.test_loader())
            self.log_metrics(
                {f"test_{k}" if not k.startswith("test_") else k: v for k, v in metrics.items()}
            )
            if "acc" in metrics:
                self.log_metrics({"acc_global": metrics["acc"]})
        for callback in self.callbacks:
            callback.on_round_end(self, rnd)
        self._flush(rnd)

    def _receive(self, rnd: int, outcome: Trained) -> Reply:
        """Take a trained client's outcome: store its state, fire callbacks, count bytes."""
        reply = outcome.reply
        if not self.placement.is_default:
            reply.message = reply.message.to(self.placement.device)
        if self.algorithm.stateful_clients and _is_finite(reply.message):
            # a client dropped for a non-finite update keeps its previous state
            self.client_states[reply.client] = outcome.state
        elif outcome.state and not self.algorithm.stateful_clients and not self._warned_state:
            self._warned_state = True
            log.warning(
                "%s's client hooks wrote ctx.state (keys %s), but its stateful_clients is "
                "False, so the state is discarded after each round; return True from "
                "stateful_clients to keep it (and checkpoint it)",
                type(self.algorithm).__name__,
                sorted(outcome.state)[:5],
            )
        for callback in self.callbacks:
            callback.on_client_fit_end(self, rnd, reply)
        self.dispatch(rnd, reply.client, "up", reply.message)
        return reply

    def _check_failures(self, rnd: int, selected: int, failures: list[tuple[int, str]]) -> None:
        if selected and len(failures) / selected > self.max_failed_fraction:
            listed = "; ".join(f"client {c}: {r}" for c, r in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise RuntimeError(
                f"round {rnd}: {len(failures)} of {selected} clients failed, more than "
                f"max_failed_fraction={self.max_failed_fraction}; the run stops. Failures: "
                f"{listed}{more}"
            )

    def client_runtime(self, rnd: int, plan: RoundPlan | None = None) -> ClientRuntime:
        """The client runtime of round ``rnd``: what every executor trains clients with.

        Args:
            rnd: Round number.
            plan: The round's plan, when already asked of ``Algorithm.round_plan``.

        Returns:
            The runtime, its plan with local evaluation on only where the round evaluates.
        """
        if plan is None:
            plan = self.algorithm.round_plan(rnd, self.configured_plan)
        plan = replace(plan, eval_local=plan.eval_local and self.is_eval_round(rnd))
        return ClientRuntime(
            self.algorithm.client_half(),
            self.datamodule,
            plan,
            placement=self.placement,
            metrics=self._eval_metrics,
            settings=self.local_settings,
        )

    def client_task(self, round: int, client: int, message: Message) -> ClientTask:
        """What an executor receives for ``client`` in ``round``: message, state and seed."""
        state = self.client_states.get(client, {}) if self.algorithm.stateful_clients else {}
        return ClientTask(
            client=client,
            round=round,
            message=message,
            num_samples=self.datamodule.num_samples(client),
            seed=self.seed_for(round, client, STREAM_CLIENT),
            state=state,
        )

    def is_eval_round(self, rnd: int) -> bool:
        """Whether round ``rnd`` evaluates (every ``eval_every`` rounds and the last one)."""
        if self.eval_every is None:
            return False
        return rnd % self.eval_every == 0 or rnd == self.rounds

    def dispatch(self, round: int, client: int, direction: Direction, message: Message) -> None:
        """Hand a message that crosses the wire to every callback (``on_message``).

        Algorithms with exchanges beyond the round's messages (e.g. Phase I of seed 000)
        call this so that they are counted too.
        """
        for callback in self.callbacks:
            callback.on_message(self, round, client, direction, message)

    def run_client(self, round: int, client: int, message: Message) -> Reply:
        """Train one client in this process on what it received, and return its reply.

        The same :meth:`ClientRuntime.run` every executor uses; no callback fires and no
        state is stored (the round loop does both).

        Args:
            round: Round number.
            client: Client id.
            message: What the server sent it.

        Returns:
            The client's reply.

        Raises:
            RuntimeError: If the client fails; the message says why.
        """
        if self._worker is None:
            self._worker = copy.deepcopy(self.global_model)
        outcome = self.client_runtime(round).run(
            self.client_task(round, client, message), self._worker
        )
        if isinstance(outcome, ClientFailure):
            raise RuntimeError(f"client {client} failed in round {round}: {outcome.error}")
        return outcome.reply

    def evaluate(self, module: LightningModule, loader: Iterable[Any]) -> dict[str, float]:
        """Evaluate ``module`` on ``loader`` with its ``test_step`` and the run's metrics."""
        return evaluate(module, loader, self._eval_metrics, placement=self.placement)

    def test(
        self,
        model: LightningModule | None = None,
        datamodule: FederatedDataModule | None = None,
    ) -> dict[str, float]:
        """Evaluate the global model on the test set, and on each client's test set if any.

        Args:
            model: The model to test (default: the trained global model).
            datamodule: The data (default: the one of ``fit``).

        Returns:
            Global metrics (``acc_global``, ``test_*``), the means over clients of the global
            model's metrics on per-client test sets (``client_mean_*``) where the datamodule
            has them, and the last round's ``acc_local`` when it was measured.
        """
        module = model if model is not None else self.global_model
        data = datamodule if datamodule is not None else self.datamodule
        data.setup()
        if self._eval_metrics is None:
            self._eval_metrics = _default_metrics(
                data, _class_outputs(module, data, self.placement)
            )
        metrics = self.evaluate(module, data.test_loader())
        out = {f"test_{k}" if not k.startswith("test_") else k: v for k, v in metrics.items()}
        if "acc" in metrics:
            out["acc_global"] = metrics["acc"]
        per_client: list[dict[str, float]] = []
        for client in data.client_ids:
            loader = data.client_test_loader(client)
            if loader is not None:
                per_client.append(self.evaluate(module, loader))
        for key in per_client[0] if per_client else []:
            out[f"client_mean_{key}"] = float(np.mean([m[key] for m in per_client]))
        last_local = [h["acc_local"] for h in self.history if "acc_local" in h]
        if last_local:
            out["acc_local"] = last_local[-1]
        self.results["test"] = out
        if self.output_dir is not None and "config" in self.results:  # a fit's results only
            self._write_results()
        return out

    # ------------------------------------------------------------------ checkpoints
    def _keep_progress(self, rnd: int, elapsed: float, round_s: float) -> None:
        """After round ``rnd``: checkpoints as configured, and ``results.json`` so far."""
        every = self.checkpoint_every
        folder = self._checkpoint_dir()
        if isinstance(every, int) and (rnd % every == 0 or rnd == self.rounds):
            ckpt = self.save_checkpoint(folder / f"round_{rnd:04d}.ckpt", wall_s=elapsed)
            copy_checkpoint(ckpt, folder / LAST_CHECKPOINT)
        elif every == "auto" and (self._schedule.due() or rnd == self.rounds):
            begin = time.perf_counter()
            self.save_checkpoint(folder / LAST_CHECKPOINT, wall_s=elapsed)
            self._schedule.written(time.perf_counter() - begin, round_s)
        self.results = self._results(elapsed, complete=False)
        self._write_results()

    def save_checkpoint(self, path: str | Path, wall_s: float = 0.0) -> Path:
        """Save everything needed to resume after the current round, atomically.

        Args:
            path: File to write.
            wall_s: Wall time so far, carried into the resumed run's ``wall_s``.

        Returns:
            The path written.
        """
        state = {
            "round": self.current_round,
            "rounds": self.rounds,
            "model": self.global_model.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "server_optimizer": self.algorithm.server_optimizer_state(),
            "client_states": self.client_states,
            "callbacks": [(type(c).__name__, c.state_dict()) for c in self.callbacks],
            "history": self.history,
            "drops": self.drops,
            "wall_s": wall_s,
            "seed": self.seed,
            "fingerprint": self._fingerprint,
            "initial_weights_sha256": self._initial_weights,
            "wandb_run_id": self._wandb_id(),
            "version": __version__,
            # write_checkpoint records this process's environment beside these
            "earlier_environments": self._earlier_environments,
        }
        return write_checkpoint(Path(path), state)

    def _load_checkpoint(self, path: Path) -> int:
        if not path.is_file():
            raise ValueError(f"resume must be an existing checkpoint file, got resume={path}")
        state = load_checkpoint(path)
        if state.get("seed") != self.seed:
            raise ValueError(
                f"resume checkpoint was made with seed={state.get('seed')}, but this trainer has "
                f"seed={self.seed}; use the same seed to resume"
            )
        differences = fingerprint_differences(state.get("fingerprint", {}), self._fingerprint)
        if differences:
            raise ValueError(
                f"resume={path} belongs to another run; it differs in: " + "; ".join(differences)
            )
        if int(state["round"]) > self.rounds:
            raise ValueError(
                f"resume={path} is at round {int(state['round'])}, after this run's last: "
                f"rounds={self.rounds}; pass rounds >= {int(state['round'])}"
            )
        self.global_model.load_state_dict(state["model"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.algorithm.load_server_optimizer_state(state.get("server_optimizer"))
        self.client_states = state["client_states"]
        saved = state["callbacks"]
        for callback, (name, cb_state) in zip(self.callbacks, saved, strict=False):
            if type(callback).__name__ == name:
                callback.load_state_dict(cb_state)
        self.history = list(state["history"])
        self.drops = list(state["drops"])
        self._wall_offset = float(state["wall_s"])
        self.current_round = int(state["round"])
        self._initial_weights = str(state.get("initial_weights_sha256", self._initial_weights))
        self._resume_wandb(state.get("wandb_run_id"))
        self._earlier_environments = list(state.get("earlier_environments", []))
        # load_checkpoint has warned if it was written elsewhere; results.json keeps both
        saved = state.get("environment")
        if saved is not None and environment_differences(saved, environment()):
            self._earlier_environments.append(saved)
        return self.current_round

    @property
    def wandb_run_id(self) -> str | None:
        """The id of the run's W&B run (kept in checkpoints; a resumed run continues it)."""
        return self._wandb_id()

    def _wandb_id(self) -> str | None:
        """The W&B run id of the run's W&B logger, if it has one and it has started."""
        for lg in self.loggers:
            experiment = getattr(lg, "_experiment", None)
            run_id = getattr(experiment, "id", None)
            if run_id:
                return str(run_id)
        return self._wandb_run_id

    def _resume_wandb(self, run_id: Any) -> None:
        """Point a not yet started W&B logger at the checkpoint's run, to continue it."""
        if not run_id:
            return
        self._wandb_run_id = str(run_id)
        for lg in self.loggers:
            init = getattr(lg, "_wandb_init", None)
            if isinstance(init, dict) and getattr(lg, "_experiment", None) is None:
                init.update(id=str(run_id), resume="allow")
                lg._id = str(run_id)  # type: ignore[attr-defined]

    def _checkpoint_dir(self) -> Path:
        assert self.output_dir is not None
        return checkpoint_dir(self.output_dir)

    # ------------------------------------------------------------------ logging & results
    def _drop(self, rnd: int, client: int, reason: str) -> None:
        log.warning("round %d: client %d dropped from the aggregate: %s", rnd, client, reason)
        self.drops.append({"round": rnd, "client": client, "reason": reason})

    def _flush(self, rnd: int) -> None:
        entry = dict(self._pending)
        self.history.append(entry)
        for i, lg in enumerate(self.loggers):
            if i in self._disabled_loggers:
                continue
            try:
                lg.log_metrics(entry, step=rnd)
            except Exception as exc:  # a logger never takes the run down
                log.warning("logger %s failed (%r); it is disabled", type(lg).__name__, exc)
                self._disabled_loggers.add(i)

    def _log_hyperparams(self) -> None:
        params = dict(self.config)
        for i, lg in enumerate(self.loggers):
            try:
                lg.log_hyperparams(params)
            except Exception as exc:
                log.warning("logger %s failed (%r); it is disabled", type(lg).__name__, exc)
                self._disabled_loggers.add(i)

    def _results(self, wall: float, *, complete: bool) -> dict[str, Any]:
        final: dict[str, float] = {}
        for key in ("acc_global", "acc_local", "test_loss"):
            values = [h[key] for h in self.history if key in h]
            if values:
                final[key] = values[-1]
        return {
            "config": self.config,
            "seed": self.seed,
            "version": __version__,
            "environment": environment(),
            "earlier_environments": self._earlier_environments,
            "complete": complete,
            "rounds_done": self.current_round,
            "initial_weights_sha256": self._initial_weights,
            "fingerprint": self._fingerprint,
            "wall_s": wall,
            "history": self.history,
            "final": final,
            "drops": self.drops,
        }

    @property
    def checkpoint_stats(self) -> dict[str, float]:
        """What the default ``last.ckpt`` schedule measured (writes, seconds, share, interval)."""
        return self._schedule.summary()

    def _finish(self, wall: float) -> None:
        if self._schedule.writes:
            stats = self._schedule.summary()
            log.info(
                "last.ckpt written %d times, %.4f s each: %.2f%% of a %.3f s round "
                "(every %d rounds)",
                int(stats["last_ckpt_writes"]),
                stats["last_ckpt_write_s"],
                100 * stats["write_share"],
                stats["round_s"],
                int(stats["interval"]),
            )
        self.results = self._results(wall, complete=True)
        for callback in self.callbacks:
            callback.on_results(self, self.results)
        for i, lg in enumerate(self.loggers):
            if i in self._disabled_loggers:
                continue
            try:
                lg.finalize("success")
                experiment = getattr(lg, "experiment", None)
                run_dir = getattr(experiment, "dir", None) if experiment is not None else None
                if run_dir:
                    self.results.setdefault("loggers", {})[type(lg).__name__] = str(run_dir)
            except Exception as exc:
                log.warning("logger %s failed to finalize (%r)", type(lg).__name__, exc)
        if self.output_dir is not None:
            self._write_results()

    def _write_results(self) -> Path:
        assert self.output_dir is not None
        return write_json(self.output_dir / "results.json", self.results, default=_json_default)


# ---------------------------------------------------------------------- helpers
def _check_callbacks(callbacks: Sequence[Any] | None) -> None:
    for callback in callbacks or []:
        if isinstance(callback, LightningCallback):
            raise ValueError(
                f"callbacks must be fedlightning.callbacks.Callback objects, got the Lightning "
                f"callback {type(callback).__name__}: federated hooks (on_round_end, "
                "on_message...) are on fedlightning.callbacks.Callback; subclass it instead"
            )
        if not isinstance(callback, Callback):
            raise ValueError(
                "callbacks must be fedlightning.callbacks.Callback objects, got "
                f"{type(callback).__name__}"
            )


def _check_fit_arguments(model: Any, datamodule: Any) -> None:
    if not isinstance(model, LightningModule):
        raise ValueError(f"model must be a LightningModule, got {type(model).__name__}")
    if isinstance(datamodule, LightningDataModule):
        raise ValueError(
            f"datamodule must be a fedlightning FederatedDataModule, got the "
            f"LightningDataModule {type(datamodule).__name__}; wrap it with "
            "FederatedDataModule.from_datamodule(dm, partition=...) to split its train set "
            "over clients"
        )
    if not isinstance(datamodule, FederatedDataModule):
        raise ValueError(
            f"datamodule must be a FederatedDataModule, got {type(datamodule).__name__}"
        )


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def _resolve_loggers(
    logger: Logger | Iterable[Logger] | bool | None, output_dir: Any
) -> list[Logger]:
    if logger is None or logger is False:
        return []
    if logger is True:
        from fedlightning.loggers import default_logger

        return [default_logger(output_dir)]
    loggers = [logger] if isinstance(logger, Logger) else list(logger)
    for lg in loggers:
        if not isinstance(lg, Logger):
            raise ValueError(f"logger must be a Lightning Logger, got {type(lg).__name__}")
    # W&B first, as it is the run's primary record.
    return sorted(loggers, key=lambda lg: type(lg).__name__ != "WandbLogger")


def _class_outputs(model: LightningModule, datamodule: Any, placement: Placement) -> int | None:
    """How many class scores the model gives: ``k`` when it maps a test batch to ``(n, k)``."""
    try:
        x, _ = next(iter(datamodule.test_loader()))
        was_training = model.training
        model.eval()
        plugin = placement.plugin()
        with torch.no_grad(), plugin.forward_context():
            out = model(placement.place_batch(x[:2], plugin))
        model.train(was_training)
    except Exception:
        return None
    if isinstance(out, torch.Tensor) and out.ndim == 2:
        return int(out.shape[1])
    return None


def _check_labels_fit(datamodule: Any, outputs: int | None) -> None:
    """Refuse labels the model cannot score, where the data did not declare its classes.

    A declared ``num_classes`` (or a known dataset's) is checked by the datamodule itself;
    labels inferred from tensors are checked against the model's output size here, instead
    of evaluating without accuracy.
    """
    declared = getattr(datamodule, "hparams", {}).get("num_classes")
    num_classes = getattr(datamodule, "num_classes", None)
    if declared is not None or not num_classes or not hasattr(datamodule, "check_labels"):
        return
    if outputs is not None and num_classes > outputs:
        datamodule.check_labels(outputs)


def _default_metrics(datamodule: Any, outputs: int | None) -> dict[str, Metric]:
    """Accuracy as ``acc`` when the model gives one score per class of the data."""
    num_classes = getattr(datamodule, "num_classes", None)
    if not num_classes or outputs != num_classes:
        return {}
    from torchmetrics.classification import MulticlassAccuracy

    return {"acc": MulticlassAccuracy(num_classes=int(num_classes), average="micro")}


def _is_finite(message: Message) -> bool:
    for parts in message.parts.values():
        for tensor in parts.values():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return False
    for tensor in message.extras.values():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return False
    return all(math.isfinite(v) for v in message.scalars.values())


def _reply_means(replies: list[Reply]) -> dict[str, float]:
    """Round metrics from the replies.

    ``train_loss``: the sample-weighted mean of the clients' local loss (with the algorithm's
    terms); ``acc_local`` / ``acc_client``: plain means over clients; every other metric a
    client logged (``self.log``) as ``client/<name>``, sample-weighted.
    """
    if not replies:
        return {}
    out: dict[str, float] = {}
    keys = sorted({k for r in replies for k in r.metrics})
    for key in keys:
        pairs = [
            (r.metrics[key], float(r.num_samples))
            for r in replies
            if key in r.metrics and math.isfinite(r.metrics[key])
        ]
        if not pairs or key == "steps":
            continue
        values = np.array([v for v, _ in pairs])
        weights = np.array([w for _, w in pairs])
        if key in ("acc_local", "acc_client"):
            out[key] = float(values.mean())
        elif key == "loss":
            out["train_loss"] = float(np.average(values, weights=weights))
        else:
            out[f"client/{key}"] = float(np.average(values, weights=weights))
    return out


def _postfix(entry: Mapping[str, float]) -> dict[str, str]:
    shown = {}
    for key in ("train_loss", "acc_global", "acc_local", "test_loss"):
        if key in entry:
            shown[key] = f"{entry[key]:.4f}"
    if "bytes_total" in entry:
        shown["MB"] = f"{entry['bytes_total'] / 1e6:.1f}"
    return shown


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
