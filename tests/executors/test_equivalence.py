"""Every executor gives the sequential executor's run: one shared check, every algorithm.

For each executor (``vectorized``, ``auto``, ``ray``) and each algorithm (FedAvg, FedProx,
CommunityFedAvg, FedFSNet, FedMorph, FedDropout, FedPruned), a fit from the same seed must
end with the sequential executor's global model and algorithm state, the same per-round
``history`` (``train_loss``, the bytes CommCost logs, everything else), the same reply
metrics per client and the same client callbacks, in the same order.

The FedAvg workload trains :class:`HookRecorder`, a module that records every Lightning
training hook it is called with twice: in this process (:data:`JOURNAL`, which only sees
clients that train here) and through ``self.log`` (one uniquely named metric per call), so
the sequence of calls travels back in each client's reply from wherever the client trained,
Ray actors included. The hook tests check that sequence against Lightning's order (and
against a real ``lightning.Trainer``), with ``global_step`` and ``current_epoch`` counted
within each client's local run.

Each algorithm's setup is one :class:`Case` (model, data and algorithm factories) in
:data:`CASES`. Runs are cached per (case, executor) so the sequential reference of a case is
trained once. All Ray runs share one local Ray instance (a module-scoped fixture); they come
last in the file so that in-process runs do not share the two CPUs with idle Ray processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.optim import Optimizer

from fedlightning import FederatedTrainer
from fedlightning.algorithms import (
    Algorithm,
    CommunityFedAvg,
    FedAvg,
    FedDropout,
    FedFSNet,
    FedMorph,
    FedProx,
    FedPruned,
)
from fedlightning.algorithms.fsnet import ConstantBeta
from fedlightning.callbacks import Callback
from fedlightning.datamodules import IID, FederatedDataModule
from fedlightning.demos import BoringClassifier
from fedlightning.executors import Executor, SequentialExecutor
from fedlightning.executors.auto import AutoExecutor
from fedlightning.executors.ray import RayExecutor
from fedlightning.executors.vectorized import VectorizedExecutor
from fedlightning.models.masked import MaskedResNet8
from fedlightning.round import Reply
from tests.executors.conftest import fit, image_datamodule, max_abs_diff

# ---------------------------------------------------------------------------- hook recording


@dataclass(frozen=True)
class Call:
    """One hook call: its name, ``batch_idx`` for batch hooks, and for ``training_step`` the
    ``global_step`` and ``current_epoch`` the module saw."""

    hook: str
    batch_idx: int | None = None
    global_step: int | None = None
    current_epoch: int | None = None


JOURNAL: list[Call] = []
"""Every hook call of every :class:`HookRecorder` copy in this process, in order."""


class HookRecorder(BoringClassifier):
    """A BoringClassifier that records each training hook it is called with.

    Recording changes nothing of the maths (no randomness, no parameter touched). With
    ``log_calls`` each call is also logged as ``call/<n>/<hook>`` (value: ``batch_idx`` or
    -1), ``n`` counting from 0 in each local run, and ``training_step`` logs
    ``step/<n>/global_step`` and ``step/<n>/current_epoch``: each name is logged once, so
    the reply's mean of it is the value itself.
    """

    def __init__(self, log_calls: bool = True) -> None:
        super().__init__(in_features=64)
        self.log_calls = log_calls
        self._calls = 0

    def _record(self, hook: str, batch_idx: int | None = None) -> None:
        step = epoch = None
        if hook == "training_step":
            step, epoch = self.global_step, self.current_epoch
        JOURNAL.append(Call(hook, batch_idx, step, epoch))
        if not self.log_calls:
            return
        n = self._calls
        self._calls += 1
        self.log(f"call/{n:03d}/{hook}", float(-1 if batch_idx is None else batch_idx))
        if step is not None:
            self.log(f"step/{n:03d}/global_step", float(step))
            self.log(f"step/{n:03d}/current_epoch", float(epoch or 0))

    def on_fit_start(self) -> None:
        self._calls = 0
        self._record("on_fit_start")

    def on_train_start(self) -> None:
        self._record("on_train_start")

    def on_train_epoch_start(self) -> None:
        self._record("on_train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        self._record("on_train_batch_start", batch_idx)
        return super().on_train_batch_start(batch, batch_idx)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._record("training_step", batch_idx)
        return super().training_step(batch, batch_idx)

    def on_before_zero_grad(self, optimizer: Optimizer) -> None:
        self._record("on_before_zero_grad")

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Optimizer) -> None:
        self._record("optimizer_zero_grad", batch_idx)
        super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_before_backward(self, loss: Tensor) -> None:
        self._record("on_before_backward")

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        self._record("backward")
        super().backward(loss, *args, **kwargs)

    def on_after_backward(self) -> None:
        self._record("on_after_backward")

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        self._record("on_before_optimizer_step")

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        self._record("configure_gradient_clipping")
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record("on_train_batch_end", batch_idx)

    def on_train_epoch_end(self) -> None:
        self._record("on_train_epoch_end")

    def on_train_end(self) -> None:
        self._record("on_train_end")

    def on_fit_end(self) -> None:
        self._record("on_fit_end")


def logged_calls(metrics: Mapping[str, float]) -> list[Call]:
    """The hook calls of one local run, decoded from a reply's metrics."""
    hooks: dict[int, tuple[str, int]] = {}
    steps: dict[int, dict[str, int]] = {}
    for key, value in metrics.items():
        kind, _, rest = key.partition("/")
        if kind in ("call", "step"):
            number, name = rest.split("/")
            if kind == "call":
                hooks[int(number)] = (name, int(value))
            else:
                steps.setdefault(int(number), {})[name] = int(value)
    assert sorted(hooks) == list(range(len(hooks))), "a call number is missing"
    calls = []
    for n in range(len(hooks)):
        hook, batch_idx = hooks[n]
        step = steps.get(n, {})
        calls.append(
            Call(
                hook,
                None if batch_idx < 0 else batch_idx,
                step.get("global_step"),
                step.get("current_epoch"),
            )
        )
    return calls


def lightning_order(num_batches: int, epochs: int) -> list[Call]:
    """The hooks ``lightning.Trainer.fit`` calls for one optimizer, automatic optimization."""
    calls = [Call("on_fit_start"), Call("on_train_start")]
    step = 0
    for epoch in range(epochs):
        calls.append(Call("on_train_epoch_start"))
        for b in range(num_batches):
            calls += [
                Call("on_train_batch_start", b),
                Call("training_step", b, step, epoch),
                Call("on_before_zero_grad"),
                Call("optimizer_zero_grad", b),
                Call("on_before_backward"),
                Call("backward"),
                Call("on_after_backward"),
                Call("on_before_optimizer_step"),
                Call("configure_gradient_clipping"),
                Call("on_train_batch_end", b),
            ]
            step += 1
        calls.append(Call("on_train_epoch_end"))
    return [*calls, Call("on_train_end"), Call("on_fit_end")]


def split_runs(journal: list[Call]) -> list[list[Call]]:
    """The journal cut into local runs (each starts with ``on_fit_start``)."""
    runs: list[list[Call]] = []
    for call in journal:
        if call.hook == "on_fit_start":
            runs.append([])
        runs[-1].append(call)
    return runs


class ClientEvents(Callback):
    """Records ``on_client_fit_start`` / ``on_client_fit_end`` and each reply's metrics."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []
        self.metrics: dict[tuple[int, int], dict[str, float]] = {}

    def on_client_fit_start(self, trainer: FederatedTrainer, round: int, client: int) -> None:
        self.events.append(("start", round, client))

    def on_client_fit_end(self, trainer: FederatedTrainer, round: int, reply: Reply) -> None:
        self.events.append(("end", round, reply.client))
        self.metrics[(round, reply.client)] = dict(reply.metrics)


# ---------------------------------------------------------------------------- the workloads


def subnet_model() -> MaskedResNet8:
    """tests/algorithms/test_subnetwork.py's tiny masked ResNet8 on 12x12 images."""
    widths = {"stem": 6, "s0b0_mid": 6, "s0b0_out": 6, "s1b0_mid": 8, "s1b0_out": 8}
    widths |= {"s2b0_mid": 10, "s2b0_out": 10, "s3b0_mid": 12, "s3b0_out": 12}
    return MaskedResNet8(image_size=12, widths=widths, masked=True, seed=0, lr=0.05)


def subnet_data() -> FederatedDataModule:
    """4 clients of 12 images (2 batches each), 10 classes, 16 test images."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(48, 1, 12, 12, generator=g), torch.randint(0, 10, (48,), generator=g)
    xt, yt = torch.rand(16, 1, 12, 12, generator=g), torch.randint(0, 10, (16,), generator=g)
    return FederatedDataModule((x, y), partition=IID(4), batch_size=6, test=(xt, yt))


def mlp() -> BoringClassifier:
    return BoringClassifier(in_features=64, momentum=0.9)


@dataclass(frozen=True)
class Case:
    """One algorithm's workload.

    Attributes:
        model: Builds the model (called under ``torch.manual_seed(0)``).
        data: Builds the federated datamodule.
        algorithm: Builds the algorithm.
        vectorized_fallback: Part of the reason the vectorized executor gives for running
            the workload sequentially; ``None`` when it stacks the clients.
        settings: ``FederatedTrainer`` arguments beyond :func:`tests.executors.conftest.fit`'s
            defaults (2 rounds, 4 clients per round, 2 local epochs, seed 3).
    """

    model: Callable[[], LightningModule]
    data: Callable[[], FederatedDataModule]
    algorithm: Callable[[], Algorithm]
    vectorized_fallback: str | None
    settings: dict[str, Any] = field(default_factory=dict)


SUBNET = {"clients_per_round": 2, "local_epochs": 1}

CASES: dict[str, Case] = {
    # HookRecorder: a module overriding Lightning's training hooks, which the vectorized
    # executor runs sequentially; local evaluation on.
    "fedavg": Case(HookRecorder, image_datamodule, FedAvg, "overrides", {"eval_local": True}),
    "fedprox": Case(mlp, image_datamodule, lambda: FedProx(mu=0.5), None),
    # Per-community messages and a per-round plan (1 then 2 local epochs).
    "community_fedavg": Case(
        mlp,
        image_datamodule,
        lambda: CommunityFedAvg(communities=[[0, 2, 4], [1, 3, 5]], epochs_per_round=[1, 2]),
        None,
    ),
    # Round 2 sends D' (extras) and beta (a scalar); replies carry the client statistics.
    "fedfsnet": Case(
        mlp,
        image_datamodule,
        lambda: FedFSNet(
            num_synthetic=8,
            beta=ConstantBeta(1.0),
            hidden_widths=(16,),
            hidden_steps=3,
            hidden_batch_size=8,
        ),
        "training_loss is overridden",
    ),
    # Distils every round, hard enough that round 2 trains a smaller, re-morphed sub-network.
    "fedmorph": Case(
        subnet_model,
        subnet_data,
        lambda: FedMorph(
            distill_every=1,
            distill_epochs=2,
            distill_samples=8,
            distill_batch_size=8,
            distill_lr=0.5,
            lam=1e-2,
        ),
        "BatchNorm",
        SUBNET,
    ),
    # A sub-network per client: the same widths, different channels within a round.
    "feddropout": Case(
        subnet_model, subnet_data, lambda: FedDropout(0.5, per_client=True), "BatchNorm", SUBNET
    ),
    "fedpruned": Case(subnet_model, subnet_data, lambda: FedPruned(0.5), "BatchNorm", SUBNET),
}


def make_executor(name: str) -> Executor:
    executors: dict[str, Callable[[], Executor]] = {
        "sequential": SequentialExecutor,
        "vectorized": VectorizedExecutor,
        "auto": AutoExecutor,
        "ray": lambda: RayExecutor(num_workers=2),
    }
    return executors[name]()


@dataclass
class Run:
    """What one fit left behind."""

    trainer: FederatedTrainer
    executor: Executor
    events: ClientEvents
    journal: list[Call]
    initial: dict[str, Tensor]

    @property
    def stacked_rounds(self) -> int:
        """Rounds whose clients trained as one batched model."""
        if isinstance(self.executor, VectorizedExecutor):
            return len(self.executor.seconds)
        if isinstance(self.executor, AutoExecutor):
            return len(self.executor.vectorized.seconds)
        return 0


_RUNS: dict[tuple[str, str], Run] = {}


def run(case: str, executor: str) -> Run:
    """Fit ``CASES[case]`` with ``executor`` (once; later calls return the same run)."""
    if (case, executor) not in _RUNS:
        spec = CASES[case]
        torch.manual_seed(0)
        model = spec.model()
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        events = ClientEvents()
        chosen = make_executor(executor)
        JOURNAL.clear()
        trainer = fit(
            model, spec.data(), chosen, spec.algorithm(), callbacks=[events], **spec.settings
        )
        _RUNS[(case, executor)] = Run(trainer, chosen, events, list(JOURNAL), initial)
        JOURNAL.clear()
    return _RUNS[(case, executor)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray instance (2 CPUs) for every Ray run of this module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def get_run(case: str, executor: str, request: pytest.FixtureRequest) -> Run:
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    return run(case, executor)


# ---------------------------------------------------------------------------- comparisons

# Where the vectorized executor does stack the clients (FedProx and CommunityFedAvg on an
# MLP), the batched kernels of torch.func.vmap (a batched matmul per layer, one backward of
# the summed losses) add in another order than the per-client kernels of the sequential
# loop: the same maths, float32 round-off apart. Measured: 2e-8 on the weights, 3e-8 on
# the losses; the bounds below are tight and still over an order of magnitude above. Every
# other run (fallbacks, the sequential choice of auto, Ray actors running the same code with
# one torch thread) must be bit-exact.
STACKED_ATOL = 1e-6
STACKED_RTOL = 1e-6


def assert_same(a: Any, b: Any, exact: bool, where: str = "") -> None:
    """``a == b`` for nested dicts/lists of tensors and numbers (float round-off if not
    ``exact``)."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if exact or not a.is_floating_point():
            assert torch.equal(a, b), f"{where}: max diff {(a - b).abs().max()}"
        else:
            torch.testing.assert_close(a, b, rtol=0.0, atol=STACKED_ATOL, msg=where)
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and sorted(a) == sorted(b), f"{where}: {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], exact, f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, exact, f"{where}[{i}]")
    elif isinstance(a, float) and not exact:
        assert math.isclose(a, b, rel_tol=STACKED_RTOL, abs_tol=STACKED_ATOL), f"{where}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


BYTES_KEYS = (
    "bytes_down",
    "bytes_up",
    "bytes_down_total",
    "bytes_up_total",
    "bytes_total",
    "bytes_client_max",
)


def trained_distance(ref: Run) -> float:
    """How far training moved the weights clients train (each community's model for
    CommunityFedAvg, whose global model stays as it was; never the server-set mask logits)."""
    algorithm = ref.trainer.algorithm
    if isinstance(algorithm, CommunityFedAvg):
        finals = list(algorithm.states)
    else:
        finals = [ref.trainer.global_model.state_dict()]
    return max(
        float((final[k].double() - v.double()).abs().max())
        for final in finals
        for k, v in ref.initial.items()
        if "mask_logits" not in k and v.is_floating_point()
    )


def check_same_run(ref: Run, out: Run) -> None:
    """``out`` ended where the sequential ``ref`` did."""
    exact = out.stacked_rounds == 0
    assert out.trainer.drops == ref.trainer.drops == []
    model_diff = max_abs_diff(ref.trainer.global_model, out.trainer.global_model)
    if exact:
        assert model_diff == 0.0
    else:
        assert model_diff < STACKED_ATOL
    assert_same(ref.trainer.algorithm.state_dict(), out.trainer.algorithm.state_dict(), exact)
    assert_same(ref.trainer.client_states, out.trainer.client_states, exact)
    # The round metrics named in the brief first, then everything else the history holds.
    for key in ("train_loss", *BYTES_KEYS):
        seq_values = [h[key] for h in ref.trainer.history]
        out_values = [h[key] for h in out.trainer.history]
        if exact or key != "train_loss":
            assert out_values == seq_values, key
        else:
            assert out_values == pytest.approx(seq_values, rel=STACKED_RTOL)
    assert_same(ref.trainer.history, out.trainer.history, exact, "history")
    assert out.events.events == ref.events.events
    assert_same(ref.events.metrics, out.events.metrics, exact, "reply metrics")


# ---------------------------------------------------------------------------- Lightning's order

ONE_CLIENT_TWO_BATCHES = [
    Call("on_fit_start"),
    Call("on_train_start"),
    Call("on_train_epoch_start"),
    *(
        call
        for b in (0, 1)
        for call in (
            Call("on_train_batch_start", b),
            Call("training_step", b, b, 0),
            Call("on_before_zero_grad"),
            Call("optimizer_zero_grad", b),
            Call("on_before_backward"),
            Call("backward"),
            Call("on_after_backward"),
            Call("on_before_optimizer_step"),
            Call("configure_gradient_clipping"),
            Call("on_train_batch_end", b),
        )
    ),
    Call("on_train_epoch_end"),
    Call("on_train_end"),
    Call("on_fit_end"),
]


# Lightning 2.6's own pytree helper warns under this torch; nothing of ours.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")
def test_the_recorded_order_is_lightnings() -> None:
    """The order written above is what ``lightning.Trainer.fit`` calls, and what
    :func:`lightning_order` generates."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, TensorDataset

    assert lightning_order(2, 1) == ONE_CLIENT_TWO_BATCHES
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,)))
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    JOURNAL.clear()
    trainer.fit(HookRecorder(log_calls=False), DataLoader(data, batch_size=16))
    assert JOURNAL == ONE_CLIENT_TWO_BATCHES
    JOURNAL.clear()


def test_one_clients_local_fit_calls_the_hooks_in_lightnings_order() -> None:
    """Under the sequential executor, recorded on the module itself: one client, 2 batches,
    1 epoch; and the logged copy of the sequence is the same."""
    g = torch.Generator().manual_seed(0)
    data = FederatedDataModule(
        (torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)),
        partition=IID(2),
        batch_size=16,
    )
    events = ClientEvents()
    JOURNAL.clear()
    fit(
        HookRecorder(),
        data,
        "sequential",
        FedAvg(),
        rounds=1,
        clients_per_round=1,
        local_epochs=1,
        eval_every=None,
        callbacks=[events],
    )
    assert JOURNAL == ONE_CLIENT_TWO_BATCHES
    JOURNAL.clear()
    [metrics] = events.metrics.values()
    assert logged_calls(metrics) == ONE_CLIENT_TWO_BATCHES


# ---------------------------------------------------------------------------- the checks


def check_hooks(executor: str, request: pytest.FixtureRequest) -> None:
    """Each client's local run, wherever it ran, called the hooks in Lightning's order with
    ``global_step`` 0, 1, 2... and ``current_epoch`` 0, 1 counted within that run."""
    ref = get_run("fedavg", "sequential", request)
    out = get_run("fedavg", executor, request)
    trainer = out.trainer
    dm = trainer.datamodule
    assert trainer.configured_plan.epochs == 2
    per_client = out.events.metrics
    assert len(per_client) == 2 * 4
    for (_, client), metrics in per_client.items():
        num_batches = -(-dm.num_samples(client) // dm.batch_size)
        assert logged_calls(metrics) == lightning_order(num_batches, epochs=2), client
        assert metrics["steps"] == 2 * num_batches
    # The calls recorded on the modules themselves, in this process, are the logged ones.
    logged = [logged_calls(per_client[key]) for key in sorted(per_client)]
    if executor == "ray":
        assert out.journal == []  # every client trained in an actor
    else:
        assert split_runs(out.journal) == logged
    assert split_runs(ref.journal) == logged
    if executor == "vectorized":
        assert isinstance(out.executor, VectorizedExecutor)
        assert [r for r, _ in out.executor.fallbacks] == [1, 2]
        for _, reason in out.executor.fallbacks:
            assert "the module overrides" in reason and "'on_fit_start'" in reason
            assert "training hooks that a stacked step cannot call once per client" in reason
    if executor == "auto":
        assert isinstance(out.executor, AutoExecutor)
        assert out.executor.choice == "sequential"
        assert "cannot vectorize: the module overrides" in out.executor.reason
    check_same_run(ref, out)


def check_callbacks(executor: str, request: pytest.FixtureRequest) -> None:
    """``on_client_fit_start`` for each selected client, then ``on_client_fit_end`` for
    each, in client order, round after round: the same sequence under every executor."""
    ref = get_run("fedavg", "sequential", request)
    out = get_run("fedavg", executor, request)
    events = out.events.events
    assert events == ref.events.events
    assert len(events) == 2 * 2 * 4
    for rnd in (1, 2):
        this_round = [e for e in events if e[1] == rnd]
        clients = [c for kind, _, c in this_round if kind == "start"]
        assert clients == sorted(clients) and len(clients) == 4
        assert this_round == [("start", rnd, c) for c in clients] + [
            ("end", rnd, c) for c in clients
        ]
    assert [e[1] for e in events] == sorted(e[1] for e in events)


IN_PROCESS = ["sequential", "vectorized", "auto"]


@pytest.mark.parametrize("executor", IN_PROCESS)
def test_hooks_are_counted_the_same(executor: str, request: pytest.FixtureRequest) -> None:
    check_hooks(executor, request)


@pytest.mark.parametrize("executor", IN_PROCESS)
def test_client_callbacks_see_the_same_sequence(
    executor: str, request: pytest.FixtureRequest
) -> None:
    check_callbacks(executor, request)


class StepLogger(BoringClassifier):
    """Logs ``global_step`` and ``current_epoch`` from ``training_step`` only (no hook
    overridden), so the vectorized executor stacks it."""

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.log("global_step", float(self.global_step))
        self.log("global_step_sq", float(self.global_step**2))
        self.log("current_epoch", float(self.current_epoch))
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("executor", IN_PROCESS)
def test_step_counters_in_a_stacked_training_step(executor: str) -> None:
    """Inside a vmapped ``training_step`` too, ``global_step`` runs 0..2n-1 and
    ``current_epoch`` 0, 1 within each client's run (n batches, 2 epochs): each client's
    means of the logged counters are those of the sequential loop, exactly."""
    torch.manual_seed(0)
    events = ClientEvents()
    chosen = make_executor(executor)
    trainer = fit(
        StepLogger(in_features=64), image_datamodule(), chosen, FedAvg(), callbacks=[events]
    )
    if isinstance(chosen, VectorizedExecutor):
        assert chosen.fallbacks == [] and len(chosen.seconds) == 2
    dm = trainer.datamodule
    assert len(events.metrics) == 2 * 4
    for (_, client), metrics in events.metrics.items():
        steps = range(2 * -(-dm.num_samples(client) // dm.batch_size))
        assert metrics["global_step"] == sum(steps) / len(steps)
        assert metrics["global_step_sq"] == sum(s * s for s in steps) / len(steps)
        assert metrics["current_epoch"] == 0.5


EQUIVALENCE = [
    pytest.param(executor, case, id=f"{executor}-{case}")
    for executor in ("vectorized", "auto", "ray")
    for case in CASES
]


@pytest.mark.parametrize(("executor", "case"), EQUIVALENCE)
def test_same_run_as_sequential(executor: str, case: str, request: pytest.FixtureRequest) -> None:
    ref = get_run(case, "sequential", request)
    out = get_run(case, executor, request)
    # Not vacuous: training moved the weights far beyond any tolerance used here.
    assert trained_distance(ref) > 1e3 * STACKED_ATOL
    expected_fallback = CASES[case].vectorized_fallback
    if executor == "vectorized":
        assert isinstance(out.executor, VectorizedExecutor)
        if expected_fallback is None:
            assert out.executor.fallbacks == [] and out.stacked_rounds == 2
        else:
            assert [r for r, _ in out.executor.fallbacks] == [1, 2]
            assert all(expected_fallback in reason for _, reason in out.executor.fallbacks)
    if executor == "auto" and expected_fallback is not None:
        assert isinstance(out.executor, AutoExecutor)
        assert out.executor.choice == "sequential" and out.stacked_rounds == 0
        assert expected_fallback in out.executor.reason
    check_same_run(ref, out)


# Ray last: its idle processes stay up until the end of the module.


def test_hooks_are_counted_the_same_on_ray(request: pytest.FixtureRequest) -> None:
    check_hooks("ray", request)


def test_client_callbacks_see_the_same_sequence_on_ray(request: pytest.FixtureRequest) -> None:
    check_callbacks("ray", request)


def test_ray_pool_trained_every_client_and_was_released(request: pytest.FixtureRequest) -> None:
    out = get_run("fedavg", "ray", request)
    executor = out.executor
    assert isinstance(executor, RayExecutor)
    assert executor.workers == 0  # released at the end of the fit
    assert len(executor.client_seconds) == 2
    assert all(len(r) == 4 and min(r.values()) > 0 for r in executor.client_seconds)
