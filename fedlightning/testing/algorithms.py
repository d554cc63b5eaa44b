"""A shared tester for federated algorithms, in the spirit of torchmetrics' ``MetricTester``.

:class:`AlgorithmTester` runs tiny federated fits of an algorithm (built fresh for every run
by a factory) and checks, one method per property:

* :meth:`~AlgorithmTester.check_centralized_sgd`: one client holding all the data and one
  full-batch local step give one step of centralized SGD, computed here by hand;
* :meth:`~AlgorithmTester.check_sample_weighting`: clients of unequal sizes give the
  sample-weighted mean of their locally trained models, each trained here by hand;
* :meth:`~AlgorithmTester.check_selection_varies`: partial client selection changes over the
  rounds, is the same for the same seed and changes with the seed;
* :meth:`~AlgorithmTester.check_resume`: a run stopped and resumed from its checkpoint ends
  bit for bit where an uninterrupted run does (global model, algorithm and client states);
* :meth:`~AlgorithmTester.check_executors` / :meth:`~AlgorithmTester.check_runs_stacked`:
  every executor gives the sequential run, and the vectorized one really stacks the clients;
* :meth:`~AlgorithmTester.check_bytes`: the bytes the trainer logs are those of the messages
  seen by a callback (and, for uncoded state messages, the state's bytes counted by hand);
* :meth:`~AlgorithmTester.check_config`: every constructor argument is recorded, in the
  settings, the config and ``results.json``, and a changed argument changes the config;
* :meth:`~AlgorithmTester.check_proximal`: a proximal loss hook adds ``mu/2 ||w - w0||^2``
  (and its gradient ``mu (w - w0)``) for every coefficient.

:meth:`~AlgorithmTester.run_all` runs every check that applies. Failures raise plain
``AssertionError`` naming what differed and by how much, so any test framework (or none)
can call the tester; a check used outside its scope raises ``ValueError``.

Example:
    >>> from fedlightning.algorithms import FedProx
    >>> tester = AlgorithmTester(lambda: FedProx(mu=0.1), proximal="mu", stacks=True)
    >>> tester.run_all()  # doctest: +SKIP
    ['check_config', 'check_proximal', 'check_centralized_sgd', ...]

References:
    H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017 (the FedAvg maths the SGD checks compute by hand);
    T. Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020 (the
    proximal term of :meth:`AlgorithmTester.check_proximal`).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from numpy.typing import ArrayLike, NDArray
from torch import Tensor
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm
from fedlightning.callbacks.base import Callback
from fedlightning.callbacks.comm_cost import CommCost
from fedlightning.client import LogSink, capture_logs, parse_optimizers
from fedlightning.datamodules import IID, FederatedDataModule, Partitioner
from fedlightning.demos import BoringClassifier, blobs
from fedlightning.executors import Executor
from fedlightning.messages import Message
from fedlightning.round import ClientContext, Direction
from fedlightning.trainer import FederatedTrainer

__all__ = [
    "STACKED_ATOL",
    "AlgorithmTester",
    "MessageRecord",
    "MessageRecorder",
    "assert_same_state",
    "init_parameters",
    "stacked_rounds",
    "tiny_classifier",
    "tiny_datamodule",
]

STACKED_ATOL = 1e-6
"""Tolerance for runs whose clients trained stacked (``torch.func.vmap`` adds in another
order than the per-client loop: measured 2e-8 on tiny MLPs); every other comparison between
executors is exact."""

SGD_ATOL = 1e-6
"""Absolute tolerance of the hand-computed SGD checks (float32 round-off of ``w0 + (w - w0)``
and of a shuffled full batch)."""

SGD_RTOL = 1e-5
"""Relative tolerance of the hand-computed SGD checks."""

_SCALAR_BYTES = 8  # counted here by hand, not read from fedlightning.messages
_DIRECTIONS: tuple[Direction, Direction] = ("down", "up")

ExecutorSpec = str | Executor | Callable[[], Executor]
"""An executor name, an executor, or a factory of executors."""


# ---------------------------------------------------------------------------- small workloads


def tiny_classifier(
    batchnorm: bool = False,
    *,
    in_features: int = 8,
    num_classes: int = 3,
    hidden: int = 16,
    lr: float = 0.1,
) -> BoringClassifier:
    """A two-layer MLP classifier trained with plain SGD (the tester's default model).

    Args:
        batchnorm: Put a BatchNorm1d after the hidden layer (client state then matters for
            ``local_bn``; the vectorized executor cannot stack it).
        in_features: Input features.
        num_classes: Number of classes.
        hidden: Hidden width.
        lr: SGD learning rate.

    Returns:
        The module.
    """
    return BoringClassifier(
        in_features=in_features, num_classes=num_classes, hidden=hidden, lr=lr, batchnorm=batchnorm
    )


def tiny_datamodule(
    num_clients: int = 6,
    n: int = 120,
    *,
    in_features: int = 8,
    num_classes: int = 3,
    batch_size: int = 10,
    seed: int = 0,
) -> FederatedDataModule:
    """Gaussian blobs split IID over ``num_clients`` clients, with a test set (the default
    data of :func:`tiny_classifier`).

    Args:
        num_clients: Number of clients.
        n: Training samples (the test set has ``max(30, n // 4)``).
        in_features: Features per sample.
        num_classes: Number of classes.
        batch_size: Training batch size.
        seed: Seed of the data and the partition.

    Returns:
        The datamodule.
    """
    n_test = max(30, n // 4)
    x, y = blobs(n + n_test, in_features=in_features, num_classes=num_classes, seed=seed)
    return FederatedDataModule(
        (x[:n], y[:n]),
        test=(x[n:], y[n:]),
        partition=IID(num_clients=num_clients),
        batch_size=batch_size,
        seed=seed,
        num_classes=num_classes,
    )


@dataclass(frozen=True)
class _Sizes(Partitioner):
    """Contiguous parts of the given sizes, in order (client ``i`` gets the ``i``-th slice)."""

    sizes: tuple[int, ...]
    num_clients: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_clients", len(self.sizes))

    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[NDArray[np.int64]]:
        offsets = np.cumsum((0, *self.sizes))
        if offsets[-1] > len(np.asarray(labels)):
            raise ValueError(f"sizes {list(self.sizes)} need {offsets[-1]} samples")
        return [np.arange(a, b, dtype=np.int64) for a, b in itertools.pairwise(offsets)]


# ---------------------------------------------------------------------------- helpers


def stacked_rounds(executor: Executor) -> int:
    """How many rounds an executor trained as one stacked (vectorized) model.

    Reads :class:`~fedlightning.executors.vectorized.VectorizedExecutor`'s ``stacked_rounds``
    (rounds it ran sequentially are in ``fallbacks`` instead), directly or inside an
    :class:`~fedlightning.executors.auto.AutoExecutor`. Other executors: 0.

    Args:
        executor: The executor of a finished fit (``trainer.executor``).

    Returns:
        The number of stacked rounds.
    """
    from fedlightning.executors.auto import AutoExecutor
    from fedlightning.executors.vectorized import VectorizedExecutor

    if isinstance(executor, VectorizedExecutor):
        return len(executor.stacked_rounds)
    if isinstance(executor, AutoExecutor):
        return len(executor.vectorized.stacked_rounds)
    return 0


def init_parameters(cls: type) -> list[inspect.Parameter]:
    """The constructor parameters of ``cls``, its parents' included where ``**kwargs`` reach them.

    Walks the MRO from ``cls``: the parameters of each ``__init__`` (without ``self``,
    ``*args`` and ``**kwargs``), continuing to the next ``__init__`` only while the current
    one takes ``**kwargs``.

    Args:
        cls: A class (e.g. ``type(algorithm)``).

    Returns:
        The parameters, the most derived class's first, each name once.
    """
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for index, param in enumerate(inspect.signature(init).parameters.values()):
            if index == 0 or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
                continue
            out.setdefault(param.name, param)
        if not forwards:
            break
    return list(out.values())


def _rebuild(algorithm: Algorithm, **changes: Any) -> Algorithm:
    """A new algorithm of the same class, from the recorded settings with ``changes``."""
    cls = type(algorithm)
    params = init_parameters(cls)
    names = {p.name for p in params}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} takes no argument {unknown}; its constructor takes {sorted(names)}"
        )
    settings = algorithm.settings
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in params:
        if param.name in changes:
            value = changes[param.name]
        elif param.name in settings:
            value = settings[param.name]
        else:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[param.name] = value
    return cls(*args, **kwargs)


def _differences(
    expected: Any, actual: Any, where: str, atol: float, rtol: float, out: list[str]
) -> None:
    """Append a line per difference between two nested values (tensors within tolerance)."""
    exact = atol == 0.0 and rtol == 0.0
    if isinstance(expected, Tensor) or isinstance(actual, Tensor):
        if not (isinstance(expected, Tensor) and isinstance(actual, Tensor)):
            out.append(f"{where}: expected {type(expected).__name__}, got {type(actual).__name__}")
            return
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            out.append(
                f"{where}: expected {expected.dtype} {tuple(expected.shape)}, got "
                f"{actual.dtype} {tuple(actual.shape)}"
            )
            return
        a, b = expected.detach().cpu(), actual.detach().cpu()
        if exact or not a.is_floating_point():
            if torch.equal(a, b):
                return
            differ = a != b
            gap = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
            out.append(
                f"{where}: differs (exact comparison) at {int(differ.sum())} of {a.numel()} "
                f"entries, by up to {gap:.3g}"
            )
            return
        close = torch.isclose(b.double(), a.double(), rtol=rtol, atol=atol, equal_nan=True)
        if not bool(close.all()):
            diff = float((a.double() - b.double()).abs().max())
            out.append(
                f"{where}: differs by up to {diff:.3g} (tolerance atol={atol:g} + "
                f"rtol={rtol:g}*|expected|) at {int((~close).sum())} of {a.numel()} entries"
            )
        return
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            out.append(f"{where}: expected a mapping, got {type(actual).__name__}")
            return
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing or extra:
            out.append(f"{where}: keys differ: missing {missing[:5]}, unexpected {extra[:5]}")
        for key in expected:
            if key in actual:
                _differences(expected[key], actual[key], f"{where}[{key!r}]", atol, rtol, out)
        return
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(expected) != len(actual):
            length = len(actual) if isinstance(actual, (list, tuple)) else "-"
            out.append(
                f"{where}: expected a sequence of {len(expected)}, got "
                f"{type(actual).__name__} of {length}"
            )
            return
        for i, (x, y) in enumerate(zip(expected, actual, strict=True)):
            _differences(x, y, f"{where}[{i}]", atol, rtol, out)
        return
    if isinstance(expected, np.ndarray):
        if not (isinstance(actual, np.ndarray) and np.array_equal(expected, actual)):
            out.append(f"{where}: arrays differ")
        return
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        if math.isnan(expected) and math.isnan(actual):
            return
        same = (
            expected == actual
            if exact
            else math.isclose(expected, actual, rel_tol=rtol, abs_tol=atol)
        )
        if not same:
            out.append(f"{where}: expected {expected!r}, got {actual!r}")
        return
    try:
        same = bool(expected == actual)
    except Exception:  # objects without a usable ==
        same = repr(expected) == repr(actual)
    if not same:
        out.append(f"{where}: expected {expected!r}, got {actual!r}")


def assert_same_state(
    expected: Any,
    actual: Any,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    where: str = "state",
) -> None:
    """Assert that two nested states (dicts, lists, tensors, numbers) are the same.

    Tensors must match in shape and dtype and, with ``atol = rtol = 0``, bit for bit;
    integer tensors are always compared exactly.

    Args:
        expected: The reference.
        actual: The value checked.
        atol: Absolute tolerance for floating-point values.
        rtol: Relative tolerance (of ``|expected|``).
        where: Name of the value, in the message.

    Raises:
        AssertionError: Listing every difference (path, how many entries, by how much).
    """
    problems: list[str] = []
    _differences(expected, actual, where, atol, rtol, problems)
    if problems:
        raise AssertionError(_report(f"{where} differs", problems))


def _report(title: str, problems: Sequence[str], limit: int = 15) -> str:
    shown = list(problems[:limit])
    if len(problems) > limit:
        shown.append(f"... and {len(problems) - limit} more")
    return title + ":\n  " + "\n  ".join(shown)


def _max_abs_diff(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return max(
        (float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()),
        default=0.0,
    )


def _float_state(module: LightningModule) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _without_timings(state: Any) -> Any:
    """``state`` (an algorithm state, a history) with every wall-clock entry of its mappings
    (keys ``*_s``, ``*seconds*``) dropped, at any depth.

    Durations differ between any two runs; everything else must match.
    """
    if isinstance(state, Mapping):
        return {
            k: _without_timings(v)
            for k, v in state.items()
            if not (isinstance(k, str) and (k.endswith("_s") or "seconds" in k))
        }
    if isinstance(state, list | tuple):
        return type(state)(_without_timings(v) for v in state)
    return state


def _training_loss(module: LightningModule, batch: Any) -> Tensor:
    """``module.training_step(batch, 0)``'s loss, with ``self.log`` captured."""
    with capture_logs(module, LogSink()):
        out = module.training_step(batch, 0)
    loss = out["loss"] if isinstance(out, Mapping) else out
    if not isinstance(loss, Tensor):
        raise ValueError(
            f"{type(module).__name__}.training_step returned {type(out).__name__}; the tester "
            "needs a loss tensor (or a dict with 'loss')"
        )
    return loss


# ---------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class MessageRecord:
    """One message that crossed the wire, as a callback saw it.

    Attributes:
        round: The round the trainer dispatched it for.
        open_round: The round in progress when it crossed (``None`` outside a round, e.g.
            an exchange during ``setup``).
        client: The client it went to or came from.
        direction: ``"down"`` (server -> client) or ``"up"``.
        nbytes: What the message reports (``message.nbytes``).
        payload_bytes: Its bytes counted here: every encoded part's and extra's
            ``numel * element_size`` plus 8 per scalar.
        tensors: Names of the encoded tensors.
        extras: Names of the extras.
        scalars: Names of the scalars.
    """

    round: int
    open_round: int | None
    client: int
    direction: Direction
    nbytes: int
    payload_bytes: int
    tensors: tuple[str, ...]
    extras: tuple[str, ...]
    scalars: tuple[str, ...]


class MessageRecorder(Callback):
    """Records every message (:class:`MessageRecord`) and every round's selected clients.

    Attributes:
        records: The messages, in the order they crossed.
        selected: Round -> the clients that trained in it (``on_client_fit_start``).
    """

    def __init__(self) -> None:
        self.records: list[MessageRecord] = []
        self.selected: dict[int, list[int]] = {}
        self._open: int | None = None

    @override
    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        self._open = round

    @override
    def on_round_end(self, trainer: FederatedTrainer, round: int) -> None:
        self._open = None

    @override
    def on_client_fit_start(self, trainer: FederatedTrainer, round: int, client: int) -> None:
        self.selected.setdefault(round, []).append(client)

    @override
    def on_message(
        self,
        trainer: FederatedTrainer,
        round: int,
        client: int,
        direction: Direction,
        message: Message,
    ) -> None:
        parts = sum(
            t.numel() * t.element_size() for p in message.parts.values() for t in p.values()
        )
        extras = sum(t.numel() * t.element_size() for t in message.extras.values())
        self.records.append(
            MessageRecord(
                round=round,
                open_round=self._open,
                client=client,
                direction=direction,
                nbytes=int(message.nbytes),
                payload_bytes=parts + extras + _SCALAR_BYTES * len(message.scalars),
                tensors=tuple(message.names),
                extras=tuple(message.extras),
                scalars=tuple(message.scalars),
            )
        )

    def bytes(self, direction: Direction, rounds: Collection[int | None] | None = None) -> int:
        """Sum of ``nbytes`` of the messages going ``direction``.

        Args:
            direction: ``"down"`` or ``"up"``.
            rounds: Only messages that crossed while one of these rounds was open (``None``
                in it: outside rounds); all messages by default.

        Returns:
            The bytes.
        """
        return sum(
            r.nbytes
            for r in self.records
            if r.direction == direction and (rounds is None or r.open_round in rounds)
        )


# ---------------------------------------------------------------------------- the tester


class AlgorithmTester:
    """Checks the properties every federated algorithm should have, on tiny fits.

    Every check builds fresh objects from the factories (the model under
    ``torch.manual_seed(seed)``), runs on the CPU by default, and raises ``AssertionError``
    naming what differed and by how much. Checks that do not apply to an algorithm are
    switched by the flags below; :meth:`run_all` runs those that apply.

    Args:
        make_algorithm: Builds the algorithm under test (called once per fit).
        make_model: Builds the global model. Default: :func:`tiny_classifier`, with a
            BatchNorm layer when the algorithm keeps client state (``stateful_clients``,
            e.g. ``local_bn=True``), so that client state matters.
        make_datamodule: Builds the federated data. Default: :func:`tiny_datamodule`. The
            SGD checks re-split its first ``sum(sizes)`` training samples.
        reduces_to_sgd: Round 1 of the algorithm with one local full-batch step is FedAvg's
            (FedAvg, FedProx at any ``mu``, local BatchNorm...): enables
            :meth:`check_centralized_sgd`. The model's optimizer must then be
            ``torch.optim.SGD`` without weight decay or Nesterov.
        sample_weighted: The round-1 aggregate is the sample-weighted mean of the clients'
            models: enables :meth:`check_sample_weighting` (default: ``reduces_to_sgd``).
        plain_messages: Every message is the shared state, uncoded: down exactly the shared
            tensors' bytes, up those plus 8 for the sample count (FedAvg, FedProx with the
            Identity codec): :meth:`check_bytes` then also counts them by hand.
        stacks: The vectorized executor can stack this algorithm on this model: enables
            :meth:`check_runs_stacked`.
        proximal: Name of the constructor argument that is the coefficient of a proximal
            loss term (``"mu"`` for FedProx): enables :meth:`check_proximal`.
        rounds: Rounds of the multi-round checks (>= 2; resume stops half way).
        clients_per_round: Clients per round of the multi-round checks (default: half the
            clients, rounded up; the selection check uses fewer than all in any case).
        local_epochs: Local epochs of the multi-round checks.
        seed: Trainer seed and model seed.
        sizes: Client sizes of :meth:`check_sample_weighting` (unequal, so that weighting
            matters).
        atol: Absolute tolerance of the hand-computed SGD checks (relative: 1e-5).
        stacked_atol: Tolerance between executors where a round trained stacked (else the
            comparison is exact).
        trainer_kwargs: Extra ``FederatedTrainer`` arguments for every fit (each check's
            own settings, e.g. rounds in the resume check, take precedence).

    Raises:
        ValueError: For settings out of range.

    Example:
        >>> from fedlightning.algorithms import FedAvg
        >>> tester = AlgorithmTester(FedAvg, reduces_to_sgd=True, plain_messages=True)
        >>> tester.check_sample_weighting()  # doctest: +SKIP
    """

    def __init__(
        self,
        make_algorithm: Callable[[], Algorithm],
        *,
        make_model: Callable[[], LightningModule] | None = None,
        make_datamodule: Callable[[], FederatedDataModule] | None = None,
        reduces_to_sgd: bool = False,
        sample_weighted: bool | None = None,
        plain_messages: bool = False,
        stacks: bool = False,
        proximal: str | None = None,
        rounds: int = 3,
        clients_per_round: int | None = None,
        local_epochs: int = 1,
        seed: int = 0,
        sizes: Sequence[int] = (10, 30, 60),
        atol: float = SGD_ATOL,
        stacked_atol: float = STACKED_ATOL,
        trainer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(rounds, int) or rounds < 2:
            raise ValueError(
                f"rounds must be an integer >= 2 (resume stops half way), got {rounds!r}"
            )
        if clients_per_round is not None and clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {clients_per_round!r}")
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes) or len(set(sizes)) < 2:
            raise ValueError(f"sizes must hold >= 2 unequal client sizes >= 1, got {list(sizes)}")
        self.make_algorithm = make_algorithm
        if make_model is None:
            batchnorm = bool(make_algorithm().stateful_clients)

            def make_model() -> LightningModule:
                return tiny_classifier(batchnorm=batchnorm)

        self.make_model: Callable[[], LightningModule] = make_model
        self.make_datamodule: Callable[[], FederatedDataModule] = (
            make_datamodule if make_datamodule is not None else tiny_datamodule
        )
        self.reduces_to_sgd = reduces_to_sgd
        self.sample_weighted = reduces_to_sgd if sample_weighted is None else sample_weighted
        self.plain_messages = plain_messages
        self.stacks = stacks
        self.proximal = proximal
        self.rounds = rounds
        self.clients_per_round = clients_per_round
        self.local_epochs = local_epochs
        self.seed = seed
        self.sizes = tuple(int(s) for s in sizes)
        self.atol = float(atol)
        self.rtol = SGD_RTOL
        self.stacked_atol = float(stacked_atol)
        self.trainer_kwargs = dict(trainer_kwargs or {})

    # ------------------------------------------------------------------ building blocks
    def model(self) -> LightningModule:
        """A fresh model, built under ``torch.manual_seed(seed)`` (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.make_model()

    def fit(
        self,
        *,
        algorithm: Algorithm | None = None,
        model: LightningModule | None = None,
        datamodule: FederatedDataModule | None = None,
        callbacks: Sequence[Callback] | None = None,
        **settings: Any,
    ) -> FederatedTrainer:
        """Fit fresh objects (or those given) with the tester's settings and return the trainer.

        Args:
            algorithm: Default: ``make_algorithm()``.
            model: Default: :meth:`model`.
            datamodule: Default: ``make_datamodule()``.
            callbacks: Federated callbacks.
            **settings: ``FederatedTrainer`` arguments over the tester's.

        Returns:
            The trainer after ``fit``.
        """
        data = datamodule if datamodule is not None else self.make_datamodule()
        data.setup()
        kwargs: dict[str, Any] = {
            "rounds": self.rounds,
            "clients_per_round": self._per_round(data.num_clients),
            "local_epochs": self.local_epochs,
            "seed": self.seed,
            "eval_every": None,
            "accelerator": "cpu",
            "progress_bar": False,
            "logger": None,
        }
        kwargs.update(self.trainer_kwargs)
        kwargs.update(settings)
        if kwargs.get("fraction") is not None and "clients_per_round" not in settings:
            kwargs["clients_per_round"] = None
        trainer = FederatedTrainer(
            algorithm=algorithm if algorithm is not None else self.make_algorithm(),
            callbacks=callbacks,
            **kwargs,
        )
        trainer.fit(model if model is not None else self.model(), data)
        return trainer

    def _per_round(self, num_clients: int) -> int:
        if self.clients_per_round is not None:
            return min(self.clients_per_round, num_clients)
        return max(1, math.ceil(num_clients / 2))

    def _sized_datamodule(self, sizes: Sequence[int]) -> FederatedDataModule:
        """The first ``sum(sizes)`` training samples of ``make_datamodule()``, client ``i``
        holding the ``i``-th contiguous slice; one batch is a client's whole data."""
        base = self.make_datamodule()
        base.setup()
        pairs = [base.client_data(c) for c in base.client_ids]
        x = torch.cat([p[0] for p in pairs])
        y = torch.cat([p[1] for p in pairs])
        need = sum(sizes)
        if len(x) < need:
            raise ValueError(
                f"the SGD checks need {need} training samples (sizes={list(sizes)}), "
                f"make_datamodule() has {len(x)}"
            )
        test = None
        if base.has_test:
            batches = list(base.test_loader())
            test = (torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
        return FederatedDataModule(
            (x[:need], y[:need]),
            partition=_Sizes(tuple(sizes)),
            batch_size=max(sizes),
            test=test,
            seed=0,
            num_classes=int(base.num_classes),
        )

    def _learning_rates(self, module: LightningModule) -> dict[str, float]:
        """Parameter name -> SGD learning rate, refusing optimizers where one step is not
        ``w - lr * grad``."""
        setup = parse_optimizers(module.configure_optimizers(), type(module).__name__)
        optimizer = setup.optimizer
        if type(optimizer) is not torch.optim.SGD:
            raise ValueError(
                "the SGD checks need a model whose configure_optimizers returns "
                f"torch.optim.SGD (one step is then w - lr * grad); got {type(optimizer).__name__}"
                ": pass make_model with plain SGD, or reduces_to_sgd=False"
            )
        names = {id(p): n for n, p in module.named_parameters()}
        rates: dict[str, float] = {}
        for group in optimizer.param_groups:
            if group.get("weight_decay", 0.0) or group.get("nesterov") or group.get("maximize"):
                options = {k: v for k, v in group.items() if k != "params"}
                raise ValueError(
                    "the SGD checks need SGD without weight_decay, nesterov or maximize (one "
                    f"step is then w - lr * grad); got {options}"
                )
            for p in group["params"]:
                rates[names[id(p)]] = float(group["lr"])
        return rates

    def _sgd_step(self, initial: LightningModule, batch: Any) -> dict[str, Tensor]:
        """The state after one full-batch SGD step from ``initial`` (a copy), by hand.

        Parameters are ``w - lr * grad`` in float64; buffers are what the training-mode
        forward pass left (BatchNorm statistics).
        """
        module = copy.deepcopy(initial)
        module.train()
        rates = self._learning_rates(module)
        loss = _training_loss(module, batch)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        for (name, param), grad in zip(named, grads, strict=True):
            value = param.detach().double()
            if grad is not None and name in rates:
                value = value - rates[name] * grad.double()
            state[name] = value
        return state

    @staticmethod
    def _expected_global(
        initial: Mapping[str, Tensor],
        local: Sequence[tuple[Mapping[str, Tensor], int]],
        shared: Collection[str],
        *,
        weighted: bool,
    ) -> dict[str, Tensor]:
        """``w0 + sum_i s_i (w_i - w0)`` over the shared keys (``s_i`` the sample shares,
        or ``1/K`` unweighted), in float64 and cast back; other keys stay ``w0``."""
        total = float(sum(n for _, n in local))
        shares = [(n / total) if weighted else 1.0 / len(local) for _, n in local]
        out: dict[str, Tensor] = {}
        for key, w0 in initial.items():
            if key not in shared:
                out[key] = w0.clone()
                continue
            acc = torch.zeros_like(w0, dtype=torch.float64)
            for share, (state, _) in zip(shares, local, strict=True):
                acc = acc + share * state[key].double()
            if w0.is_floating_point():
                out[key] = acc.to(w0.dtype)
            else:
                out[key] = acc.round().to(w0.dtype)
        return out

    # ------------------------------------------------------------------ the checks
    def check_centralized_sgd(self) -> None:
        """One client holding all the data, one full-batch local step: the global model after
        round 1 is one step of centralized SGD, ``w - lr * grad``, computed here by hand.

        Keys the algorithm keeps local (``shared_keys`` excludes them) must be unchanged.

        Raises:
            AssertionError: Naming every tensor that differs and by how much.
            ValueError: If the model's optimizer is not plain SGD.
        """
        total = sum(self.sizes)
        data = self._sized_datamodule((total,))
        model = self.model()
        initial = copy.deepcopy(model)
        initial_state = _float_state(initial)
        trainer = self.fit(
            model=model,
            datamodule=data,
            rounds=1,
            clients_per_round=None,
            fraction=None,
            local_epochs=None,
            local_steps=1,
        )
        stepped = self._sgd_step(initial, data.client_data(0))
        shared = set(trainer.algorithm.shared_keys)
        expected = self._expected_global(initial_state, [(stepped, total)], shared, weighted=True)
        moved = _max_abs_diff(initial_state, expected)
        if moved <= 100 * self.atol:
            raise AssertionError(
                f"check_centralized_sgd is not conclusive: one SGD step moves the weights by "
                f"only {moved:.3g} (tolerance {self.atol:g}); use a larger learning rate"
            )
        assert_same_state(
            expected,
            _float_state(trainer.global_model),
            atol=self.atol,
            rtol=self.rtol,
            where=(
                f"{type(trainer.algorithm).__name__}: global model after round 1 (1 client, "
                f"{total} samples, 1 full-batch step) vs one centralized SGD step by hand"
            ),
        )

    def check_sample_weighting(self) -> None:
        """Clients of unequal sizes, one full-batch step each, one round: the global model is
        the sample-weighted mean of the clients' models, each trained here by hand.

        Raises:
            AssertionError: Naming every tensor that differs, and how far the global model
                is from the weighted and from the unweighted mean; also when the data make
                the two means too close to tell apart.
            ValueError: If the model's optimizer is not plain SGD.
        """
        data = self._sized_datamodule(self.sizes)
        model = self.model()
        initial = copy.deepcopy(model)
        initial_state = _float_state(initial)
        trainer = self.fit(
            model=model,
            datamodule=data,
            rounds=1,
            clients_per_round=None,
            fraction=None,
            local_epochs=None,
            local_steps=1,
        )
        local = [
            (self._sgd_step(initial, data.client_data(c)), data.num_samples(c))
            for c in data.client_ids
        ]
        shared = set(trainer.algorithm.shared_keys)
        weighted = self._expected_global(initial_state, local, shared, weighted=True)
        unweighted = self._expected_global(initial_state, local, shared, weighted=False)
        gap = _max_abs_diff(weighted, unweighted)
        if gap <= 100 * self.atol:
            raise AssertionError(
                f"check_sample_weighting is not conclusive: with sizes {list(self.sizes)} the "
                f"weighted and unweighted means differ by only {gap:.3g} (tolerance "
                f"{self.atol:g}); use clients with more different data or a larger lr"
            )
        actual = _float_state(trainer.global_model)
        problems: list[str] = []
        _differences(weighted, actual, "global", self.atol, self.rtol, problems)
        if problems:
            raise AssertionError(
                _report(
                    f"{type(trainer.algorithm).__name__}: the global model after one round of "
                    f"clients with {list(self.sizes)} samples is not the sample-weighted mean "
                    f"of their models (max distance {_max_abs_diff(weighted, actual):.3g} to "
                    f"the weighted mean, {_max_abs_diff(unweighted, actual):.3g} to the "
                    "unweighted mean)",
                    problems,
                )
            )

    def check_selection_varies(self, rounds: int = 5) -> None:
        """With fewer clients per round than clients, the selected sets change over the
        rounds, are the same for the same seed, and change with the seed.

        Args:
            rounds: Rounds of each run (>= 2).

        Raises:
            AssertionError: Showing the selections that broke the rule.
            ValueError: If the datamodule has fewer than 2 clients.
        """
        probe = self.make_datamodule()
        probe.setup()
        n = probe.num_clients
        if n < 2:
            raise ValueError(f"check_selection_varies needs >= 2 clients, the data have {n}")
        k = self._per_round(n)
        if k >= n:
            k = max(1, n // 2)

        def selections(seed: int) -> list[tuple[int, ...]]:
            recorder = MessageRecorder()
            self.fit(
                rounds=rounds,
                clients_per_round=k,
                fraction=None,
                local_epochs=None,
                local_steps=1,
                seed=seed,
                callbacks=[recorder],
            )
            return [tuple(recorder.selected.get(r, [])) for r in range(1, rounds + 1)]

        name = type(self.make_algorithm()).__name__
        first = selections(self.seed)
        for r, chosen in enumerate(first, 1):
            assert len(chosen) == k and len(set(chosen)) == k, (
                f"{name}: round {r} trained clients {list(chosen)}, expected {k} distinct "
                f"clients (clients_per_round={k})"
            )
            assert set(chosen) <= set(probe.client_ids), (
                f"{name}: round {r} selected {list(chosen)}, not all in {probe.client_ids}"
            )
        assert len(set(first)) > 1, (
            f"{name}: the same clients {list(first[0])} were selected in all {rounds} rounds "
            f"({k} of {n} per round, seed {self.seed}): the selection ignores the round"
        )
        again = selections(self.seed)
        assert again == first, (
            f"{name}: two runs with seed {self.seed} selected different clients: "
            f"{[list(s) for s in first]} then {[list(s) for s in again]}"
        )
        other = selections(self.seed + 1)
        assert other != first, (
            f"{name}: seeds {self.seed} and {self.seed + 1} selected the same clients in every "
            f"round: {[list(s) for s in first]}; the selection ignores the seed"
        )

    def check_resume(self, stop_after: int | None = None) -> None:
        """A run stopped after ``stop_after`` rounds and resumed from its checkpoint ends
        where an uninterrupted run does: global model, algorithm state, server optimizer
        state and client states bit for bit, the same history and the same byte totals
        (wall-clock entries, keys ending in ``_s`` or naming ``seconds``, aside in the
        algorithm state and the history).

        Args:
            stop_after: Rounds before the stop (default: half of ``rounds``), in
                ``[1, rounds)``.

        Raises:
            AssertionError: Listing every part that differs.
            ValueError: For ``stop_after`` out of range.
        """
        total = self.rounds
        k = stop_after if stop_after is not None else max(1, total // 2)
        if not 1 <= k < total:
            raise ValueError(f"stop_after must be in [1, {total}), got {k}")
        full = self.fit(rounds=total)
        with tempfile.TemporaryDirectory(prefix="fedlightning-resume-") as folder:
            self.fit(rounds=k, output_dir=folder, checkpoint_every=1)
            checkpoint = Path(folder) / "checkpoints" / "last.ckpt"
            assert checkpoint.is_file(), f"no checkpoint at {checkpoint} after {k} rounds"
            resumed = self.fit(rounds=total, output_dir=folder, resume=checkpoint)
        name = type(full.algorithm).__name__
        problems: list[str] = []
        if full.algorithm.stateful_clients and not full.client_states:
            problems.append(
                f"{name}.stateful_clients is True but trainer.client_states is empty after "
                f"{total} rounds"
            )
        pairs: list[tuple[str, Any, Any]] = [
            ("global model", _float_state(full.global_model), _float_state(resumed.global_model)),
            (
                "algorithm.state_dict()",
                _without_timings(full.algorithm.state_dict()),
                _without_timings(resumed.algorithm.state_dict()),
            ),
            (
                "algorithm.server_optimizer_state()",
                full.algorithm.server_optimizer_state(),
                resumed.algorithm.server_optimizer_state(),
            ),
            ("trainer.client_states", full.client_states, resumed.client_states),
            ("history", _without_timings(full.history), _without_timings(resumed.history)),
            ("results['bytes']", full.results.get("bytes"), resumed.results.get("bytes")),
            ("drops", full.drops, resumed.drops),
        ]
        for where, expected, actual in pairs:
            _differences(expected, actual, where, 0.0, 0.0, problems)
        if problems:
            raise AssertionError(
                _report(
                    f"{name}: a run stopped after round {k} and resumed to round {total} "
                    f"differs from an uninterrupted {total}-round run",
                    problems,
                )
            )

    def check_executors(self, executors: Sequence[ExecutorSpec] = ("vectorized", "auto")) -> None:
        """Every executor ends where the sequential one does: global model, algorithm state,
        client states, drops and history; exactly, or within ``stacked_atol`` where rounds
        trained stacked (bytes always exactly).

        Args:
            executors: Names, executors or executor factories (a fresh one per call is
                best; an instance is reused as is).

        Raises:
            AssertionError: Naming the executor and every part that differs.
        """
        reference = self.fit(executor="sequential")
        name = type(reference.algorithm).__name__
        for spec in executors:
            executor = spec if isinstance(spec, (str, Executor)) else spec()
            out = self.fit(executor=executor)
            stacked = stacked_rounds(out.executor)
            atol = self.stacked_atol if stacked else 0.0
            problems: list[str] = []
            pairs: list[tuple[str, Any, Any]] = [
                (
                    "global model",
                    _float_state(reference.global_model),
                    _float_state(out.global_model),
                ),
                (
                    "algorithm.state_dict()",
                    reference.algorithm.state_dict(),
                    out.algorithm.state_dict(),
                ),
                ("trainer.client_states", reference.client_states, out.client_states),
                ("history", _without_timings(reference.history), _without_timings(out.history)),
            ]
            for where, expected, actual in pairs:
                _differences(expected, actual, where, atol, atol, problems)
            _differences(reference.drops, out.drops, "drops", 0.0, 0.0, problems)
            _differences(
                reference.results.get("bytes"),
                out.results.get("bytes"),
                "bytes",
                0.0,
                0.0,
                problems,
            )
            if problems:
                how = f"{stacked} stacked rounds, atol {atol:g}" if stacked else "exact"
                raise AssertionError(
                    _report(
                        f"{name}: executor {out.executor.name!r} ({how}) differs from the "
                        "sequential executor",
                        problems,
                    )
                )

    def check_runs_stacked(self, vmap_losses: Sequence[type[Algorithm]] = ()) -> None:
        """Under the vectorized executor every round really trains the clients stacked (no
        round falls back to the sequential loop).

        Args:
            vmap_losses: Algorithm classes whose loss hook is declared safe to vmap.

        Raises:
            AssertionError: With the executor's reasons for falling back.
        """
        from fedlightning.executors.vectorized import VectorizedExecutor

        executor = VectorizedExecutor(vmap_losses=vmap_losses)
        trainer = self.fit(executor=executor)
        stacked = stacked_rounds(executor)
        reasons = sorted({reason for _, reason in executor.fallbacks})
        assert not executor.fallbacks and stacked == trainer.rounds, (
            f"{type(trainer.algorithm).__name__} on {type(trainer.global_model).__name__}: "
            f"{stacked} of {trainer.rounds} rounds trained stacked; rounds "
            f"{[r for r, _ in executor.fallbacks]} fell back to the sequential loop because: "
            f"{reasons}"
        )

    def check_bytes(self) -> None:
        """The bytes the trainer records equal those of the messages a callback saw.

        Per round, ``bytes_down`` / ``bytes_up`` of the history are the sums of
        ``message.nbytes`` of the messages that crossed during the round, the ``*_total``
        entries their running sums (exchanges outside rounds included), and
        ``results['bytes']`` the run's totals, per client too. Every message's ``nbytes`` is
        its payload counted here. With ``plain_messages``, each message's bytes are also
        the shared state's, counted from the model (plus 8 for the sample count up).

        Raises:
            AssertionError: Listing every figure that differs, with both values.
        """
        recorder = MessageRecorder()
        trainer = self.fit(callbacks=[recorder])
        name = type(trainer.algorithm).__name__
        problems: list[str] = []
        if not any(isinstance(c, CommCost) for c in trainer.callbacks):
            problems.append("no CommCost callback in the trainer")
        records = recorder.records
        if not records:
            problems.append("no message crossed the wire")
        for record in records:
            if record.nbytes != record.payload_bytes:
                problems.append(
                    f"round {record.round} client {record.client} {record.direction}: "
                    f"message.nbytes={record.nbytes}, its payload counted by hand is "
                    f"{record.payload_bytes}"
                )
        running = {"down": 0, "up": 0}
        seen: set[int | None] = {None}
        for entry in trainer.history:
            rnd = int(entry["round"])
            seen.add(rnd)
            for direction in _DIRECTIONS:
                counted = recorder.bytes(direction, {rnd})
                running[direction] = recorder.bytes(direction, seen)
                for key, value in (
                    (f"bytes_{direction}", counted),
                    (f"bytes_{direction}_total", running[direction]),
                ):
                    if entry.get(key) != value:
                        problems.append(
                            f"round {rnd}: history {key}={entry.get(key)}, the messages sum to "
                            f"{value}"
                        )
            if entry.get("bytes_total") != running["down"] + running["up"]:
                problems.append(
                    f"round {rnd}: history bytes_total={entry.get('bytes_total')}, the messages "
                    f"sum to {running['down'] + running['up']}"
                )
        summary = trainer.results.get("bytes", {})
        totals = {"down": recorder.bytes("down"), "up": recorder.bytes("up")}
        totals["total"] = totals["down"] + totals["up"]
        for key, value in totals.items():
            if summary.get(key) != value:
                problems.append(f"results['bytes'][{key!r}]={summary.get(key)}, messages: {value}")
        per_client: dict[str, dict[str, int]] = {}
        for record in records:
            entry_ = per_client.setdefault(str(record.client), {"down": 0, "up": 0})
            entry_[record.direction] += record.nbytes
        _differences(
            per_client,
            summary.get("per_client", {}),
            "results['bytes']['per_client']",
            0,
            0,
            problems,
        )
        if self.plain_messages:
            problems += self._plain_message_problems(trainer, records)
        if problems:
            raise AssertionError(_report(f"{name}: byte counts do not add up", problems))

    @staticmethod
    def _plain_message_problems(
        trainer: FederatedTrainer, records: Sequence[MessageRecord]
    ) -> list[str]:
        state = trainer.global_model.state_dict()
        shared = list(trainer.algorithm.shared_keys)
        state_bytes = sum(state[k].numel() * state[k].element_size() for k in shared)
        problems: list[str] = []
        for record in records:
            where = f"round {record.round} client {record.client} {record.direction}"
            if set(record.tensors) != set(shared) or record.extras:
                problems.append(
                    f"{where}: tensors {sorted(record.tensors)[:4]}... extras "
                    f"{list(record.extras)}; expected the {len(shared)} shared keys, no extras"
                )
            scalars = ("num_samples",) if record.direction == "up" else ()
            expected = state_bytes + _SCALAR_BYTES * len(scalars)
            if record.nbytes != expected or record.scalars != scalars:
                problems.append(
                    f"{where}: {record.nbytes} bytes with scalars {list(record.scalars)}; "
                    f"the shared state is {state_bytes} bytes, so expected {expected} with "
                    f"scalars {list(scalars)}"
                )
        return problems

    def check_config(self) -> None:
        """Every constructor argument is recorded, and a changed argument changes the config.

        ``settings`` names every parameter of the class's ``__init__`` (its parents'
        included where ``**kwargs`` reach them); ``config`` holds them all, is JSON, and is
        the same for two algorithms of the factory; ``results.json``'s
        ``config['algorithm']`` is that config; and rebuilding the algorithm with one
        boolean or numeric argument changed (negated, +1 or halved; those the constructor
        refuses are skipped) changes its config.

        Raises:
            AssertionError: Naming the missing or unchanged arguments.
        """
        algorithm = self.make_algorithm()
        cls = type(algorithm)
        name = cls.__name__
        params = [p.name for p in init_parameters(cls)]
        settings = algorithm.settings
        missing = [p for p in params if p not in settings]
        assert not missing, (
            f"{name}.settings lacks constructor arguments {missing} (has {sorted(settings)})"
        )
        config = algorithm.config
        assert config.get("class") == f"{cls.__module__}.{cls.__qualname__}", (
            f"{name}.config['class'] is {config.get('class')!r}"
        )
        missing = [p for p in params if p not in config]
        assert not missing, f"{name}.config lacks constructor arguments {missing}"
        try:
            as_json = json.loads(json.dumps(config))
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{name}.config is not JSON: {exc}") from exc
        twin = self.make_algorithm().config
        assert twin == config, (
            f"two {name} objects built by the same factory have different configs (a setting "
            f"whose repr holds an object address? resume compares repr(algorithm)): "
            f"{_changed(config, twin)}"
        )
        with tempfile.TemporaryDirectory(prefix="fedlightning-config-") as folder:
            self.fit(algorithm=algorithm, rounds=1, output_dir=folder, checkpoint_every=None)
            results = json.loads((Path(folder) / "results.json").read_text())
        recorded = results.get("config", {}).get("algorithm", {})
        missing = [p for p in params if p not in recorded]
        assert not missing, f"results.json config['algorithm'] lacks {name} arguments {missing}"
        assert recorded == as_json, (
            f"results.json config['algorithm'] differs from {name}.config: "
            f"{_changed(as_json, recorded)}"
        )
        unchanged: list[str] = []
        for param in params:
            value = settings.get(param)
            changed = _perturb(value)
            if changed is None:
                continue
            try:
                variant = _rebuild(algorithm, **{param: changed})
            except (TypeError, ValueError):
                continue  # the constructor refuses this value
            if variant.config == config or variant.config.get(param) == config.get(param):
                unchanged.append(f"{param}: {value!r} -> {changed!r}")
        assert not unchanged, (
            f"{name} built with one argument changed has the same config: {unchanged}"
        )

    def check_proximal(self, mu_values: Sequence[float] = (0.0, 0.5, 2.0)) -> None:
        """The loss hook adds ``mu/2 ||w - w0||^2`` for every ``mu``, with gradient
        ``mu (w - w0)``, and nothing at the anchor.

        The algorithm is rebuilt from its settings with the coefficient (the constructor
        argument named by ``proximal``) set to each value; its client half configures a
        fresh model with the anchor ``w0`` (the model's own state), the model is displaced
        from it, and the hook's added loss on a batch is compared with the formula.

        Args:
            mu_values: Coefficients to try.

        Raises:
            AssertionError: Naming ``mu`` and the added loss (or gradient) against the formula.
            ValueError: Without ``proximal`` (the coefficient's argument name).
        """
        if self.proximal is None:
            raise ValueError(
                "check_proximal needs the name of the coefficient argument: "
                "AlgorithmTester(..., proximal='mu')"
            )
        base = self.make_algorithm()
        data = self.make_datamodule()
        data.setup()
        client = data.client_ids[0]
        batch = next(iter(data.train_loader(client, seed=self.seed)))
        name = type(base).__name__
        for mu in mu_values:
            half = _rebuild(base, **{self.proximal: mu}).client_half()
            model = self.model()
            model.train()
            anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ctx = ClientContext(
                client=client,
                round=1,
                message=Message.of_state(model, anchor),
                received=anchor,
                num_samples=data.num_samples(client),
                seed=self.seed,
                data=data,
            )
            module = half.configure_client(ctx, model)
            added, _ = _added_loss(half, ctx, module, batch)
            assert abs(added) <= 1e-7, (
                f"{name}({self.proximal}={mu}): at the anchor the loss hook adds {added:.6g}, "
                "expected 0"
            )
            generator = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                for param in module.parameters():
                    param.add_(0.1 * torch.randn(param.shape, generator=generator))
            anchored = [(n, p) for n, p in module.named_parameters() if n in anchor]
            assert anchored, f"{name}: no parameter of the model is in the anchor"
            distance = sum(
                float(((p.detach().double() - anchor[n].double()) ** 2).sum()) for n, p in anchored
            )
            expected = 0.5 * mu * distance
            added, grads = _added_loss(half, ctx, module, batch)
            assert math.isclose(added, expected, rel_tol=1e-5, abs_tol=1e-7), (
                f"{name}({self.proximal}={mu}): the loss hook adds {added:.6g} with "
                f"||w - w0||^2 = {distance:.6g}; mu/2 ||w - w0||^2 = {expected:.6g} "
                f"(ratio {added / expected if expected else float('nan'):.4g})"
            )
            problems: list[str] = []
            for (param_name, param), grad in zip(anchored, grads, strict=True):
                want = mu * (param.detach().double() - anchor[param_name].double())
                got = torch.zeros_like(want) if grad is None else grad.double()
                if not torch.allclose(got, want, rtol=1e-5, atol=1e-7):
                    problems.append(
                        f"{param_name}: max |grad - mu (w - w0)| = "
                        f"{float((got - want).abs().max()):.3g}"
                    )
            if problems:
                raise AssertionError(
                    _report(
                        f"{name}({self.proximal}={mu}): the gradient of the added loss is not "
                        "mu (w - w0)",
                        problems,
                    )
                )

    def applicable_checks(self, skip: Collection[str] = ()) -> list[str]:
        """The names of the checks that apply (per the constructor's flags), in run order.

        Args:
            skip: Names of checks to leave out.

        Returns:
            Method names, e.g. ``["check_config", "check_selection_varies", ...]``.

        Raises:
            ValueError: If ``skip`` names an unknown check.
        """
        plan: list[tuple[str, bool]] = [
            ("check_config", True),
            ("check_proximal", self.proximal is not None),
            ("check_centralized_sgd", self.reduces_to_sgd),
            ("check_sample_weighting", self.sample_weighted),
            ("check_selection_varies", True),
            ("check_bytes", True),
            ("check_resume", True),
            ("check_executors", True),
            ("check_runs_stacked", self.stacks),
        ]
        unknown = set(skip) - {name for name, _ in plan}
        if unknown:
            raise ValueError(
                f"skip names unknown checks {sorted(unknown)}; the checks are "
                f"{[name for name, _ in plan]}"
            )
        return [name for name, applies in plan if applies and name not in skip]

    def run_all(self, skip: Collection[str] = ()) -> list[str]:
        """Run every check that applies (:meth:`applicable_checks`), in order.

        Args:
            skip: Names of checks not to run (e.g. ``{"check_selection_varies"}`` for an
                algorithm that selects every client on purpose).

        Returns:
            The names of the checks that ran (all passed).

        Raises:
            AssertionError: From the first check that fails.
        """
        ran: list[str] = []
        for check in self.applicable_checks(skip):
            getattr(self, check)()
            ran.append(check)
        return ran


def _added_loss(
    half: Algorithm, ctx: ClientContext, module: LightningModule, batch: Any
) -> tuple[float, list[Tensor | None]]:
    """What ``training_loss`` adds to the module's loss on ``batch``, and its gradient with
    respect to the anchored parameters."""
    loss = _training_loss(module, batch)
    added = half.training_loss(ctx, module, batch, loss) - loss
    anchored = [p for n, p in module.named_parameters() if n in ctx.received]
    if added.requires_grad:
        return float(added.detach()), list(torch.autograd.grad(added, anchored, allow_unused=True))
    return float(added.detach()), [None for _ in anchored]


def _changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Key -> (value in ``a``, value in ``b``) for every key whose values differ."""
    return {k: (a.get(k), b.get(k)) for k in {**a, **b} if a.get(k) != b.get(k)}


def _perturb(value: Any) -> Any:
    """A different value of the same simple type (bool negated, int + 1, float halved or
    0.5), or ``None`` for anything else."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value != 0.0 else 0.5
    return None
