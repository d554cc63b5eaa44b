"""SCAFFOLD (Karimireddy et al., ICML 2020, Algorithm 1): maths, bytes, errors, resume."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms.fedavg import FedAvg
from fedlightning.algorithms.scaffold import CONTROL_PREFIX, Scaffold, sgd_learning_rates
from fedlightning.callbacks import Callback
from fedlightning.datamodules import FederatedDataModule
from fedlightning.demos import BoringClassifier, demo_datamodule
from fedlightning.round import STREAM_CLIENT, Reply

LR = 0.1
BATCH = 20


def _data(num_clients: int = 3) -> FederatedDataModule:
    return demo_datamodule(num_clients=num_clients, n=60 * num_clients, batch_size=BATCH)


def _model(**kwargs: Any) -> BoringClassifier:
    torch.manual_seed(0)
    return BoringClassifier(lr=LR, **kwargs)


def _clone(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in tensors.items()}


class Recorder(Callback):
    """What each round started from and what each client sent back."""

    def __init__(self) -> None:
        self.start: dict[int, dict[str, Any]] = {}
        self.replies: dict[tuple[int, int], dict[str, Any]] = {}
        self.fit_starts = 0

    def on_fit_start(self, trainer: FederatedTrainer) -> None:
        self.fit_starts += 1

    def on_round_start(self, trainer: FederatedTrainer, round: int) -> None:
        algorithm = trainer.algorithm
        assert isinstance(algorithm, Scaffold)
        self.start[round] = {
            "x": _clone(trainer.global_model.state_dict()),
            "c": _clone(algorithm.control_variate),
            "c_i": {k: _clone(v["c"]) for k, v in trainer.client_states.items()},
        }

    def on_client_fit_end(self, trainer: FederatedTrainer, round: int, reply: Reply) -> None:
        self.replies[(round, reply.client)] = {
            "update": _clone(reply.message.decode()),
            "extras": _clone(reply.message.extras),
            "metrics": dict(reply.metrics),
        }


def _fit(
    model: LightningModule,
    algorithm: Any,
    dm: FederatedDataModule | None = None,
    *,
    rounds: int = 1,
    clients_per_round: int = 3,
    local_epochs: int = 1,
    **kwargs: Any,
) -> FederatedTrainer:
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=clients_per_round,
        local_epochs=local_epochs,
        seed=0,
        logger=False,
        progress_bar=False,
        eval_every=None,
        **kwargs,
    )
    trainer.fit(model, dm if dm is not None else _data())
    return trainer


def _assert_close(a: dict[str, Tensor], b: dict[str, Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-5), (k, (a[k] - b[k]).abs().max())


def _params(model: LightningModule) -> list[str]:
    return [n for n, _ in model.named_parameters()]


# ---------------------------------------------------------------------------- round 1


@pytest.mark.parametrize("option", ["I", "II"])
@pytest.mark.parametrize("clients_per_round", [1, 3])
def test_round_one_equals_fedavg_bit_for_bit(option: str, clients_per_round: int) -> None:
    fedavg, scaffold = _model(), _model()
    _fit(fedavg, FedAvg(), clients_per_round=clients_per_round)
    _fit(scaffold, Scaffold(option=option), clients_per_round=clients_per_round)
    for k, v in fedavg.state_dict().items():
        assert torch.equal(v, scaffold.state_dict()[k]), k


def test_server_lr_scales_the_mean_update() -> None:
    init = _model()
    fedavg, scaffold = copy.deepcopy(init), copy.deepcopy(init)
    _fit(fedavg, FedAvg())
    _fit(scaffold, Scaffold(server_lr=0.5))
    x = init.state_dict()
    expected = {k: x[k] + 0.5 * (v - x[k]) for k, v in fedavg.state_dict().items()}
    _assert_close(dict(scaffold.state_dict()), expected)


# ---------------------------------------------------------------------------- bytes


def test_bytes_are_weights_plus_control_variates_each_way() -> None:
    model = _model()
    assert not list(model.buffers())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    m = 2
    fedavg = _fit(_model(), FedAvg(), rounds=2, clients_per_round=m)
    scaffold = _fit(model, Scaffold(), rounds=2, clients_per_round=m)
    for h in fedavg.history:
        assert h["bytes_down"] == m * weights
        assert h["bytes_up"] == m * (weights + 8)  # + the sample count
    for h in scaffold.history:
        assert h["bytes_down"] == m * 2 * weights  # x and c
        assert h["bytes_up"] == m * (2 * weights + 8)  # y_i - x, c_i+ - c_i and the count


# ---------------------------------------------------------------------------- c_i+


@pytest.mark.parametrize(("epochs", "accumulate"), [(2, 1), (2, 3)])
def test_option_two_control_variate_is_the_mean_step_direction(
    epochs: int, accumulate: int
) -> None:
    dm, init = _data(), _model()
    recorder = Recorder()
    trainer = _fit(
        copy.deepcopy(init),
        Scaffold(option="II"),
        dm,
        clients_per_round=1,
        local_epochs=epochs,
        accumulate_grad_batches=accumulate,
        callbacks=[recorder],
    )
    [(_, client)] = recorder.replies
    batches = math.ceil(dm.num_samples(client) / BATCH)
    steps = epochs * math.ceil(batches / accumulate)  # the last batch of an epoch steps too
    assert recorder.replies[(1, client)]["metrics"]["steps"] == steps
    x = init.state_dict()
    update = recorder.replies[(1, client)]["update"]
    expected = {n: -update[n] / (steps * LR) for n in _params(init)}  # (x - y) / (K lr)
    c_i = trainer.client_states[client]["c"]
    _assert_close(c_i, expected)
    delta = recorder.replies[(1, client)]["extras"]
    _assert_close({k.removeprefix(CONTROL_PREFIX): v for k, v in delta.items()}, expected)
    assert set(x) == set(c_i)
    # The server's c moves by |S| / N = 1 / 3 of it.
    algorithm = trainer.algorithm
    assert isinstance(algorithm, Scaffold)
    _assert_close(algorithm.control_variate, {k: v / 3 for k, v in expected.items()})


def test_option_one_control_variate_is_the_full_batch_gradient_at_x() -> None:
    dm, init = _data(), _model()
    trainer = _fit(copy.deepcopy(init), Scaffold(option="I"), dm, clients_per_round=1)
    [client] = trainer.client_states
    x, y = dm.client_data(client)
    reference = copy.deepcopy(init)
    loss = F.cross_entropy(reference(x), y)
    names = _params(reference)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    _assert_close(trainer.client_states[client]["c"], dict(zip(names, grads, strict=True)))
    # Not the gradient at the trained weights.
    trained = trainer.global_model
    at_y = torch.autograd.grad(F.cross_entropy(trained(x), y), list(trained.parameters()))
    assert not torch.allclose(at_y[0], grads[0], atol=1e-4)


@pytest.mark.parametrize("option", ["I", "II"])
def test_server_control_variate_moves_by_the_sampled_share(option: str) -> None:
    trainer = _fit(_model(), Scaffold(option=option), _data(4), clients_per_round=2)
    assert len(trainer.client_states) == 2
    states = [s["c"] for s in trainer.client_states.values()]
    algorithm = trainer.algorithm
    assert isinstance(algorithm, Scaffold)
    c = algorithm.control_variate
    expected = {k: 0.5 * (states[0][k] + states[1][k]) / 2 for k in c}  # |S|/N * mean
    _assert_close(c, expected)
    assert any(float(v.abs().max()) > 1e-4 for v in c.values())
    assert c.keys() == set(_params(trainer.global_model))
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in c.values())


# ---------------------------------------------------------------------------- correction


def test_round_two_local_run_is_sgd_on_the_corrected_gradient() -> None:
    dm, init = _data(), _model()
    recorder = Recorder()
    scaffold = copy.deepcopy(init)
    trainer = _fit(
        scaffold, Scaffold(option="II"), dm, rounds=2, clients_per_round=2, callbacks=[recorder]
    )
    fedavg = copy.deepcopy(init)
    _fit(fedavg, FedAvg(), dm, rounds=2, clients_per_round=2)
    assert (
        max(
            float((a - b).abs().max())
            for a, b in zip(
                fedavg.state_dict().values(), scaffold.state_dict().values(), strict=True
            )
        )
        > 1e-4
    )

    start = recorder.start[2]
    again = [c for (r, c) in recorder.replies if r == 2 and c in start["c_i"]]
    assert again, "a client of round 2 also took part in round 1"
    client = again[0]
    c, c_i = start["c"], start["c_i"][client]
    assert max(float((c[k] - c_i[k]).abs().max()) for k in c) > 1e-4

    def local_run(corrected: bool) -> dict[str, Tensor]:
        module = copy.deepcopy(init)
        module.load_state_dict(start["x"])
        names = _params(module)
        params = list(module.parameters())
        loader = dm.train_loader(client, seed=trainer.seed_for(2, client, STREAM_CLIENT))
        for xb, yb in loader:
            grads = torch.autograd.grad(F.cross_entropy(module(xb), yb), params)
            with torch.no_grad():
                for name, p, g in zip(names, params, grads, strict=True):
                    step = g - c_i[name] + c[name] if corrected else g
                    p.sub_(LR * step)
        return {n: p.detach() - start["x"][n] for n, p in module.named_parameters()}

    reply = recorder.replies[(2, client)]
    _assert_close(reply["update"], local_run(corrected=True), atol=2e-6)
    plain = local_run(corrected=False)
    assert any(not torch.allclose(reply["update"][k], plain[k], atol=1e-5) for k in plain), (
        "the correction changed nothing"
    )
    # Option II's new c_i from the corrected run: c_i - c + (x - y) / (K lr).
    steps = math.ceil(dm.num_samples(client) / BATCH)
    expected = {k: c_i[k] - c[k] - reply["update"][k] / (steps * LR) for k in c}
    _assert_close(trainer.client_states[client]["c"], expected, atol=1e-5)
    delta = {k.removeprefix(CONTROL_PREFIX): v for k, v in reply["extras"].items()}
    _assert_close(delta, {k: expected[k] - c_i[k] for k in c}, atol=1e-5)


def test_vectorized_executor_falls_back_to_the_same_result() -> None:
    init = _model()
    sequential, vectorized = copy.deepcopy(init), copy.deepcopy(init)
    _fit(sequential, Scaffold(), rounds=2, clients_per_round=2)
    _fit(vectorized, Scaffold(), rounds=2, clients_per_round=2, executor="vectorized")
    for k, v in sequential.state_dict().items():
        assert torch.equal(v, vectorized.state_dict()[k]), k


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("option", ["III", "i", "", 2, None])
def test_an_unknown_option_is_refused(option: Any) -> None:
    with pytest.raises(ValueError, match="option"):
        Scaffold(option=option)


@pytest.mark.parametrize("server_lr", [0.0, -1.0, float("nan"), float("inf"), True])
def test_a_server_lr_that_is_not_positive_is_refused(server_lr: float) -> None:
    with pytest.raises(ValueError, match="server_lr"):
        Scaffold(server_lr=server_lr)


class Configured(BoringClassifier):
    """A BoringClassifier whose configure_optimizers returns what the test sets."""

    def __init__(self, make: Any) -> None:
        super().__init__(lr=LR)
        self.make = make

    def configure_optimizers(self) -> Any:
        return self.make(self)


def _sgd(model: LightningModule, **kwargs: Any) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), **{"lr": LR, **kwargs})


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), "Adam"),
        (lambda m: _sgd(m, momentum=0.9), "momentum=0.9"),
        (lambda m: {"optimizer": _sgd(m, momentum=0.5)}, "momentum=0.5"),
        (lambda m: [_sgd(m, weight_decay=1e-4)], "weight_decay=0.0001"),
        (lambda m: _sgd(m, momentum=0.9, nesterov=True), "nesterov=True"),
        (
            lambda m: ([o := _sgd(m)], [torch.optim.lr_scheduler.StepLR(o, 1)]),
            "StepLR",
        ),
    ],
)
def test_option_two_refuses_a_non_sgd_optimizer_before_any_client_trains(
    make: Any, named: str
) -> None:
    torch.manual_seed(0)
    model = Configured(make)
    before = _clone(model.state_dict())
    recorder = Recorder()
    trainer = FederatedTrainer(
        algorithm=Scaffold(option="II"),
        rounds=1,
        clients_per_round=2,
        local_epochs=1,
        seed=0,
        logger=False,
        progress_bar=False,
        eval_every=None,
        callbacks=[recorder],
    )
    with pytest.raises(ValueError, match="option='II'") as info:
        trainer.fit(model, _data())
    assert named in str(info.value)
    assert recorder.fit_starts == 0 and not recorder.replies and not trainer.history
    for k, v in before.items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_option_one_takes_any_optimizer() -> None:
    model = Configured(lambda m: torch.optim.Adam(m.parameters(), lr=1e-2))
    trainer = _fit(model, Scaffold(option="I"), rounds=2, clients_per_round=2)
    assert [h["round"] for h in trainer.history] == [1, 2]


def test_learning_rates_are_read_per_parameter_in_every_return_form() -> None:
    def groups(m: LightningModule) -> Any:
        first, second = m.net[1], m.net[3]
        return {
            "optimizer": torch.optim.SGD(
                [
                    {"params": first.parameters(), "lr": 0.2},
                    {"params": second.parameters()},
                ],
                lr=0.05,
            )
        }

    lrs = sgd_learning_rates(Configured(groups))
    assert lrs == {"net.1.weight": 0.2, "net.1.bias": 0.2, "net.3.weight": 0.05, "net.3.bias": 0.05}
    assert set(sgd_learning_rates(Configured(lambda m: ([_sgd(m)], [])))) == set(lrs)
    algorithm = Scaffold(option="II")
    _fit(Configured(groups), algorithm, clients_per_round=1)
    assert algorithm.client_half().local_lr == lrs


def test_the_server_control_variate_stays_on_the_server() -> None:
    algorithm = Scaffold()
    _fit(_model(), algorithm, clients_per_round=1)
    half = algorithm.client_half()
    with pytest.raises(AttributeError, match="server state"):
        _ = half._c
    assert half.local_lr == {n: LR for n in _params(_model())}


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("option", ["I", "II"])
def test_resume_equals_an_uninterrupted_run(option: str, tmp_path: Path) -> None:
    init = _model()
    full = copy.deepcopy(init)
    uninterrupted = _fit(full, Scaffold(option=option), _data(4), rounds=3, clients_per_round=2)

    _fit(
        copy.deepcopy(init),
        Scaffold(option=option),
        _data(4),
        rounds=2,
        clients_per_round=2,
        output_dir=tmp_path,
        checkpoint_every=1,
    )
    resumed_model = copy.deepcopy(init)
    resumed = _fit(
        resumed_model,
        Scaffold(option=option),
        _data(4),
        rounds=3,
        clients_per_round=2,
        output_dir=tmp_path,
        resume=tmp_path / "checkpoints" / "last.ckpt",
    )
    assert [h["round"] for h in resumed.history] == [1, 2, 3]
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    a, b = uninterrupted.algorithm, resumed.algorithm
    assert isinstance(a, Scaffold) and isinstance(b, Scaffold)
    assert a.control_variate.keys() == b.control_variate.keys()
    for k, v in a.control_variate.items():
        assert torch.equal(v, b.control_variate[k]), k
    assert any(float(v.abs().max()) > 0 for v in a.control_variate.values())
    assert uninterrupted.client_states.keys() == resumed.client_states.keys()
    for client, state in uninterrupted.client_states.items():
        for k, v in state["c"].items():
            assert torch.equal(v, resumed.client_states[client]["c"][k]), (client, k)
