"""The two halves of an algorithm, the server context, and the settings recorded for a run."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg, FedMorphProx, FedProx
from fedlightning.algorithms.base import Algorithm
from fedlightning.algorithms.fsnet import FedFSNet
from fedlightning.codecs import TopK
from fedlightning.demos import BoringClassifier
from fedlightning.round import ServerContext
from tests.executors.conftest import image_datamodule


def _trainer(algorithm: Algorithm, **kwargs: object) -> FederatedTrainer:
    return FederatedTrainer(
        algorithm=algorithm,
        rounds=int(kwargs.pop("rounds", 1)),  # type: ignore[call-overload]
        clients_per_round=2,
        local_epochs=1,
        seed=0,
        progress_bar=False,
        **kwargs,  # type: ignore[arg-type]
    )


class _ClassifierWithHparams(BoringClassifier):
    def __init__(self, lr: float = 0.1, hidden: int = 32) -> None:
        super().__init__(in_features=64, hidden=hidden, lr=lr)
        self.save_hyperparameters()


# ---------------------------------------------------------------------- halves
def test_client_half_leaves_server_state_behind() -> None:
    dm = image_datamodule()
    algorithm = FedFSNet(num_synthetic=6, hidden_steps=2, hidden_widths=(64,))
    trainer = _trainer(algorithm, rounds=2)
    trainer.fit(BoringClassifier(in_features=64), dm)
    assert algorithm.synthetic is not None and algorithm.client_stats
    half = algorithm.client_half()
    assert type(half) is FedFSNet and half.num_synthetic == 6
    for name in ("synthetic", "client_stats", "_hidden", "_optimizer", "_global_model"):
        assert half.__dict__.get(name) is None, name
    with pytest.raises(AttributeError, match=r"FedFSNet.synthetic is server state.*"):
        _ = half.synthetic
    with pytest.raises(RuntimeError, match="global_model is server state"):
        _ = half.global_model
    with pytest.raises(RuntimeError, match="client hook used the server context"):
        half.select_clients(1, [0, 1, 2])
    # what travels is a small fraction of the whole object
    server = (algorithm.synthetic, algorithm.hidden_model.state_dict(), algorithm.client_stats)
    assert len(pickle.dumps(half)) * 10 < len(pickle.dumps(server))


def test_client_half_runs_the_client_hooks_as_the_full_object(tmp_path: Path) -> None:
    """The sequential executor trains on the client half: a FedProx run is FedProx's."""
    dm = image_datamodule()
    torch.manual_seed(0)
    a, b = BoringClassifier(in_features=64), BoringClassifier(in_features=64)
    b.load_state_dict(a.state_dict())
    _trainer(FedProx(mu=0.0), rounds=2).fit(a, dm)
    _trainer(FedProx(mu=5.0), rounds=2).fit(b, dm)
    diff = max(float((a.state_dict()[k] - b.state_dict()[k]).abs().max()) for k in a.state_dict())
    assert diff > 1e-4  # mu reached the clients


class _BigTable(FedAvg):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.zeros(600_000)  # 2.4 MB


class _BigTableOnServer(_BigTable):
    server_attributes = ("table",)


def test_large_tensor_in_the_client_half_is_named_in_a_warning() -> None:
    with pytest.warns(
        UserWarning, match=r"_BigTable.table holds 2,400,000 bytes.*server_attributes"
    ):
        _BigTable().client_half()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half = _BigTableOnServer().client_half()
    assert "table" not in half.__dict__


def test_server_only_constructor_argument_stays_on_the_server() -> None:
    # FedMorph's distill_data is a server attribute and a constructor argument; the recorded
    # arguments must not carry it to the clients either (5,000 images: 15.7 MB).
    data = torch.zeros(5000, 1, 28, 28)
    algorithm = FedMorphProx(distill_data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        half = algorithm.client_half()
    assert "distill_data" not in half.settings and "distill_data" not in half.__dict__
    assert algorithm.settings["distill_data"] is data  # the full object keeps its record
    assert half.settings["mu"] == algorithm.settings["mu"]
    assert len(pickle.dumps(half)) < data.numel()  # under a quarter of the tensor's bytes


# ---------------------------------------------------------------------- server context
def test_server_context_is_narrow() -> None:
    run = SimpleNamespace(
        seed=5, rounds=3, current_round=2, datamodule="dm", global_model="m",
        num_selected=lambda n: 2, seed_for=lambda *k: sum(k), rng=lambda *k: None,
        log_metrics=lambda m: logged.update(m), dispatch=lambda *a: None, callbacks=[1],
    )  # fmt: skip
    logged: dict[str, float] = {}
    ctx = ServerContext(run, resuming=True)  # type: ignore[arg-type]
    assert (ctx.seed, ctx.rounds, ctx.round, ctx.resuming) == (5, 3, 2, True)
    assert ctx.seed_for(1, 2) == 3 and ctx.num_selected(9) == 2
    ctx.log({"a": 1.0})
    assert logged == {"a": 1.0}
    with pytest.raises(AttributeError, match="ServerContext, which has no 'callbacks'"):
        _ = ctx.callbacks


def test_server_hooks_get_the_server_context_not_the_trainer() -> None:
    seen: list[object] = []

    class Spy(FedAvg):
        def on_round_end(self, round: int) -> None:
            seen.append(self.server)
            seen.append(self.trainer)  # the alias of earlier versions

    trainer = _trainer(Spy())
    trainer.fit(BoringClassifier(in_features=64), image_datamodule())
    assert all(isinstance(s, ServerContext) for s in seen)
    assert seen[0] is seen[1]


# ---------------------------------------------------------------------- settings
def test_settings_are_captured_from_constructor_arguments() -> None:
    assert FedAvg().settings == {
        "uplink": None,
        "downlink": None,
        "local_bn": False,
        "server_optimizer": None,
    }
    assert repr(FedAvg(local_bn=True)) != repr(FedAvg())
    assert "local_bn=True" in repr(FedAvg(local_bn=True))
    assert FedProx(0.3).settings["mu"] == 0.3
    assert "uplink=TopK(ratio=0.1)" in repr(FedProx(uplink=TopK(0.1)))
    # a subclass taking **kwargs records its parent's defaults too
    morph = FedMorphProx(mu=0.5, distill_every=3)
    assert morph.settings["mu"] == 0.5 and morph.settings["distill_every"] == 3
    assert morph.settings["distill_epochs"] == 2 and "lam" in morph.settings
    assert morph.config["class"] == "fedlightning.algorithms.fedmorph.FedMorphProx"

    class Custom(FedAvg):
        def __init__(self, scale: float = 2.0, **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            self.scale = scale

    assert Custom(local_bn=True).settings == {
        "scale": 2.0,
        "local_bn": True,
        "uplink": None,
        "downlink": None,
        "server_optimizer": None,
    }


def test_results_and_loggers_record_algorithm_model_and_data(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from fedlightning.loggers import read_wandb_run, wandb_logger

    csv = CSVLogger(save_dir=str(tmp_path), name="csv")
    wandb = wandb_logger("test", save_dir=tmp_path, offline=True)
    trainer = _trainer(FedAvg(local_bn=True), output_dir=tmp_path / "run", logger=[csv, wandb])
    trainer.fit(_ClassifierWithHparams(lr=0.05), image_datamodule())
    config = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert config["algorithm"]["class"] == "fedlightning.algorithms.fedavg.FedAvg"
    assert config["algorithm"]["local_bn"] is True
    assert config["model"]["class"].endswith("_ClassifierWithHparams")
    assert config["model"]["hparams"] == {"lr": 0.05, "hidden": 32}
    assert config["data"]["seed"] == 0 and "Dirichlet" in config["data"]["partition"]
    hparams = (Path(csv.log_dir) / "hparams.yaml").read_text()
    assert "local_bn: true" in hparams and "lr: 0.05" in hparams
    logged = read_wandb_run(tmp_path / "wandb")["config"]
    assert logged["algorithm"]["local_bn"] is True
    assert logged["model"]["hparams"]["lr"] == 0.05


@pytest.mark.parametrize(
    "change",
    [
        {"algorithm": FedAvg(local_bn=True)},
        {"algorithm": FedAvg(server_optimizer=lambda p: torch.optim.SGD(p, lr=0.5))},
        {"model": {"lr": 0.2}},
        {"data": {"seed": 1}},
    ],
    ids=["algorithm", "server_optimizer", "model", "data"],
)
def test_runs_that_differ_in_a_setting_differ_in_their_config(change: dict) -> None:
    def config(algorithm: Algorithm, model: LightningModule, seed: int) -> dict:
        trainer = _trainer(algorithm, eval_every=None)
        trainer.fit(model, image_datamodule(seed=seed))
        return trainer.config

    base = config(FedAvg(), _ClassifierWithHparams(), 0)
    other = config(
        change.get("algorithm", FedAvg()),
        _ClassifierWithHparams(**change.get("model", {})),
        change.get("data", {}).get("seed", 0),
    )
    assert base != other
    assert config(FedAvg(), _ClassifierWithHparams(), 0) == base


def test_client_state_written_without_stateful_clients_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Forgets(FedAvg):
        def client_message(self, ctx, module):  # type: ignore[no-untyped-def]
            ctx.state["seen"] = ctx.round
            return super().client_message(ctx, module)

    class Keeps(Forgets):
        @property
        def stateful_clients(self) -> bool:
            return True

    with caplog.at_level("WARNING", logger="fedlightning.trainer"):
        forgets = _trainer(Forgets(), rounds=2, eval_every=None)
        forgets.fit(BoringClassifier(in_features=64), image_datamodule())
    warned = [r for r in caplog.records if "wrote ctx.state" in r.getMessage()]
    assert len(warned) == 1 and "['seen']" in warned[0].getMessage()
    assert forgets.client_states == {}
    caplog.clear()
    with caplog.at_level("WARNING", logger="fedlightning.trainer"):
        keeps = _trainer(Keeps(), rounds=2, eval_every=None)
        keeps.fit(BoringClassifier(in_features=64), image_datamodule())
    assert not [r for r in caplog.records if "wrote ctx.state" in r.getMessage()]
    assert keeps.client_states and all("seen" in s for s in keeps.client_states.values())
