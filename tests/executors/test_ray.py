"""The Ray executor: a real local Ray instance gives the sequential executor's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedlightning.algorithms import FedAvg, FedProx
from fedlightning.demos import BoringClassifier
from fedlightning.executors import resolve_executor
from fedlightning.executors.ray import ClientWorker, RayExecutor, assign_clients, dump_runtime
from fedlightning.models.autoencoders import ConvAutoencoder5
from tests.executors.conftest import fit, image_datamodule, max_abs_diff

ray = pytest.importorskip("ray")


def _worker(model: Any, dm: Any) -> ClientWorker:
    """A pool worker in this process, set up as the executor sets up its actors."""
    return ClientWorker(model, dm, torch_threads=None)


def test_assign_clients_balances_by_load() -> None:
    loads = {0: 5.0, 1: 3.0, 2: 3.0, 3: 1.0, 4: 4.0}
    bins = assign_clients(loads, 2)
    assert sorted(c for b in bins for c in b) == [0, 1, 2, 3, 4]
    totals = sorted(sum(loads[c] for c in b) for b in bins)
    assert totals == [8.0, 8.0]
    assert assign_clients({0: 1.0}, 3) == [[0], [], []]
    with pytest.raises(ValueError, match="num_workers must be an integer >= 1"):
        assign_clients(loads, 0)


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        RayExecutor(num_workers=0)
    with pytest.raises(ValueError, match="num_cpus_per_worker"):
        RayExecutor(num_cpus_per_worker=0)
    with pytest.raises(ValueError, match="torch_threads"):
        RayExecutor(torch_threads=0)


def test_ray_is_not_imported_until_used() -> None:
    """No module-level ``import ray`` on the executors' import path: Ray stays optional."""
    import ast

    import fedlightning.executors as executors
    import fedlightning.executors.ray as ray_module

    for module in (executors, ray_module):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [
            n.module or "" for n in top if isinstance(n, ast.ImportFrom)
        ]
        assert not any(name == "ray" or name.startswith("ray.") for name in names)
    assert isinstance(resolve_executor("ray"), RayExecutor)


def test_client_worker_reports_a_failing_client() -> None:
    class Boom(FedAvg):
        def configure_client(self, ctx: Any, module: Any) -> Any:
            if ctx.client == 1:
                raise RuntimeError("no memory")
            return super().configure_client(ctx, module)

    dm = image_datamodule()
    trainer = fit(
        BoringClassifier(in_features=64), dm, "sequential", Boom(), rounds=1, max_failed_fraction=1
    )
    worker = _worker(BoringClassifier(in_features=64), dm)
    message = trainer.algorithm.server_message(1, 0)
    tasks = [trainer.client_task(1, c, message) for c in (0, 1)]
    out = worker.run(1, dump_runtime(trainer.client_runtime(1)), tasks)
    assert out[0][0] == "ok" and out[1] == ("failed", "RuntimeError: no memory")


def test_client_worker_reply_equals_run_client() -> None:
    """An actor's code path, in process: the seed-000 autoencoder's reply is bit-exact."""
    dm = image_datamodule()
    torch.manual_seed(0)
    trainer = fit(ConvAutoencoder5(lr=1e-2), dm, "sequential", FedProx(mu=0.5), rounds=1)
    message = trainer.algorithm.server_message(2, 3)
    expected = trainer.run_client(2, 3, message)
    worker = _worker(ConvAutoencoder5(lr=1e-2), dm)
    snapshot = dump_runtime(trainer.client_runtime(2))
    [(status, trained)] = worker.run(2, snapshot, [trainer.client_task(2, 3, message)])
    assert status == "ok" and trained.seconds > 0
    reply = trained.reply
    assert reply.metrics == expected.metrics
    got, want = reply.message.decode(), expected.message.decode()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_same_global_model_as_sequential_on_local_ray() -> None:
    """One fit on a real local Ray instance (2 actors): FedProx, FedBN state, local eval."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        torch.manual_seed(0)
        seq_model = BoringClassifier(in_features=64, batchnorm=True)
        torch.manual_seed(0)
        ray_model = BoringClassifier(in_features=64, batchnorm=True)
        kwargs: dict[str, Any] = {"eval_local": True, "rounds": 2, "clients_per_round": 5}
        algorithm = FedProx(mu=0.5, local_bn=True)
        seq = fit(seq_model, image_datamodule(), "sequential", algorithm, **kwargs)
        executor = RayExecutor(num_workers=2)
        out = fit(ray_model, image_datamodule(), executor, FedProx(mu=0.5, local_bn=True), **kwargs)
        # Same code, same seeds, one torch thread on both sides: bit-exact.
        assert max_abs_diff(seq_model, ray_model) == 0.0
        for key in ("train_loss", "acc_local", "bytes_up"):
            assert [h[key] for h in seq.history] == [h[key] for h in out.history]
        assert seq.client_states.keys() == out.client_states.keys()
        for c, state in seq.client_states.items():
            for k, v in state["local_state"].items():
                assert torch.equal(v, out.client_states[c]["local_state"][k])
        assert all(len(r) == 5 and min(r.values()) > 0 for r in executor.client_seconds)
        assert executor.workers == 0  # the pool is released at the end of fit
        assert ray.is_initialized()  # Ray was already running: the executor leaves it up
    finally:
        ray.shutdown()


def test_client_worker_trains_with_the_rounds_plan() -> None:
    """``Algorithm.round_plan`` reaches the actors: the plan travels with each round."""
    import dataclasses

    dm = image_datamodule()
    trainer = fit(BoringClassifier(in_features=64), dm, "sequential", FedAvg(), rounds=1)
    worker = _worker(BoringClassifier(in_features=64), dm)
    message = trainer.algorithm.server_message(2, 0)
    runtime = trainer.client_runtime(2)
    two_steps = runtime.with_plan(dataclasses.replace(runtime.plan, epochs=None, steps=2))
    [(status, trained)] = worker.run(
        2, dump_runtime(two_steps), [trainer.client_task(2, 0, message)]
    )
    assert status == "ok" and trained.reply.metrics["steps"] == 2


def test_snapshot_leaves_the_trainer_and_the_data_behind() -> None:
    """What travels to a worker: the client hooks, never the trainer or the dataset."""
    dm = image_datamodule(n=2000)
    trainer = fit(BoringClassifier(in_features=64), dm, "sequential", FedAvg(), rounds=1)
    blob = dump_runtime(trainer.client_runtime(1))
    data_bytes = dm.client_data(0)[0].numel() * 4
    assert len(blob) < data_bytes  # one client's images alone are larger than the snapshot
    from fedlightning.executors.ray import load_runtime

    runtime = load_runtime(blob, dm)
    assert runtime.datamodule is dm
    with pytest.raises(RuntimeError, match=r"client hook used the server context.*ctx.data"):
        _ = runtime.hooks.trainer.datamodule
    with pytest.raises(RuntimeError, match=r"global_model is server state"):
        _ = runtime.hooks.global_model


class _DiesOnce(FedAvg):
    """Kills its worker process the first time client 2 trains (a lost Ray worker)."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def configure_client(self, ctx: Any, module: Any) -> Any:
        import os

        if ctx.client == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().configure_client(ctx, module)


def test_a_lost_worker_is_replaced_and_its_clients_train_in_the_same_round(
    tmp_path: Path,
) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        torch.manual_seed(0)
        seq_model = BoringClassifier(in_features=64)
        torch.manual_seed(0)
        ray_model = BoringClassifier(in_features=64)
        kwargs: dict[str, Any] = {"rounds": 2, "clients_per_round": 5}
        seq = fit(seq_model, image_datamodule(), "sequential", FedAvg(), **kwargs)
        executor = RayExecutor(num_workers=2)
        marker = str(tmp_path / "died")
        out = fit(ray_model, image_datamodule(), executor, _DiesOnce(marker), **kwargs)
        assert Path(marker).exists()  # the worker did die
        assert [r for r, _, _ in executor.replaced] == [1]
        assert out.drops == [] and seq.drops == []
        assert max_abs_diff(seq_model, ray_model) == 0.0
    finally:
        ray.shutdown()


def test_gpus_per_worker_without_a_cuda_run_is_refused_before_round_one() -> None:
    from fedlightning import FederatedTrainer
    from fedlightning.callbacks import Callback

    started: list[int] = []

    class Rounds(Callback):
        def on_round_start(self, trainer: Any, round: int) -> None:
            started.append(round)

    trainer = FederatedTrainer(
        executor=RayExecutor(num_gpus_per_worker=0.5),
        accelerator="cpu",
        callbacks=[Rounds()],
        progress_bar=False,
    )
    with pytest.raises(ValueError, match=r"num_gpus_per_worker=0.5 needs the run on CUDA"):
        trainer.fit(BoringClassifier(in_features=64), image_datamodule())
    assert started == []
    with pytest.raises(ValueError, match=r"num_gpus_per_worker must be a number >= 0"):
        RayExecutor(num_gpus_per_worker=-1)
