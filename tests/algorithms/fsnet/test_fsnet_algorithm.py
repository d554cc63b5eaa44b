"""Tests of the FedFSNet algorithm on a tiny generated federated dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.algorithms.base import ClientContext
from fedlightning.algorithms.fsnet import (
    ConstantBeta,
    FedFSNet,
    PayloadBreakdown,
    StepDecay,
    client_statistics,
    kl_uniform,
)
from fedlightning.client import fit_local
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.messages import Message
from fedlightning.models import MNISTClassifier

NUM_SYNTHETIC = 8
IMAGE_BYTES = 28 * 28 * 4


def _data(n: int = 160, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4-class images: the bright quadrant is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = 0.2 * torch.rand(n, 1, 28, 28, generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] += 0.8
    return x, y


def _datamodule() -> FederatedDataModule:
    return FederatedDataModule(
        _data(), partition=SortedShards(4, 2), batch_size=20, seed=0, test=_data(40, seed=1)
    )


def _fsnet(**kwargs: object) -> FedFSNet:
    settings: dict[str, object] = {
        "num_synthetic": NUM_SYNTHETIC,
        "hidden_widths": (16,),
        "hidden_steps": 3,
        "hidden_batch_size": 8,
    }
    settings.update(kwargs)
    return FedFSNet(**settings)  # type: ignore[arg-type]


def _fit(algorithm: FedFSNet | FedAvg, rounds: int = 2, **kwargs: object) -> FederatedTrainer:
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=2,
        local_epochs=1,
        seed=3,
        progress_bar=False,
        **kwargs,  # type: ignore[arg-type]
    )
    torch.manual_seed(0)
    trainer.fit(MNISTClassifier(lr=0.05, num_classes=4), _datamodule())
    return trainer


def test_messages_carry_statistics_up_and_synthetic_samples_down_with_their_bytes() -> None:
    payload = PayloadBreakdown()
    trainer = _fit(_fsnet(beta=StepDecay(initial=0.5, factor=0.1, every=1)), 3, callbacks=[payload])
    algorithm = trainer.algorithm
    assert isinstance(algorithm, FedFSNet)
    weights = sum(v.numel() * 4 for v in trainer.global_model.state_dict().values())
    # Round 1 is plain FedAvg; rounds 2-3 send D' (and beta) to each of the 2 clients.
    assert payload.total["down_tensors"] == 3 * 2 * weights
    assert payload.total["down_extras"] == 2 * 2 * NUM_SYNTHETIC * IMAGE_BYTES
    assert payload.total["down_scalars"] == 2 * 2 * 8
    # Every reply carries a scalar mean and variance: 2 float32 values.
    assert payload.total["up_extras"] == 3 * 2 * 8
    assert trainer.results["payload"]["extras_share_down"] == pytest.approx(
        (2 * NUM_SYNTHETIC * IMAGE_BYTES) / (3 * weights)
    )
    assert algorithm.synthetic is not None
    assert algorithm.synthetic.shape == (NUM_SYNTHETIC, 1, 28, 28)
    message = algorithm.server_message(4, 0)
    assert message.scalars["beta"] == pytest.approx(0.5 * 0.1**3)
    torch.testing.assert_close(message.extras["synthetic"], algorithm.synthetic)
    assert {"fsnet_hidden_loss", "fsnet_synthetic_agreement"} <= set(trainer.history[-1])


def test_server_keeps_each_clients_statistics_for_the_mixture() -> None:
    trainer = _fit(_fsnet(statistics="pixel"), 2)
    algorithm = trainer.algorithm
    assert isinstance(algorithm, FedFSNet)
    dm = trainer.datamodule
    assert algorithm.client_stats  # every client seen so far
    for client, (mean, var, n) in algorithm.client_stats.items():
        expected_mean, expected_var = client_statistics(dm.client_data(client)[0], "pixel")
        torch.testing.assert_close(mean, expected_mean)
        torch.testing.assert_close(var, expected_var)
        assert n == dm.num_samples(client)
    prior = algorithm.prior()
    assert prior.means.shape == (len(algorithm.client_stats), 1, 28, 28)


def test_with_beta_zero_fedfsnet_trains_exactly_like_fedavg() -> None:
    fsnet = _fit(_fsnet(beta=ConstantBeta(0.0)), 3)
    fedavg = _fit(FedAvg(), 3)
    for key, value in fedavg.global_model.state_dict().items():
        torch.testing.assert_close(fsnet.global_model.state_dict()[key], value, rtol=0, atol=0)


def test_with_beta_the_global_model_differs_from_fedavg() -> None:
    fsnet = _fit(_fsnet(beta=ConstantBeta(5.0)), 2)
    fedavg = _fit(FedAvg(), 2)
    a = fsnet.global_model.state_dict()["classifier.3.weight"]
    assert not torch.allclose(a, fedavg.global_model.state_dict()["classifier.3.weight"])


def _context(message: Message) -> ClientContext:
    return ClientContext(client=0, round=2, message=message, received={}, num_samples=10)


def test_training_loss_is_eq_11() -> None:
    torch.manual_seed(0)
    module = MNISTClassifier(num_classes=4)
    synthetic = torch.rand(NUM_SYNTHETIC, 1, 28, 28)
    ctx = _context(Message(extras={"synthetic": synthetic}, scalars={"beta": 0.3}))
    loss = torch.tensor(1.25)
    out = _fsnet().training_loss(ctx, module, None, loss)
    expected = 1.25 + 0.3 * kl_uniform(module(synthetic)).item()
    assert out.item() == pytest.approx(expected, rel=1e-6)
    assert _fsnet().training_loss(_context(Message()), module, None, loss) is loss


def test_regularizer_flattens_local_predictions_on_synthetic_samples() -> None:
    x, y = _data(80)
    synthetic = x[y != 0][:NUM_SYNTHETIC] + 0.05  # inputs of other classes than the client's
    local = [(x[y == 0][i : i + 10], y[y == 0][i : i + 10]) for i in range(0, 20, 10)]
    kls = {}
    for beta in (0.0, 2.0):
        torch.manual_seed(0)
        module = MNISTClassifier(lr=0.1, num_classes=4)
        ctx = _context(Message(extras={"synthetic": synthetic}, scalars={"beta": beta}))
        algorithm = _fsnet()
        fit_local(
            module,
            local,
            epochs=20,
            loss_hook=lambda batch, loss, m=module, c=ctx, a=algorithm: a.training_loss(
                c, m, batch, loss
            ),
        )
        with torch.no_grad():
            kls[beta] = kl_uniform(module(synthetic)).item()
    # A client with one class predicts it everywhere; eq. (11) keeps it unsure on D'.
    assert kls[2.0] < 0.5 * kls[0.0]


def test_checkpoint_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    full = _fit(_fsnet(), 3)
    _fit(_fsnet(), 2, output_dir=tmp_path, checkpoint_every=1)
    resumed = _fit(_fsnet(), 3, resume=tmp_path / "checkpoints" / "round_0002.ckpt")
    for key, value in full.global_model.state_dict().items():
        torch.testing.assert_close(resumed.global_model.state_dict()[key], value)
    a, b = full.algorithm, resumed.algorithm
    assert isinstance(a, FedFSNet) and isinstance(b, FedFSNet)
    assert a.synthetic is not None and b.synthetic is not None
    torch.testing.assert_close(a.synthetic, b.synthetic)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_synthetic": 0}, "num_synthetic must be an integer >= 1"),
        ({"hidden_steps": 0}, "hidden_steps must be an integer >= 1"),
        ({"statistics": "median"}, "statistics must be 'scalar' or 'pixel'"),
        ({"mixture_weights": "softmax"}, "mixture_weights must be"),
        ({"hidden_lr": 0.0}, "hidden_lr must be > 0"),
        ({"dominance": (0.9, 0.5)}, "dominance must be"),
        ({"beta": 0.5}, "beta must be a callable"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedFSNet(**kwargs)  # type: ignore[arg-type]


def test_dominance_must_dominate_for_the_datasets_classes() -> None:
    with pytest.raises(ValueError, match="dominance must start above 1/num_classes"):
        _fit(_fsnet(dominance=(0.2, 0.3)), 1)
