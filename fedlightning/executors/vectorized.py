"""The vectorized executor: the clients of a round train together as one batched model.

Each parameter of the ``K`` clients of a round is one tensor of shape ``(K, *shape)``; one
local step of every client is one call of the module's own ``training_step`` under
``torch.func.functional_call`` and ``torch.func.vmap``, one backward pass, and one stacked
optimizer update (:mod:`fedlightning.executors.stacked_optim`). Clients whose batches at a
step differ in shape (a short last batch, unequal client sizes) are bucketed by shape, so no
batch is ever padded and every client sees exactly the batches, in the order, that the
sequential executor gives it.

The algorithm's client hooks run per client, unchanged: ``configure_client`` before
training, ``client_message`` after it. The loss hook runs inside the vmapped step with the
client's own ``received`` tensors, for the default hook, for FedProx's proximal term, and for
algorithms the user declares safe (``vmap_losses``).

Modules it cannot stack fall back to the sequential executor for the round, with the reason
logged once and kept in :attr:`VectorizedExecutor.fallbacks`; never a silently different
result. Reasons include: BatchNorm layers (their running statistics update in training mode),
an optimizer or setting without a stacked rule, a learning-rate scheduler, manual
optimization, a ``configure_client`` that builds a different module, an overridden
``training_loss`` not declared safe, a module that overrides Lightning's training hooks
(``on_train_batch_start``...; a stacked step cannot call them once per client), gradient
clipping or accumulation, a precision other than ``32-true``, and anything ``vmap`` rejects
(data-dependent Python control flow, ``.item()``, random ops such as dropout). The stacked
step runs on the run's device (``FederatedTrainer(accelerator=...)``), and ``self.global_step``
and ``self.current_epoch`` read in ``training_step`` count as in the sequential loop.

References:
    Equivalent to the sequential executor's FedAvg (H. B. McMahan et al., AISTATS 2017) and
    FedProx (T. Li et al., MLSys 2020) rounds; the batching follows ``torch.func``'s model
    ensembling recipe.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm
from fedlightning.algorithms.fedprox import FedProx
from fedlightning.client import has_hook, parse_optimizers
from fedlightning.executors.base import Executor, Outcome
from fedlightning.executors.sequential import SequentialExecutor
from fedlightning.executors.stacked_optim import (
    OptimizerSpec,
    StackedOptimizer,
    UnsupportedOptimizerError,
    optimizer_spec,
    stacked_optimizer,
)
from fedlightning.round import ClientContext, ClientFailure, ClientTask

if TYPE_CHECKING:
    from fedlightning.runtime import ClientRuntime

__all__ = ["StackedRound", "UnvectorizableError", "VectorizedExecutor", "vectorizable"]

log = logging.getLogger(__name__)

_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


class UnvectorizableError(RuntimeError):
    """A module, optimizer or algorithm hook that the vectorized executor cannot stack."""


def vectorizable(
    module: LightningModule,
    algorithm: Algorithm,
    vmap_losses: Sequence[type[Algorithm]] = (),
) -> str | None:
    """The static reason why ``module`` under ``algorithm`` cannot be vectorized, if any.

    Checks what can be known before training; ``vmap`` itself may still reject the module's
    ``training_step`` at the first step (data-dependent control flow, random ops).

    Args:
        module: The LightningModule.
        algorithm: The federated algorithm.
        vmap_losses: Algorithm classes whose ``training_loss`` only uses the module's
            parameters, the batch, the loss and ``ctx.received``, declared safe to vmap.

    Returns:
        ``None`` when it can be tried, else a human-readable reason.
    """
    if not module.automatic_optimization:
        return f"{type(module).__name__} uses manual optimization"
    for name, sub in module.named_modules():
        if isinstance(sub, _BN_TYPES):
            return (
                f"{type(module).__name__}.{name} is a {type(sub).__name__}, whose running "
                "statistics update in training mode"
            )
    if _loss_kind(algorithm, vmap_losses) is None:
        return (
            f"{type(algorithm).__name__}.training_loss is overridden and not declared safe to "
            "vmap (pass its class in vmap_losses if it only uses the parameters, the batch, "
            "the loss and ctx.received)"
        )
    return None


def _loss_kind(algorithm: Algorithm, vmap_losses: Sequence[type[Algorithm]]) -> str | None:
    hook = type(algorithm).training_loss
    if hook is Algorithm.training_loss:
        return "default"
    if hook is FedProx.training_loss or any(hook is cls.training_loss for cls in vmap_losses):
        return "hook"
    return None


_TRAINING_HOOKS = (
    "on_fit_start",
    "on_fit_end",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_zero_grad",
    "optimizer_zero_grad",
    "on_before_backward",
    "backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "configure_gradient_clipping",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
)


def _runtime_reason(runtime: ClientRuntime, module: LightningModule) -> str | None:
    """Why the run's settings (not the module's maths) keep it from being stacked, if so."""
    module_hooks = [h for h in _TRAINING_HOOKS if has_hook(module, h)]
    if module_hooks:
        return (
            f"the module overrides {module_hooks[:3]}, training hooks that a stacked step "
            "cannot call once per client"
        )
    settings = runtime.settings
    if settings.gradient_clip_val:
        return "gradient clipping (gradient_clip_val) has no stacked rule"
    if settings.accumulate_grad_batches != 1:
        return "gradient accumulation (accumulate_grad_batches > 1) has no stacked rule"
    if runtime.placement.precision != "32-true":
        return f"precision={runtime.placement.precision!r}: the stacked step runs in float32 only"
    return None


class _StepLog:
    """Stands where Lightning's Fabric would while a vmapped ``training_step`` runs.

    Per call it sums what the module logs (per client, as batched tensors) and counts the
    calls per name (the same for every client), as :class:`fedlightning.client.LogSink`.
    """

    def __init__(self, global_step: int = 0, current_epoch: int = 0) -> None:
        self.global_step = global_step
        self.current_epoch = current_epoch
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, float] = {}
        self.loggers: list[Any] = []

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        for name, value in metrics.items():
            if isinstance(value, Tensor):
                value = value.detach()
                if value.numel() != 1:
                    continue
                value = value.reshape(())
            elif isinstance(value, (int, float)):
                value = torch.tensor(float(value))
            else:
                continue
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0.0) + 1.0


class _TrainingStep(nn.Module):
    """Calls ``module.training_step`` (and the algorithm's loss hook) as a ``forward``."""

    def __init__(self, module: LightningModule) -> None:
        super().__init__()
        self.module = module

    def forward(
        self,
        batch: Any,
        batch_idx: int,
        received: dict[str, Tensor],
        hook: Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None,
    ) -> Tensor:
        out = self.module.training_step(batch, batch_idx)
        loss = out["loss"] if isinstance(out, Mapping) else out
        if not isinstance(loss, Tensor):
            raise UnvectorizableError(
                f"{type(self.module).__name__}.training_step returned {type(out).__name__}; "
                "vectorized steps need a loss tensor at every step"
            )
        if hook is not None:
            loss = hook(received, batch, loss)
        return loss


@dataclass
class _Client:
    """One client of a vectorized round."""

    ctx: ClientContext
    batches: Iterator[tuple[int, int, Any]]
    rng_state: Tensor
    steps: int = 0
    done: bool = False


def _client_batches(
    loader: Any, epochs: int | None, steps: int | None
) -> Iterator[tuple[int, int, Any]]:
    """``(epoch, batch_idx, batch)`` in the order :func:`fedlightning.client.fit_local` takes
    them."""
    step = 0
    epoch = 0
    while epochs is None or epoch < epochs:
        batch_idx = -1
        for batch_idx, batch in enumerate(loader):
            yield epoch, batch_idx, batch
            step += 1
            if steps is not None and step >= steps:
                return
        epoch += 1
        if batch_idx < 0:
            return


def _batch_key(batch: Any) -> tuple[Any, ...]:
    leaves, spec = pytree.tree_flatten(batch)
    key: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            key.append(("T", tuple(leaf.shape), leaf.dtype, leaf.device))
        else:
            key.append(("V", repr(leaf)))
    return tuple(key)


def _stack_batches(batches: Sequence[Any], device: torch.device) -> Any:
    flat = [pytree.tree_flatten(b) for b in batches]
    spec = flat[0][1]
    leaves: list[Any] = []
    for i, leaf in enumerate(flat[0][0]):
        if isinstance(leaf, Tensor):
            leaves.append(torch.stack([f[0][i] for f in flat]).to(device, non_blocking=True))
        else:
            leaves.append(leaf)
    return pytree.tree_unflatten(leaves, spec)


def _batch_dims(batch: Any) -> Any:
    leaves, spec = pytree.tree_flatten(batch)
    return pytree.tree_unflatten([0 if isinstance(x, Tensor) else None for x in leaves], spec)


class StackedRound:
    """The clients of one round, configured, stacked and trained together.

    The constructor configures every client through the round's
    :class:`~fedlightning.runtime.ClientRuntime` (its context, seeding and
    ``configure_client``), builds its optimizer and loader, and stacks their states;
    :meth:`train` trains them; :meth:`finish` hands each client back to the runtime for local
    evaluation and its reply. The auto executor also uses :meth:`train` with a step budget to
    time the vectorized path. Clients work on copies of their persisted state, so an attempt
    that falls back changes nothing.

    Args:
        runtime: The round's client runtime.
        worker: A working copy of the global model (the executor's own).
        tasks: The round's clients.
        vmap_losses: Algorithm classes whose loss hook is declared safe to vmap.

    Raises:
        UnvectorizableError: If the round cannot be stacked; nothing of the run is changed.
    """

    def __init__(
        self,
        runtime: ClientRuntime,
        worker: LightningModule,
        tasks: Sequence[ClientTask],
        vmap_losses: Sequence[type[Algorithm]] = (),
    ) -> None:
        self.runtime = runtime
        self.worker = worker
        algorithm = runtime.hooks
        reason = vectorizable(worker, algorithm, vmap_losses) or _runtime_reason(runtime, worker)
        if reason is not None:
            raise UnvectorizableError(reason)
        self._hooked = _loss_kind(algorithm, vmap_losses) == "hook"
        self.clients: list[_Client] = []
        names = {id(p): n for n, p in worker.named_parameters()}
        snapshots: list[dict[str, Tensor]] = []
        spec: OptimizerSpec | None = None
        plan = runtime.plan
        for task in tasks:
            ctx = runtime.context(replace(task, state=copy.deepcopy(dict(task.state))))
            with runtime.seeded(ctx.seed):
                module = runtime.configure(ctx, worker)
                if module is not worker:
                    raise UnvectorizableError(
                        f"{type(algorithm).__name__}.configure_client returns a different module "
                        "than the one it was given (a sub-network), which cannot be stacked"
                    )
                setup = parse_optimizers(worker.configure_optimizers(), type(worker).__name__)
                if setup.scheduler is not None:
                    raise UnvectorizableError(
                        f"{type(worker).__name__} has a learning-rate scheduler, which the "
                        "vectorized executor does not step"
                    )
                try:
                    client_spec = optimizer_spec(setup.optimizer, names)
                except UnsupportedOptimizerError as exc:
                    raise UnvectorizableError(str(exc)) from exc
                if spec is None:
                    spec = client_spec
                elif client_spec != spec:
                    raise UnvectorizableError(
                        "configure_optimizers gives different hyperparameters to different "
                        "clients of the round"
                    )
                loader = runtime.train_loader(ctx)
                batches = _client_batches(loader, plan.epochs, plan.steps)
                rng_state = torch.get_rng_state()
            snapshots.append({k: v.detach().clone() for k, v in _tensors(worker).items()})
            self.clients.append(_Client(ctx, batches, rng_state))
        if spec is None:
            raise UnvectorizableError("no clients in the round")
        params = dict(worker.named_parameters())
        trainable = [n for n, _ in spec.groups if params[n].requires_grad]
        if len(trainable) != len(spec.groups):
            raise UnvectorizableError("the optimizer holds parameters that do not require grad")
        self.trainable = trainable
        device = next(iter(params.values())).device if params else torch.device("cpu")
        self.device = device
        self.constants = [k for k in _tensors(worker) if k not in set(trainable)]
        self.params: dict[str, Tensor] = {
            n: torch.stack([s[n] for s in snapshots]).to(device) for n in trainable
        }
        self.others: dict[str, Tensor] = {
            n: torch.stack([s[n] for s in snapshots]).to(device) for n in self.constants
        }
        self.received: dict[str, Tensor] = {}
        if self._hooked:
            keys = list(self.clients[0].ctx.received)
            for c in self.clients:
                if list(c.ctx.received) != keys:
                    raise UnvectorizableError(
                        "clients of the round received different tensor names"
                    )
            self.received = {
                k: torch.stack([c.ctx.received[k] for c in self.clients]).to(device) for k in keys
            }
        self.optimizer: StackedOptimizer = stacked_optimizer(spec, self.params)
        self._call = _TrainingStep(worker)
        self._steps_done = 0
        self._metric_sums: dict[str, Tensor] = {}
        self._metric_counts: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ training
    def _loss_hook(self) -> Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None:
        if not self._hooked:
            return None
        algorithm = self.runtime.hooks
        template = self.clients[0].ctx
        worker = self.worker

        def hook(received: dict[str, Tensor], batch: Any, loss: Tensor) -> Tensor:
            ctx = ClientContext(
                client=template.client,
                round=template.round,
                message=template.message,
                received=received,
                num_samples=template.num_samples,
                state={},
                seed=template.seed,
            )
            return algorithm.training_loss(ctx, worker, batch, loss)

        return hook

    def _next_batches(self) -> dict[int, tuple[int, int, Any]]:
        out: dict[int, tuple[int, int, Any]] = {}
        for i, c in enumerate(self.clients):
            if c.done:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(c.rng_state)
                item = next(c.batches, None)
                c.rng_state = torch.get_rng_state()
            if item is None:
                c.done = True
            else:
                out[i] = item
        return out

    def train(self, max_steps: int | None = None) -> int:
        """Train every client to the end of its local work (or ``max_steps`` more steps).

        Args:
            max_steps: Stop after this many vectorized steps (for timing probes).

        Returns:
            The number of vectorized steps taken (a step trains every client with a batch).

        Raises:
            UnvectorizableError: If ``vmap`` rejects the module's ``training_step``.
        """
        hook = self._loss_hook()
        self.worker.train()  # as fit_local: training-mode behaviour of every layer
        taken = 0
        while max_steps is None or taken < max_steps:
            items = self._next_batches()
            if not items:
                break
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, (epoch, batch_idx, batch) in items.items():
                key = (epoch, batch_idx, self.clients[i].steps, _batch_key(batch))
                groups.setdefault(key, []).append(i)
            for (epoch, batch_idx, steps, _), rows in groups.items():
                self._step(rows, [items[i][2] for i in rows], (epoch, batch_idx, steps), hook)
            taken += 1
        self._steps_done += taken
        return taken

    def _step(
        self,
        rows: list[int],
        batches: list[Any],
        position: tuple[int, int, int],
        hook: Callable[[dict[str, Tensor], Any, Tensor], Tensor] | None,
    ) -> None:
        epoch, batch_idx, steps = position
        full = len(rows) == len(self.clients)
        index = None if full else torch.tensor(rows, dtype=torch.long, device=self.device)

        def take(stacked: dict[str, Tensor]) -> dict[str, Tensor]:
            if index is None:
                return stacked
            return {k: v.index_select(0, index) for k, v in stacked.items()}

        params = {k: v.detach().requires_grad_(True) for k, v in take(self.params).items()}
        others = take(self.others)
        received = take(self.received)
        batch = _stack_batches(batches, self.device)
        sink = _StepLog(global_step=steps, current_epoch=epoch)
        call = self._call

        def one(p: dict[str, Tensor], o: dict[str, Tensor], b: Any, r: dict[str, Tensor]) -> Any:
            state = {f"module.{k}": v for k, v in {**o, **p}.items()}
            loss = functional_call(call, state, (b, batch_idx, r, hook), strict=True)
            return loss, dict(sink.sums)

        previous = (self.worker.fabric, self.worker._trainer)
        self.worker.fabric = sink  # type: ignore[assignment]
        self.worker.trainer = sink  # type: ignore[assignment]
        try:
            losses, logged = vmap(one, in_dims=(0, 0, _batch_dims(batch), 0), randomness="error")(
                params, others, batch, received
            )
        except UnvectorizableError:
            raise
        except Exception as exc:
            raise UnvectorizableError(
                f"torch.func.vmap cannot batch {type(self.worker).__name__}.training_step: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self.worker.fabric, self.worker.trainer = previous
        if losses.dim() != 1:
            raise UnvectorizableError(
                f"training_step must return a scalar loss, got shape {tuple(losses.shape)}"
            )
        grads = torch.autograd.grad(
            losses.sum(), list(params.values()), allow_unused=True, materialize_grads=False
        )
        missing = [n for n, g in zip(params, grads, strict=True) if g is None]
        if missing:
            raise UnvectorizableError(
                f"parameters {missing[:3]} get no gradient; torch.optim skips them per "
                "parameter, which the stacked optimizer does not replicate"
            )
        with torch.no_grad():
            detached = {k: v.detach() for k, v in params.items()}
            self.optimizer.step(detached, dict(zip(params, grads, strict=True)), index)
            if index is not None:
                for k, v in detached.items():
                    self.params[k].index_copy_(0, index, v)
                for k, v in others.items():
                    self.others[k].index_copy_(0, index, v)
        for i in rows:
            self.clients[i].steps += 1
        self._accumulate("loss", losses.detach(), 1.0, index)
        for name, value in logged.items():
            self._accumulate(name, value.detach(), sink.counts[name], index)

    def _accumulate(self, name: str, values: Tensor, count: float, index: Tensor | None) -> None:
        """Add one step's logged values (one per client of the step) to the running sums."""
        if name not in self._metric_sums:
            self._metric_sums[name] = torch.zeros(len(self.clients), dtype=values.dtype)
            self._metric_counts[name] = torch.zeros(len(self.clients), dtype=torch.float64)
        values = values.to("cpu", non_blocking=True)
        if index is None:
            self._metric_sums[name] += values
            self._metric_counts[name] += count
        else:
            cpu_index = index.cpu()
            self._metric_sums[name].index_add_(0, cpu_index, values)
            self._metric_counts[name].index_add_(
                0, cpu_index, torch.full((len(cpu_index),), count, dtype=torch.float64)
            )

    # ------------------------------------------------------------------ results
    def load_client(self, i: int, module: LightningModule) -> None:
        """Write client ``i``'s current state into ``module``."""
        targets = _tensors(module)
        with torch.no_grad():
            for k, v in {**self.params, **self.others}.items():
                targets[k].copy_(v[i])

    def finish(self) -> list[Outcome]:
        """Hand every client back to the runtime: local evaluation and its reply, in order.

        Each client's end of the run happens under its own generator state, as it would at
        the end of :meth:`~fedlightning.runtime.ClientRuntime.run`.

        Returns:
            One outcome per client, in the order of the round's tasks.
        """
        runtime = self.runtime
        out: list[Outcome] = []
        for i, c in enumerate(self.clients):
            ctx = c.ctx
            try:
                self.load_client(i, self.worker)
                metrics = {
                    k: float(v[i]) / float(self._metric_counts[k][i])
                    for k, v in self._metric_sums.items()
                    if float(self._metric_counts[k][i]) > 0
                }
                metrics["steps"] = float(c.steps)
                with torch.random.fork_rng(devices=[]):
                    torch.set_rng_state(c.rng_state)
                    out.append(runtime.finish(ctx, self.worker, metrics))
            except Exception as exc:  # a failing client never takes the run down
                log.warning("client %d raised %r; dropped", ctx.client, exc)
                out.append(ClientFailure(ctx.client, f"{type(exc).__name__}: {exc}"))
        return out


def _tensors(module: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of ``module`` by name (non-persistent buffers included)."""
    out: dict[str, Tensor] = dict(module.named_parameters())
    out.update(module.named_buffers())
    return out


class VectorizedExecutor(Executor):
    """Trains the clients of a round as one batched model; falls back where it cannot.

    Args:
        vmap_losses: Algorithm classes whose overridden ``training_loss`` only uses the
            module's parameters, the batch, the loss and ``ctx.received``, and may therefore
            run inside ``vmap`` (FedProx's is built in).

    Attributes:
        stacked_rounds: The rounds trained as one stacked model.
        fallbacks: ``(round, reason)`` for every round run sequentially instead.
        seconds: Wall time of each stacked round.

    Example:
        >>> from fedlightning import FederatedTrainer
        >>> trainer = FederatedTrainer(executor=VectorizedExecutor(), rounds=5)

    References:
        McMahan et al., AISTATS 2017 (FedAvg); Li et al., MLSys 2020 (FedProx).
    """

    name = "vectorized"

    def __init__(self, *, vmap_losses: Sequence[type[Algorithm]] = ()) -> None:
        for cls in vmap_losses:
            if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
                raise ValueError(
                    f"vmap_losses must hold Algorithm subclasses, got vmap_losses={vmap_losses!r}"
                )
        self.vmap_losses = tuple(vmap_losses)
        self.fallbacks: list[tuple[int, str]] = []
        self.stacked_rounds: list[int] = []
        self.seconds: list[float] = []
        self._sequential = SequentialExecutor()
        self._worker: LightningModule | None = None
        self._disabled: str | None = None
        self._warned: set[str] = set()

    @property
    def disabled(self) -> str | None:
        """Why every round of this fit runs sequentially, if one such reason is known."""
        return self._disabled

    @override
    def setup(self, model: LightningModule, runtime: ClientRuntime) -> None:
        self._worker = copy.deepcopy(model)
        self._sequential.setup(model, runtime)
        self._disabled = vectorizable(self._worker, runtime.hooks, self.vmap_losses)
        self._disabled = self._disabled or _runtime_reason(runtime, self._worker)
        self.fallbacks = []
        self.stacked_rounds = []
        self.seconds = []

    @override
    def run(self, runtime: ClientRuntime, tasks: Sequence[ClientTask]) -> list[Outcome]:
        if self._worker is None:
            raise RuntimeError("VectorizedExecutor.run before setup: the trainer calls setup")
        start = time.perf_counter()
        round = tasks[0].round if tasks else 0
        if self._disabled is not None:
            return self._fall_back(runtime, tasks, round, self._disabled)
        try:
            stacked = StackedRound(runtime, self._worker, tasks, self.vmap_losses)
            stacked.train()
        except UnvectorizableError as exc:
            if "vmap" in str(exc):
                self._disabled = str(exc)  # structural: it would fail the same way every round
            return self._fall_back(runtime, tasks, round, str(exc))
        except Exception as exc:  # e.g. one client's data fails: let sequential isolate it
            return self._fall_back(
                runtime, tasks, round, f"vectorized training raised {type(exc).__name__}: {exc}"
            )
        out = stacked.finish()
        self.stacked_rounds.append(round)
        self.seconds.append(time.perf_counter() - start)
        return out

    def _fall_back(
        self, runtime: ClientRuntime, tasks: Sequence[ClientTask], round: int, reason: str
    ) -> list[Outcome]:
        self.fallbacks.append((round, reason))
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("vectorized executor: round %d runs sequentially: %s", round, reason)
        else:
            log.debug("vectorized executor: round %d runs sequentially: %s", round, reason)
        return self._sequential.run(runtime, tasks)

    @override
    def teardown(self) -> None:
        self._worker = None
        self._sequential.teardown()
