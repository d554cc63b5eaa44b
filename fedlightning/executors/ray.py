"""The Ray executor: clients trained by a fixed pool of Ray actors, on one machine or many.

Each actor is a long-lived worker process that receives, once, a copy of the model and of
the federated datamodule, and keeps them: no process and no model is rebuilt per client.
Each round, the server ships one snapshot of the round's
:class:`~fedlightning.runtime.ClientRuntime` (the algorithm's client hooks and what they read,
the plan, the placement, the evaluation metrics; never the dataset, the trainer, the loggers
or the callbacks) to the object store, and each actor receives the tasks of the clients
assigned to it, balanced by number of local samples (longest-first onto the least loaded
actor). An actor trains its clients with :meth:`ClientRuntime.run`, the very code the
sequential executor runs, so the global model is the sequential executor's, bit for bit,
whenever the actors compute with the same kernels as the driver (same thread count; see
``torch_threads``).

Callbacks run on the driver, in the trainer; per-client state travels to the actor with the
task and back with the outcome. A worker that dies is replaced at once and its clients are
trained again on the replacement within the round; they are dropped from that round only if
the replacement fails too, and the pool is whole again for the next round. Workers may
share GPUs (``num_gpus_per_worker=0.25``: four actors per GPU). Ray is an optional
dependency (``pip install "fedlightning[ray]"``), imported only when this executor is set up.

References:
    P. Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018.
"""

from __future__ import annotations

import copy
import io
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from typing_extensions import override

from fedlightning.executors.base import Executor, Outcome
from fedlightning.round import ClientFailure, ClientTask, Trained
from fedlightning.runtime import ClientRuntime

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule

__all__ = ["ClientWorker", "RayExecutor", "assign_clients"]

log = logging.getLogger(__name__)


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


class _RuntimeUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, objects: Mapping[str, Any]) -> None:
        super().__init__(file)
        self._objects = objects

    def persistent_load(self, pid: Any) -> Any:
        return self._objects[pid]


def dump_runtime(runtime: ClientRuntime) -> bytes:
    """Pickle a runtime (by value where needed, as Ray does) without its data.

    The runtime holds the algorithm's client half only (no global model, server state or
    server context: :meth:`~fedlightning.algorithms.Algorithm.client_half`), and the
    datamodule becomes a persistent id that each worker resolves to its own copy, so a
    snapshot never carries the dataset, the trainer, the loggers or the callbacks.

    Args:
        runtime: The round's runtime.

    Returns:
        The snapshot.
    """
    from ray import cloudpickle

    refs: dict[int, str] = {id(runtime.datamodule): "datamodule"}

    class _Pickler(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> str | None:
            return refs.get(id(obj))

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(runtime)
    return buffer.getvalue()


def load_runtime(data: bytes, datamodule: FederatedDataModule) -> ClientRuntime:
    """Restore :func:`dump_runtime`'s snapshot onto a worker's own datamodule."""
    runtime = _RuntimeUnpickler(io.BytesIO(data), {"datamodule": datamodule}).load()
    if not isinstance(runtime, ClientRuntime):
        raise TypeError(f"expected a ClientRuntime snapshot, got {type(runtime).__name__}")
    return runtime


class ClientWorker:
    """One pool worker: keeps a model and the datamodule, trains the clients it is sent.

    Used as a Ray actor by :class:`RayExecutor`; plain Python otherwise (which is how its
    logic is unit-tested).

    Args:
        module: A copy of the global model, reused for every client.
        datamodule: The federated datamodule.
        torch_threads: Threads for torch in this worker (``None``: leave as is).
    """

    def __init__(
        self, module: LightningModule, datamodule: Any, *, torch_threads: int | None = 1
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        datamodule.setup()
        self.module = module
        self.datamodule = datamodule
        self._snapshot: tuple[int, ClientRuntime] | None = None

    def run(self, key: int, runtime: bytes, tasks: Sequence[ClientTask]) -> list[tuple[str, Any]]:
        """Train the clients of ``tasks`` one after another with the round's runtime.

        Args:
            key: Identifies the snapshot (the round): it is unpickled once per key.
            runtime: The round's runtime snapshot (:func:`dump_runtime`).
            tasks: The clients assigned to this worker.

        Returns:
            Per client, ``("ok", Trained)`` or ``("failed", error)``.
        """
        if self._snapshot is None or self._snapshot[0] != key:
            loaded = load_runtime(runtime, self.datamodule)
            if loaded.placement.accelerator == "cuda":
                # Ray shows an actor its GPU(s) only, from index 0.
                loaded.placement = replace(loaded.placement, index=0)
            self._snapshot = (key, loaded)
        current = self._snapshot[1]
        device = current.placement.device
        self.module.to(device)
        out: list[tuple[str, Any]] = []
        for task in tasks:
            outcome = current.run(replace(task, message=task.message.to(device)), self.module)
            if isinstance(outcome, ClientFailure):
                out.append(("failed", outcome.error))
                continue
            if device.type != "cpu":  # replies travel back on the CPU
                outcome.reply.message = outcome.reply.message.to("cpu")
            out.append(("ok", outcome))
        return out

    def ping(self) -> int:
        """Return the number of torch threads (readiness check)."""
        return torch.get_num_threads()


class RayExecutor(Executor):
    """Trains the clients of a round on a pool of Ray actors.

    Args:
        num_workers: Actors in the pool (default: the CPUs Ray reports, divided by
            ``num_cpus_per_worker``, and no more than the GPUs allow).
        address: A Ray cluster address (``"auto"``, ``"ray://head:10001"``...); ``None``
            starts a local Ray instance unless one is already running.
        num_cpus_per_worker: CPUs Ray reserves for each actor.
        num_gpus_per_worker: GPUs Ray reserves for each actor; fractions share a GPU
            (``0.25``: four actors per GPU). Needs ``FederatedTrainer(accelerator="cuda")``
            or ``"gpu"``/``"auto"`` resolving to CUDA, and GPUs in the Ray cluster.
        torch_threads: Torch threads inside each actor (default: ``num_cpus_per_worker``
            rounded down, at least 1).
        init_kwargs: Extra ``ray.init`` arguments when this executor starts Ray (e.g.
            ``num_cpus``, ``runtime_env``).

    Attributes:
        client_seconds: Per round, the seconds each client took on its actor (what the
            rounds-per-hour projection in ``docs/executors.md`` is built from).
        replaced: ``(round, worker index, error)`` for every worker that died and was
            replaced.
        snapshot_bytes: Per round, the size of the runtime snapshot sent to the workers.
        client_half_bytes: Per round, the pickled size of the algorithm's client half in it
            (also in the log, at INFO level).

    Raises:
        ValueError: For a setting out of range.

    Example:
        >>> executor = RayExecutor(num_workers=8, address="auto")  # doctest: +SKIP

    References:
        Moritz et al., OSDI 2018 (Ray).
    """

    name = "ray"
    in_process = False

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        address: str | None = None,
        num_cpus_per_worker: float = 1.0,
        num_gpus_per_worker: float = 0.0,
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
        if not (isinstance(num_gpus_per_worker, (int, float)) and num_gpus_per_worker >= 0):
            raise ValueError(
                "num_gpus_per_worker must be a number >= 0 (fractions share a GPU), got "
                f"num_gpus_per_worker={num_gpus_per_worker!r}"
            )
        if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
            raise ValueError(
                f"torch_threads must be an integer >= 1, got torch_threads={torch_threads!r}"
            )
        self.num_workers = num_workers
        self.address = address
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.num_gpus_per_worker = float(num_gpus_per_worker)
        self.torch_threads = torch_threads or max(1, int(num_cpus_per_worker))
        self.init_kwargs = dict(init_kwargs or {})
        self.client_seconds: list[dict[int, float]] = []
        self.replaced: list[tuple[int, int, str]] = []
        self.snapshot_bytes: list[int] = []
        self.client_half_bytes: list[int] = []
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []
        self._refs: tuple[Any, Any] | None = None
        self._remote: Any = None

    @override
    def setup(self, model: LightningModule, runtime: ClientRuntime) -> None:
        cuda = runtime.placement.accelerator == "cuda"
        if self.num_gpus_per_worker > 0 and not cuda:
            raise ValueError(
                f"num_gpus_per_worker={self.num_gpus_per_worker} needs the run on CUDA "
                f"(FederatedTrainer(accelerator='cuda')), but it is on "
                f"{runtime.placement.accelerator!r}; set num_gpus_per_worker=0 or use a GPU"
            )
        if cuda and self.num_gpus_per_worker == 0:
            raise ValueError(
                "the run is on CUDA but RayExecutor(num_gpus_per_worker=0) gives its actors no "
                "GPU; set num_gpus_per_worker > 0 (e.g. 0.25 for four actors per GPU)"
            )
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
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        if self.num_gpus_per_worker > 0 and gpus < self.num_gpus_per_worker:
            raise ValueError(
                f"num_gpus_per_worker={self.num_gpus_per_worker} but the Ray cluster has "
                f"{gpus:g} GPUs"
            )
        workers = self.num_workers
        if workers is None:
            cpus = float(resources.get("CPU", 1.0))
            workers = max(1, int(cpus // self.num_cpus_per_worker))
            if self.num_gpus_per_worker > 0:
                workers = max(1, min(workers, int(gpus // self.num_gpus_per_worker)))
        self._remote = ray.remote(
            num_cpus=self.num_cpus_per_worker, num_gpus=self.num_gpus_per_worker
        )(ClientWorker)
        self._refs = (ray.put(copy.deepcopy(model).cpu()), ray.put(runtime.datamodule))
        self._actors = [self._new_actor() for _ in range(workers)]
        ray.get([a.ping.remote() for a in self._actors])
        self.client_seconds = []
        self.replaced = []
        self.snapshot_bytes = []
        self.client_half_bytes = []
        log.info("ray executor: %d workers ready", len(self._actors))

    def _new_actor(self) -> Any:
        assert self._refs is not None
        module_ref, data_ref = self._refs
        return self._remote.remote(module_ref, data_ref, torch_threads=self.torch_threads)

    @property
    def workers(self) -> int:
        """Number of actors in the pool."""
        return len(self._actors)

    def actor(self, index: int) -> Any:
        """The Ray actor handle of worker ``index`` (e.g. to stop it in a test)."""
        return self._actors[index]

    @override
    def run(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> list[Outcome]:
        if not self._actors:
            raise RuntimeError("RayExecutor.run before setup: the trainer calls setup")
        ray = self._ray
        round = tasks[0].round if tasks else 0
        blob = dump_runtime(runtime)
        self.snapshot_bytes.append(len(blob))
        half = len(self._ray.cloudpickle.dumps(runtime.hooks))
        self.client_half_bytes.append(half)
        log.info(
            "round %d: client half of %s: %d bytes, in a runtime snapshot of %d bytes",
            round,
            type(runtime.hooks).__name__,
            half,
            len(blob),
        )
        snapshot = ray.put(blob)
        shipped = [replace(t, message=t.message.to("cpu")) for t in tasks]
        by_client = {t.client: t for t in shipped}
        loads = {t.client: float(t.num_samples) for t in shipped}
        bins = assign_clients(loads, len(self._actors))
        pending = [
            (
                i,
                clients,
                self._actors[i].run.remote(round, snapshot, [by_client[c] for c in clients]),
            )
            for i, clients in enumerate(bins)
            if clients
        ]
        results: dict[int, tuple[str, Any]] = {}
        for index, clients, future in pending:
            try:
                results.update(zip(clients, ray.get(future), strict=True))
                continue
            except Exception as exc:  # the worker died: replace it, retry its clients once
                self._replace(round, index, exc)
            try:
                retry = self._actors[index].run.remote(
                    round, snapshot, [by_client[c] for c in clients]
                )
                results.update(zip(clients, ray.get(retry), strict=True))
            except Exception as exc:
                self._replace(round, index, exc)
                failed = ("failed", f"worker lost twice: {type(exc).__name__}: {exc}")
                results.update((c, failed) for c in clients)
        out: list[Outcome] = []
        seconds: dict[int, float] = {}
        for task in tasks:
            status, value = results[task.client]
            if status != "ok":
                log.warning("round %d: client %d failed: %s", round, task.client, value)
                out.append(ClientFailure(task.client, str(value)))
                continue
            assert isinstance(value, Trained)
            seconds[task.client] = value.seconds
            out.append(value)
        self.client_seconds.append(seconds)
        return out

    def _replace(self, round: int, index: int, error: BaseException) -> None:
        """Put a fresh worker in place of worker ``index``, which failed with ``error``."""
        log.warning("round %d: ray worker %d lost (%r); replacing it", round, index, error)
        self.replaced.append((round, index, f"{type(error).__name__}: {error}"))
        try:
            self._ray.kill(self._actors[index])
        except Exception as exc:  # pragma: no cover - already gone
            log.debug("ray executor: could not kill a lost actor (%r)", exc)
        self._actors[index] = self._new_actor()

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
        self._refs = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
