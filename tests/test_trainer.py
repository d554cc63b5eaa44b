"""The round loop: equivalences, faults, checkpoints and bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from fedlightning import FederatedTrainer
from fedlightning.algorithms import ClientContext, FedAvg, FedProx, weighted_average
from fedlightning.callbacks import Callback, CommCost
from fedlightning.checkpoint import load_checkpoint, save_checkpoint
from fedlightning.datamodules import IID, FederatedDataModule
from fedlightning.demos import BoringClassifier, blobs, demo_datamodule
from fedlightning.environment import environment
from fedlightning.messages import Message


def _state(model: LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fit(model: LightningModule, dm: FederatedDataModule, **kwargs: Any) -> FederatedTrainer:
    kwargs.setdefault("progress_bar", False)
    trainer = FederatedTrainer(**kwargs)
    trainer.fit(model, dm)
    return trainer


def test_one_client_one_full_batch_step_equals_centralized_sgd() -> None:
    x, y = blobs(40)
    dm = FederatedDataModule((x, y), test=(x, y), partition=IID(num_clients=1), batch_size=40)
    torch.manual_seed(0)
    model = BoringClassifier(lr=0.5)
    reference = copy.deepcopy(model)
    _fit(model, dm, rounds=1, local_steps=1, local_epochs=None, eval_every=None)
    opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    F.cross_entropy(reference(x), y).backward()
    opt.step()
    for (name, a), b in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_fedavg_over_identical_clients_returns_that_clients_model() -> None:
    x, y = blobs(30)
    # Three clients holding the same data train the same model the same way: one full batch.
    xs, ys = torch.cat([x, x, x]), torch.cat([y, y, y])

    class SameData(IID):
        def __call__(self, labels: Any, seed: int = 0) -> list[Any]:
            import numpy as np

            return [np.arange(i * 30, (i + 1) * 30) for i in range(3)]

    dm = FederatedDataModule(
        (xs, ys), test=(x, y), partition=SameData(num_clients=3), batch_size=30
    )
    torch.manual_seed(0)
    model = BoringClassifier()
    single = copy.deepcopy(model)
    _fit(model, dm, rounds=1, local_steps=1, local_epochs=None, eval_every=None)
    opt = torch.optim.SGD(single.parameters(), lr=single.lr)
    F.cross_entropy(single(x), y).backward()
    opt.step()
    for a, b in zip(model.state_dict().values(), single.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_fedprox_with_mu_zero_equals_fedavg() -> None:
    torch.manual_seed(0)
    a, b = BoringClassifier(), None
    b = copy.deepcopy(a)
    _fit(a, demo_datamodule(), algorithm=FedAvg(), rounds=2, clients_per_round=3, eval_every=None)
    _fit(
        b,
        demo_datamodule(),
        algorithm=FedProx(mu=0.0),
        rounds=2,
        clients_per_round=3,
        eval_every=None,
    )
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_fedprox_term_pulls_clients_towards_the_global_model() -> None:
    torch.manual_seed(0)
    start = BoringClassifier(lr=0.2)
    init = _state(start)
    drift = {}
    for mu in (0.0, 2.0):
        model = copy.deepcopy(start)
        _fit(
            model,
            demo_datamodule(),
            algorithm=FedProx(mu=mu),
            rounds=1,
            local_epochs=3,
            eval_every=None,
        )
        drift[mu] = sum(float((model.state_dict()[k] - init[k]).norm()) for k in init)
    assert drift[2.0] < 0.8 * drift[0.0]


def test_same_seed_same_result_different_seed_differs() -> None:
    results = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = BoringClassifier()
        _fit(model, demo_datamodule(), rounds=2, clients_per_round=2, seed=seed, eval_every=None)
        results.append(_state(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert not all(torch.equal(results[0][k], results[2][k]) for k in results[0])


def test_training_learns_and_reports_metrics() -> None:
    torch.manual_seed(0)
    trainer = _fit(BoringClassifier(), demo_datamodule(), rounds=5, eval_local=True)
    first, last = trainer.history[0], trainer.history[-1]
    assert last["acc_global"] > 0.9
    assert last["train_loss"] < first["train_loss"]
    assert 0.0 <= last["acc_local"] <= 1.0
    # what the module logged itself, averaged over the round's clients
    assert last["client/train_loss"] == pytest.approx(last["train_loss"], rel=1e-6)
    result = trainer.test()
    assert result["acc_global"] == pytest.approx(last["acc_global"])


def test_commcost_bytes_equal_clients_times_parameter_bytes() -> None:
    torch.manual_seed(0)
    model = BoringClassifier()
    param_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    trainer = _fit(model, demo_datamodule(), rounds=3, clients_per_round=4, callbacks=[CommCost()])
    for entry in trainer.history:
        assert entry["bytes_down"] == 4 * param_bytes
        # each reply carries the update plus its sample count (one 8-byte scalar)
        assert entry["bytes_up"] == 4 * (param_bytes + 8)
    assert trainer.results["bytes"]["total"] == 3 * 4 * (2 * param_bytes + 8)


class Faulty(FedAvg):
    """Client 0 raises; client 1 sends NaNs."""

    def configure_client(self, ctx: ClientContext, module: LightningModule) -> LightningModule:
        if ctx.client == 0:
            raise RuntimeError("disk full")
        return super().configure_client(ctx, module)

    def client_message(self, ctx: ClientContext, module: LightningModule) -> Message:
        message = super().client_message(ctx, module)
        if ctx.client == 1:
            bad = {k: torch.full_like(v, float("nan")) for k, v in message.decode().items()}
            return Message(bad, scalars=message.scalars)
        return message


def test_failing_and_non_finite_clients_are_dropped_and_the_run_completes() -> None:
    torch.manual_seed(0)
    model = BoringClassifier()
    trainer = _fit(model, demo_datamodule(num_clients=4), algorithm=Faulty(), rounds=2)
    assert {d["client"] for d in trainer.drops} == {0, 1}
    assert len(trainer.drops) == 4
    assert all(h["clients_dropped"] == 2 for h in trainer.history)
    assert all(
        torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()
    )


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    init = BoringClassifier(batchnorm=True, momentum=0.9)
    full = copy.deepcopy(init)
    _fit(full, demo_datamodule(), rounds=4, clients_per_round=3, eval_every=None)

    part = copy.deepcopy(init)
    first = _fit(
        part,
        demo_datamodule(),
        rounds=2,
        clients_per_round=3,
        eval_every=None,
        output_dir=tmp_path,
        checkpoint_every=1,
    )
    assert (tmp_path / "checkpoints" / "round_0002.ckpt").is_file()
    resumed_model = copy.deepcopy(init)  # fresh weights: the checkpoint must restore them
    resumed = _fit(
        resumed_model,
        demo_datamodule(),
        rounds=4,
        clients_per_round=3,
        eval_every=None,
        resume=tmp_path / "checkpoints" / "last.ckpt",
        output_dir=tmp_path,
    )
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert [h["round"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.results["bytes"]["total"] == 2 * first.results["bytes"]["total"]
    assert resumed.results["environment"] == environment()
    assert resumed.results["earlier_environments"] == []  # resumed where it started


def test_resume_in_another_environment_is_logged_and_kept_in_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    init = BoringClassifier()
    kwargs: dict[str, Any] = {"clients_per_round": 3, "eval_every": None, "output_dir": tmp_path}
    _fit(copy.deepcopy(init), demo_datamodule(), rounds=1, **kwargs)
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = load_checkpoint(last)
    assert state["environment"] == environment()
    elsewhere = state["environment"] | {"cpu_capability": "AVX2", "torch": "2.0.0"}
    save_checkpoint(last, state | {"environment": elsewhere})

    with caplog.at_level("WARNING", logger="fedlightning.checkpoint"):
        resumed = _fit(copy.deepcopy(init), demo_datamodule(), rounds=2, resume=last, **kwargs)
    assert "another environment" in caplog.text and "cpu_capability" in caplog.text
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["earlier_environments"] == [elsewhere]
    assert results["environment"] == environment()
    # and the next checkpoint carries the history on, for a second resume
    assert load_checkpoint(last)["earlier_environments"] == [elsewhere]
    assert resumed.current_round == 2


def test_local_bn_keeps_batchnorm_on_clients() -> None:
    torch.manual_seed(0)
    model = BoringClassifier(batchnorm=True)
    bn_before = _state(model)
    trainer = _fit(
        model, demo_datamodule(), algorithm=FedAvg(local_bn=True), rounds=2, eval_every=None
    )
    bn_keys = [k for k in bn_before if k.startswith("net.2.")]
    assert bn_keys and all(torch.equal(model.state_dict()[k], bn_before[k]) for k in bn_keys)
    assert set(trainer.client_states) == set(range(6))
    stats = [trainer.client_states[c]["local_state"]["net.2.running_mean"] for c in range(6)]
    assert not torch.equal(stats[0], stats[1])


def test_batchnorm_buffers_are_aggregated_by_default() -> None:
    torch.manual_seed(0)
    model = BoringClassifier(batchnorm=True)
    before = model.state_dict()["net.2.running_mean"].clone()
    _fit(model, demo_datamodule(), rounds=1, eval_every=None)
    assert not torch.equal(model.state_dict()["net.2.running_mean"], before)


def test_results_json_has_the_contract_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _fit(BoringClassifier(), demo_datamodule(), rounds=2, output_dir=tmp_path, eval_local=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"config", "seed", "version", "wall_s", "history", "final", "bytes"} <= set(results)
    assert {"torch", "cpu_capability", "torch_threads"} <= set(results["environment"])
    assert {"acc_global", "acc_local"} <= set(results["final"])
    assert {"down", "up", "total"} <= set(results["bytes"])


def test_fraction_selects_that_share_of_clients() -> None:
    torch.manual_seed(0)
    trainer = _fit(
        BoringClassifier(), demo_datamodule(num_clients=10), fraction=0.3, rounds=2, eval_every=None
    )
    assert all(h["clients"] == 3 for h in trainer.history)


class FedAvgM(FedAvg):
    """Server momentum by overriding one hook: the docs' custom-algorithm example."""

    def __init__(self, beta: float = 0.9) -> None:
        super().__init__()
        self.beta = beta
        self.velocity: dict[str, torch.Tensor] | None = None

    def aggregate(self, round: int, replies: list[Any]) -> None:
        mean = weighted_average(
            [r.message.decode() for r in replies], [r.num_samples for r in replies]
        )
        if self.velocity is None:
            self.velocity = {k: torch.zeros_like(v) for k, v in mean.items()}
        state = self.global_state()
        for k, delta in mean.items():
            if delta.is_floating_point():
                self.velocity[k].mul_(self.beta).add_(delta)
                state[k].add_(self.velocity[k])
            else:
                state[k].add_(delta)


def test_user_subclass_overriding_one_hook_changes_only_that_step() -> None:
    torch.manual_seed(0)
    init = BoringClassifier()
    runs = {}
    for name, algo in {"fedavg": FedAvg(), "m0": FedAvgM(0.0), "m9": FedAvgM(0.9)}.items():
        model = copy.deepcopy(init)
        _fit(
            model, demo_datamodule(), algorithm=algo, rounds=3, clients_per_round=3, eval_every=None
        )
        runs[name] = model.state_dict()
    assert all(torch.allclose(runs["fedavg"][k], runs["m0"][k], atol=1e-6) for k in runs["m0"])
    assert not all(torch.allclose(runs["fedavg"][k], runs["m9"][k]) for k in runs["m9"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"rounds": 0}, "rounds"),
        ({"clients_per_round": 0}, "clients_per_round"),
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": 0.5, "clients_per_round": 2}, "not both"),
        ({"local_epochs": None, "local_steps": None}, "local_epochs or local_steps"),
        ({"eval_every": 0}, "eval_every"),
        ({"checkpoint_every": 1}, "output_dir"),
        ({"executor": "warp"}, "executor"),
        ({"accelerator": "tpu"}, r"accelerator must be one of .* got accelerator='tpu'"),
        ({"precision": "8-true"}, r"precision must be one of .* got precision='8-true'"),
        ({"devices": 2}, r"devices must be one device .* got devices=2"),
        ({"gradient_clip_val": -0.5}, "gradient_clip_val=-0.5"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches=0"),
        ({"max_failed_fraction": 1.5}, r"max_failed_fraction must be a number in \[0, 1\]"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FederatedTrainer(**kwargs)


def test_more_clients_per_round_than_clients_is_rejected() -> None:
    trainer = FederatedTrainer(clients_per_round=7, progress_bar=False)
    with pytest.raises(ValueError, match="clients_per_round=7"):
        trainer.fit(BoringClassifier(), demo_datamodule(num_clients=6))


def test_message_that_does_not_match_the_model_is_rejected() -> None:
    class Wrong(FedAvg):
        def server_message(self, round: int, client: int) -> Message:
            return Message({"net.1.weight": torch.zeros(2, 2)})

    # By default, a round where more than half the clients fail stops the run, naming why.
    with pytest.raises(RuntimeError, match=r"2 of 2 clients failed.*shape \(2, 2\)"):
        _fit(
            BoringClassifier(),
            demo_datamodule(num_clients=2),
            algorithm=Wrong(),
            rounds=1,
            eval_every=None,
        )
    trainer = _fit(
        BoringClassifier(),
        demo_datamodule(num_clients=2),
        algorithm=Wrong(),
        rounds=1,
        eval_every=None,
        max_failed_fraction=1.0,
    )
    assert len(trainer.drops) == 2
    assert "shape (2, 2)" in trainer.drops[0]["reason"]


def test_topk_uplink_keeps_batchnorm_statistics_dense() -> None:
    from fedlightning.codecs import TopK

    torch.manual_seed(0)
    model = BoringClassifier(batchnorm=True)
    before = model.state_dict()["net.2.running_var"].clone()
    _fit(model, demo_datamodule(), algorithm=FedAvg(uplink=TopK(0.1)), rounds=1, eval_every=None)
    # every running statistic moved: none was dropped by the sparsifier
    assert bool((model.state_dict()["net.2.running_var"] != before).all())


def test_round_plan_hook_sets_each_rounds_local_work() -> None:
    import dataclasses

    from fedlightning.callbacks import Callback

    class Schedule(FedAvg):
        def round_plan(self, round, plan):  # type: ignore[no-untyped-def]
            return dataclasses.replace(plan, epochs=None, steps=round)

    class Steps(Callback):
        def __init__(self) -> None:
            self.steps: dict[int, set[float]] = {}

        def on_client_fit_end(self, trainer, round, reply):  # type: ignore[no-untyped-def]
            self.steps.setdefault(round, set()).add(reply.metrics["steps"])

    steps = Steps()
    trainer = _fit(
        BoringClassifier(),
        demo_datamodule(num_clients=4, batch_size=8),
        algorithm=Schedule(),
        rounds=3,
        local_epochs=1,
        eval_every=None,
        callbacks=[steps],
    )
    assert steps.steps == {1: {1.0}, 2: {2.0}, 3: {3.0}}
    # The configured plan is what each round starts from, and what is logged.
    assert trainer.configured_plan.epochs == 1 and trainer.configured_plan.steps is None
    assert trainer.plan.steps == 3


class _RoundLog(Callback):
    def __init__(self) -> None:
        self.rounds: list[int] = []

    def on_round_start(self, trainer: Any, round: int) -> None:
        self.rounds.append(round)


def test_lightning_objects_where_fedlightning_ones_belong_get_a_pointed_error() -> None:
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.callbacks import EarlyStopping

    with pytest.raises(ValueError, match=r"Lightning callback EarlyStopping.*subclass it"):
        FederatedTrainer(callbacks=[EarlyStopping(monitor="loss")])  # type: ignore[list-item]

    class MyData(LightningDataModule):
        pass

    trainer = FederatedTrainer(progress_bar=False)
    with pytest.raises(ValueError, match=r"FederatedDataModule.from_datamodule\(dm, partition="):
        trainer.fit(BoringClassifier(), MyData())  # type: ignore[arg-type]


def test_manual_optimization_is_refused_before_round_one() -> None:
    model = BoringClassifier()
    model.automatic_optimization = False
    rounds = _RoundLog()
    trainer = FederatedTrainer(callbacks=[rounds], progress_bar=False)
    with pytest.raises(ValueError, match=r"automatic_optimization=False"):
        trainer.fit(model, demo_datamodule(num_clients=2))
    assert rounds.rounds == []


def _fit_precision(precision: str, rounds: int = 3) -> tuple[FederatedTrainer, BoringClassifier]:
    torch.manual_seed(0)
    model = BoringClassifier()
    trainer = _fit(
        model,
        demo_datamodule(num_clients=4),
        rounds=rounds,
        clients_per_round=2,
        accelerator="cpu",
        precision=precision,
    )
    return trainer, model


def test_mixed_precision_trains_without_changing_the_bytes() -> None:
    """bf16 autocast changes the maths, never what crosses the wire (the codec's dtype)."""
    full, full_model = _fit_precision("32-true")
    mixed, mixed_model = _fit_precision("bf16-mixed")
    assert all(p.dtype == torch.float32 for p in mixed_model.parameters())
    for key in ("bytes_up", "bytes_down", "bytes_total"):
        assert [h[key] for h in full.history] == [h[key] for h in mixed.history]
    assert full.config["precision"] == "32-true" and mixed.config["precision"] == "bf16-mixed"
    assert abs(full.history[-1]["acc_global"] - mixed.history[-1]["acc_global"]) < 0.1
    # bf16 rounding moves the weights: mixed precision really ran
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            full_model.state_dict().values(), mixed_model.state_dict().values(), strict=True
        )
    )


def test_double_precision_trains_in_float64_and_sends_float64() -> None:
    full, _ = _fit_precision("32-true", rounds=1)
    double, model = _fit_precision("64-true", rounds=1)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    scalars = 2 * 8  # two clients' sample counts, 8 bytes each, whatever the precision
    assert double.history[-1]["bytes_up"] - scalars == 2 * (full.history[-1]["bytes_up"] - scalars)


def test_an_executor_written_for_the_earlier_run_signature_is_told_what_changed() -> None:
    from fedlightning.executors import Executor

    class Old(Executor):
        def run(self, trainer: Any, round: int, messages: Any) -> Any:  # type: ignore[override]
            return []

    with pytest.raises(ValueError, match=r"executors now implement run\(runtime, tasks\)"):
        FederatedTrainer(executor=Old())


def test_labels_the_model_cannot_score_are_refused_before_round_one() -> None:
    """A label 10 with a 10-output model used to turn accuracy off without a word."""
    x, y = blobs(60, num_classes=3)
    y[7] = 10
    dm = FederatedDataModule((x, y), test=(x, y), partition=IID(num_clients=2))
    trainer = FederatedTrainer(progress_bar=False)
    with pytest.raises(ValueError, match=r"label 10 at index 7 is >= the model's output size 3"):
        trainer.fit(BoringClassifier(num_classes=3), dm)


def test_a_second_run_into_the_same_folder_is_refused_before_round_one(tmp_path: Path) -> None:
    _fit(BoringClassifier(), demo_datamodule(num_clients=2), output_dir=tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is True
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # kept by default
    rounds = _RoundLog()
    with pytest.raises(ValueError, match=r"already holds another run .*overwrite=True"):
        _fit(
            BoringClassifier(),
            demo_datamodule(num_clients=2),
            output_dir=tmp_path,
            callbacks=[rounds],
        )
    assert rounds.rounds == []
    _fit(BoringClassifier(), demo_datamodule(num_clients=2), output_dir=tmp_path, overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"output_dir must be a directory"):
        FederatedTrainer(output_dir=tmp_path / "file")


def test_results_json_is_rewritten_after_every_round_until_complete(tmp_path: Path) -> None:
    seen: list[tuple[int, bool]] = []

    class Peek(Callback):
        def on_round_start(self, trainer: Any, round: int) -> None:
            path = tmp_path / "results.json"
            if path.exists():
                data = json.loads(path.read_text())
                seen.append((len(data["history"]), data["complete"]))

    _fit(
        BoringClassifier(),
        demo_datamodule(num_clients=2),
        rounds=3,
        output_dir=tmp_path,
        callbacks=[Peek()],
    )
    assert seen == [(1, False), (2, False)]
    final = json.loads((tmp_path / "results.json").read_text())
    assert final["complete"] is True and len(final["initial_weights_sha256"]) == 64


def test_unseeded_initial_weights_are_flagged_and_their_hash_recorded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch import seed_everything

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with caplog.at_level("WARNING", logger="fedlightning.trainer"):
        first = _fit(BoringClassifier(), demo_datamodule(num_clients=2))
    assert "lightning.seed_everything(0)" in caplog.text
    caplog.clear()
    hashes = []
    for _ in range(2):
        seed_everything(0, verbose=False)
        with caplog.at_level("WARNING", logger="fedlightning.trainer"):
            trainer = _fit(BoringClassifier(), demo_datamodule(num_clients=2))
        hashes.append(trainer.results["initial_weights_sha256"])
    assert "seed_everything" not in caplog.text
    assert hashes[0] == hashes[1]  # seeded: the same initial weights, as recorded
    assert len(first.results["initial_weights_sha256"]) == 64
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
