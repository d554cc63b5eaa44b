"""The Ray executor: clients trained by a fixed pool of Ray actors, on one machine or many.

Each actor is a long-lived worker process that receives, once, a copy of the model and of
the federated datamodule, and keeps them: no process and no model is rebuilt per client.
Each round, the server ships one snapshot of the algorithm (its hooks and whatever state they
read, e.g. the global model) to the object store, and each actor receives the messages of the
clients assigned to it, balanced by number of local samples (longest-first onto the least
loaded actor). An actor trains its clients exactly as
:meth:`~fedlightning.trainer.FederatedTrainer.run_client` does: same seeds, same
``configure_client`` -> ``fit_local`` with the algorithm's loss hook -> ``client_message``,
so the global model is the sequential executor's, bit for bit, whenever the actors compute
with the same kernels as the driver (same thread count; see ``torch_threads``).

Callbacks run on the driver, in client order, around the replies as they return; per-client
state (:attr:`Algorithm.stateful_clients`) travels to the actor with the message and back
with the reply. Ray is an optional dependency (``pip install "fedlightning[ray]"``), imported
only when this executor is set up.

References:
    P. Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018.
"""

from __future__ import annotations

import copy
import io
import logging
import pickle
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, ClientContext, Reply
from fedlightning.client import fit_local
from fedlightning.executors.base import ClientFailure, Executor

if TYPE_CHECKING:
    from fedlightning.messages import Message
    from fedlightning.trainer import FederatedTrainer, RoundPlan

__all__ = ["RayExecutor", "assign_clients"]

log = logging.getLogger(__name__)

_STREAM_CLIENT = 1  # the trainer's stream for a client's local run: seed_for(round, client, 1)


def assign_clients(loads: Mapping[int, float], num_workers: int) -> list[list[int]]:
    """Balance clients over workers: longest first, each onto the least loaded worker.

    Args:
        loads: Client id -> its expected cost (e.g. number of local samples).
        num_workers: Number of workers, >= 1.

    Returns:
        One list of client ids per worker, each in the order of ``loads``.

    Raises:
        ValueError: If ``num_workers`` < 1.

    Example:
        >>> assign_clients({0: 5, 1: 3, 2: 3, 3: 1}, 2)
        [[0, 3], [1, 2]]
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got num_workers={num_workers!r}")
    order = {c: i for i, c in enumerate(loads)}
    totals = [0.0] * num_workers
    bins: list[list[int]] = [[] for _ in range(num_workers)]
    for client in sorted(loads, key=lambda c: (-float(loads[c]), order[c])):
        w = int(np.argmin(totals))
        bins[w].append(client)
        totals[w] += float(loads[client])
    return [sorted(b, key=order.__getitem__) for b in bins]


class _WorkerTrainer:
    """What client-side hooks may use of the trainer, inside a Ray actor.

    The public, client-relevant surface of :class:`~fedlightning.trainer.FederatedTrainer`:
    seeds, the plan, the datamodule, the global model (as of the round's snapshot) and
    evaluation. Server-side calls (``log_metrics``, ``dispatch``) are not available on a
    worker.
    """

    def __init__(
        self,
        *,
        seed: int,
        plan: RoundPlan,
        rounds: int,
        eval_every: int | None,
        datamodule: Any,
    ) -> None:
        self.seed = seed
        self.plan = plan
        self.rounds = rounds
        self.eval_every = eval_every
        self.datamodule = datamodule
        self.current_round = 0
        self.algorithm: Algorithm | None = None

    @property
    def global_model(self) -> LightningModule:
        """The global model of the round's algorithm snapshot."""
        assert self.algorithm is not None
        return self.algorithm.global_model

    def seed_for(self, *keys: int) -> int:
        """As :meth:`FederatedTrainer.seed_for`."""
        from fedlightning.trainer import derive_seed

        return derive_seed(self.seed, *keys)

    def rng(self, *keys: int) -> np.random.Generator:
        """As :meth:`FederatedTrainer.rng`."""
        from fedlightning.trainer import derive_rng

        return derive_rng(self.seed, *keys)


class _AlgorithmUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, objects: Mapping[str, Any]) -> None:
        super().__init__(file)
        self._objects = objects

    def persistent_load(self, pid: Any) -> Any:
        return self._objects[pid]


def _dump_algorithm(trainer: FederatedTrainer) -> bytes:
    """Pickle the algorithm (by value where needed, as Ray does) minus trainer and data.

    References to the trainer and its datamodule become persistent ids that each worker
    resolves to its own stand-ins, so a round's snapshot carries the algorithm's state (the
    global model included) but never the dataset, the loggers or the callbacks.
    """
    from ray import cloudpickle

    refs = {id(trainer): "trainer", id(trainer.datamodule): "datamodule"}

    class _Pickler(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> str | None:
            return refs.get(id(obj))

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(trainer.algorithm)
    return buffer.getvalue()


def _load_algorithm(data: bytes, trainer: _WorkerTrainer) -> Algorithm:
    objects = {"trainer": trainer, "datamodule": trainer.datamodule}
    algorithm = _AlgorithmUnpickler(io.BytesIO(data), objects).load()
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"expected an Algorithm snapshot, got {type(algorithm).__name__}")
    return algorithm


class ClientWorker:
    """One pool worker: keeps a model and the datamodule, trains the clients it is sent.

    Used as a Ray actor by :class:`RayExecutor`; plain Python otherwise (which is how its
    logic is unit-tested).

    Args:
        module: A copy of the global model, reused for every client.
        datamodule: The federated datamodule.
        seed: The trainer's seed.
        plan: The trainer's local-work plan.
        rounds: The trainer's number of rounds.
        eval_every: The trainer's evaluation period.
        torch_threads: Threads for torch in this worker (``None``: leave as is).
    """

    def __init__(
        self,
        module: LightningModule,
        datamodule: Any,
        *,
        seed: int,
        plan: RoundPlan,
        rounds: int,
        eval_every: int | None,
        torch_threads: int | None = 1,
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        datamodule.setup()
        self.module = module
        self.trainer = _WorkerTrainer(
            seed=seed, plan=plan, rounds=rounds, eval_every=eval_every, datamodule=datamodule
        )
        self._snapshot: tuple[int, Algorithm] | None = None

    def run(
        self,
        round: int,
        algorithm: bytes,
        jobs: Sequence[tuple[int, Message, dict[str, Any]]],
        return_weights: bool = False,
        plan: RoundPlan | None = None,
    ) -> list[tuple[str, Any]]:
        """Train the clients of ``jobs`` one after another.

        Args:
            round: Round number.
            algorithm: The round's algorithm snapshot.
            jobs: ``(client, message, client_state)`` per client.
            return_weights: Also return each trained module's state (for local evaluation
                on the driver).
            plan: The round's local-work plan (``Algorithm.round_plan``); ``None`` keeps
                the last one.

        Returns:
            Per client, ``("ok", (reply, state, weights_or_None, seconds))`` or
            ``("failed", error)``.
        """
        if self._snapshot is None or self._snapshot[0] != round:
            snapshot = _load_algorithm(algorithm, self.trainer)
            self._snapshot = (round, snapshot)
            self.trainer.algorithm = snapshot
        self.trainer.current_round = round
        if plan is not None:
            self.trainer.plan = plan
        alg = self._snapshot[1]
        out: list[tuple[str, Any]] = []
        for client, message, state in jobs:
            start = time.perf_counter()
            try:
                reply, new_state, module = _train_client(
                    self.trainer, alg, self.module, round, client, message, state
                )
                weights = (
                    {k: v.detach().clone() for k, v in module.state_dict().items()}
                    if return_weights
                    else None
                )
                out.append(("ok", (reply, new_state, weights, time.perf_counter() - start)))
            except Exception as exc:  # a failing client never takes the run down
                out.append(("failed", f"{type(exc).__name__}: {exc}"))
        return out

    def ping(self) -> int:
        """Return the number of torch threads (readiness check)."""
        return torch.get_num_threads()


def _train_client(
    trainer: _WorkerTrainer,
    algorithm: Algorithm,
    worker: LightningModule,
    round: int,
    client: int,
    message: Message,
    state: dict[str, Any],
) -> tuple[Reply, dict[str, Any], LightningModule]:
    """:meth:`FederatedTrainer.run_client`'s client-side steps, in the same order."""
    seed = trainer.seed_for(round, client, _STREAM_CLIENT)
    ctx = ClientContext(
        client=client,
        round=round,
        message=message,
        received=message.decode(),
        num_samples=trainer.datamodule.num_samples(client),
        state=state,
        seed=seed,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = algorithm.configure_client(ctx, worker)
        loader = trainer.datamodule.train_loader(client, seed=seed)
        metrics = fit_local(
            module,
            loader,
            epochs=trainer.plan.epochs,
            steps=trainer.plan.steps,
            loss_hook=lambda batch, loss: algorithm.training_loss(ctx, module, batch, loss),
        )
        reply_message = algorithm.client_message(ctx, module)
    return Reply(client, reply_message, ctx.num_samples, metrics), ctx.state, module


class RayExecutor(Executor):
    """Trains the clients of a round on a pool of Ray actors.

    Args:
        num_workers: Actors in the pool (default: the CPUs Ray reports, divided by
            ``num_cpus_per_worker``).
        address: A Ray cluster address (``"auto"``, ``"ray://head:10001"``...); ``None``
            starts a local Ray instance unless one is already running.
        num_cpus_per_worker: CPUs Ray reserves for each actor.
        torch_threads: Torch threads inside each actor (default: ``num_cpus_per_worker``
            rounded down, at least 1).
        init_kwargs: Extra ``ray.init`` arguments when this executor starts Ray (e.g.
            ``num_cpus``, ``runtime_env``).

    Attributes:
        client_seconds: Per round, the seconds each client took on its actor (what the
            rounds-per-hour projection in ``docs/executors.md`` is built from).

    Raises:
        ValueError: For a setting out of range.

    Example:
        >>> executor = RayExecutor(num_workers=8, address="auto")  # doctest: +SKIP

    References:
        Moritz et al., OSDI 2018 (Ray).
    """

    name = "ray"

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        address: str | None = None,
        num_cpus_per_worker: float = 1.0,
        torch_threads: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if num_workers is not None and (
            not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1
        ):
            raise ValueError(
                f"num_workers must be an integer >= 1, got num_workers={num_workers!r}"
            )
        if not num_cpus_per_worker > 0:
            raise ValueError(
                f"num_cpus_per_worker must be > 0, got num_cpus_per_worker={num_cpus_per_worker}"
            )
        if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
            raise ValueError(
                f"torch_threads must be an integer >= 1, got torch_threads={torch_threads!r}"
            )
        self.num_workers = num_workers
        self.address = address
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.torch_threads = torch_threads or max(1, int(num_cpus_per_worker))
        self.init_kwargs = dict(init_kwargs or {})
        self.client_seconds: list[dict[int, float]] = []
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []
        self._evaluator: LightningModule | None = None

    @override
    def setup(self, trainer: FederatedTrainer) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('executor="ray" needs Ray: pip install "fedlightning[ray]"') from exc
        self._ray = ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            kwargs.update(self.init_kwargs)
            ray.init(address=self.address, **kwargs)
            self._started_ray = True
        workers = self.num_workers
        if workers is None:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            workers = max(1, int(cpus // self.num_cpus_per_worker))
        remote = ray.remote(num_cpus=self.num_cpus_per_worker)(ClientWorker)
        module_ref = ray.put(copy.deepcopy(trainer.global_model))
        data_ref = ray.put(trainer.datamodule)
        self._actors = [
            remote.remote(
                module_ref,
                data_ref,
                seed=trainer.seed,
                plan=trainer.plan,
                rounds=trainer.rounds,
                eval_every=trainer.eval_every,
                torch_threads=self.torch_threads,
            )
            for _ in range(workers)
        ]
        ray.get([a.ping.remote() for a in self._actors])
        self._evaluator = copy.deepcopy(trainer.global_model)
        self.client_seconds = []
        log.info("ray executor: %d workers ready", len(self._actors))

    @property
    def workers(self) -> int:
        """Number of actors in the pool."""
        return len(self._actors)

    @override
    def run(
        self, trainer: FederatedTrainer, round: int, messages: dict[int, Message]
    ) -> list[Reply | ClientFailure]:
        if not self._actors:
            self.setup(trainer)
        ray = self._ray
        algorithm = trainer.algorithm
        stateful = algorithm.stateful_clients
        eval_local = trainer.plan.eval_local and trainer.is_eval_round(round)
        snapshot = ray.put(_dump_algorithm(trainer))
        loads = {c: float(trainer.datamodule.num_samples(c)) for c in messages}
        bins = assign_clients(loads, len(self._actors))
        futures = []
        for actor, clients in zip(self._actors, bins, strict=True):
            if not clients:
                continue
            jobs = [
                (c, messages[c], trainer.client_states.get(c, {}) if stateful else {})
                for c in clients
            ]
            futures.append(
                (clients, actor.run.remote(round, snapshot, jobs, eval_local, trainer.plan))
            )
        results: dict[int, tuple[str, Any]] = {}
        for clients, future in futures:
            try:
                outcomes = ray.get(future)
            except Exception as exc:  # an actor died: its clients are dropped this round
                log.warning("round %d: a ray worker failed (%r)", round, exc)
                outcomes = [("failed", f"{type(exc).__name__}: {exc}")] * len(clients)
            results.update(zip(clients, outcomes, strict=True))
        out: list[Reply | ClientFailure] = []
        seconds: dict[int, float] = {}
        for client in messages:
            for callback in trainer.callbacks:
                callback.on_client_fit_start(trainer, round, client)
            status, value = results[client]
            if status != "ok":
                log.warning("round %d: client %d raised %s; dropped", round, client, value)
                out.append(ClientFailure(client, str(value)))
                continue
            reply, state, weights, secs = value
            seconds[client] = float(secs)
            if eval_local and weights is not None:
                reply.metrics.update(self._local_eval(trainer, client, weights))
            if stateful:
                trainer.client_states[client] = state
            for callback in trainer.callbacks:
                callback.on_client_fit_end(trainer, round, reply)
            out.append(reply)
        self.client_seconds.append(seconds)
        return out

    def _local_eval(
        self, trainer: FederatedTrainer, client: int, weights: dict[str, Tensor]
    ) -> dict[str, float]:
        assert self._evaluator is not None
        self._evaluator.load_state_dict(weights)
        metrics: dict[str, float] = {}
        local = trainer.evaluate(self._evaluator, trainer.datamodule.test_loader())
        if "acc" in local:
            metrics["acc_local"] = local["acc"]
        client_loader = trainer.datamodule.client_test_loader(client)
        if client_loader is not None:
            own = trainer.evaluate(self._evaluator, client_loader)
            if "acc" in own:
                metrics["acc_client"] = own["acc"]
        return metrics

    @override
    def teardown(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception as exc:  # pragma: no cover - best effort
                log.debug("ray executor: could not kill an actor (%r)", exc)
        self._actors = []
        self._evaluator = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
