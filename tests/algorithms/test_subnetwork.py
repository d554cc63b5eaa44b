"""Shared behaviour of the sub-network algorithms: real byte savings, per-parameter averages."""

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.algorithms.base import Reply
from fedlightning.algorithms.fed_dropout import FedDropout
from fedlightning.algorithms.fed_pruned import FedPruned
from fedlightning.algorithms.fedmorph import FedMorph
from fedlightning.algorithms.subnetwork import WIDTHS_KEY
from fedlightning.callbacks import Callback
from fedlightning.datamodules import IID, FederatedDataModule
from fedlightning.demos import BoringClassifier
from fedlightning.messages import Message
from fedlightning.models.masked import MaskedResNet8, kept_from_masks, slice_state

SIZE = 12


def tiny(masked: bool = True, seed: int = 0) -> MaskedResNet8:
    widths = {
        "stem": 6,
        "s0b0_mid": 6,
        "s0b0_out": 6,
        "s1b0_mid": 8,
        "s1b0_out": 8,
        "s2b0_mid": 10,
        "s2b0_out": 10,
        "s3b0_mid": 12,
        "s3b0_out": 12,
    }
    return MaskedResNet8(image_size=SIZE, widths=widths, masked=masked, seed=seed, lr=0.05)


def data(n: int = 48, clients: int = 4) -> FederatedDataModule:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, SIZE, SIZE, generator=g), torch.randint(0, 10, (n,), generator=g)
    xt, yt = torch.rand(16, 1, SIZE, SIZE, generator=g), torch.randint(0, 10, (16,), generator=g)
    return FederatedDataModule((x, y), partition=IID(clients), batch_size=6, test=(xt, yt))


class Capture(Callback):
    def __init__(self) -> None:
        self.down: list[Message] = []
        self.replies: list[Reply] = []

    def on_message(self, trainer, round, client, direction, message) -> None:  # type: ignore[no-untyped-def]
        if direction == "down":
            self.down.append(message)

    def on_client_fit_end(self, trainer, round, reply) -> None:  # type: ignore[no-untyped-def]
        self.replies.append(reply)


def fit(algorithm, model, rounds: int = 1, clients: int = 2, callbacks=()):  # type: ignore[no-untyped-def]
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=clients,
        seed=3,
        progress_bar=False,
        callbacks=list(callbacks),
    )
    trainer.fit(model, data())
    return trainer


def test_downlink_bytes_are_the_cut_sub_network_bytes() -> None:
    model = tiny()
    kept = kept_from_masks(model)
    sub_state = slice_state(model, kept)
    expected = sum(t.numel() * t.element_size() for t in sub_state.values())
    expected += 4 * len(model.groups)  # the int32 widths
    cap = Capture()
    trainer = fit(FedMorph(distill_every=100), model, callbacks=[cap])
    assert all(m.nbytes == expected for m in cap.down)
    assert trainer.history[-1]["bytes_down"] == 2 * expected
    full = sum(t.numel() * t.element_size() for t in tiny(masked=False).state_dict().values())
    assert expected < 0.75 * full
    ratio = trainer.history[-1]["params_ratio"]
    assert 0 < ratio < 1
    assert cap.down[0].extras[WIDTHS_KEY].tolist() == [int(kept[g].numel()) for g in model.groups]


def test_one_client_round_writes_its_trained_sub_network_into_the_kept_positions() -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = kept_from_masks(model)
    cap = Capture()
    fit(FedMorph(distill_every=100), model, clients=1, callbacks=[cap])
    (reply,) = cap.replies
    trained = {
        k: before_k + reply.message.decode()[k]
        for k, before_k in slice_state_from(before, model, kept).items()
    }
    now = slice_state(model, kept)
    for key, value in trained.items():
        assert torch.allclose(now[key].to(value.dtype), value, atol=1e-6), key
    # channels outside the sub-network are untouched
    w = "blocks.3.conv2.weight"
    dropped = torch.ones(model.widths["s3b0_out"], dtype=torch.bool)
    dropped[kept["s3b0_out"]] = False
    assert torch.equal(model.state_dict()[w][dropped], before[w][dropped])


def slice_state_from(state, model, kept):  # type: ignore[no-untyped-def]
    clone = tiny()
    clone.load_state_dict(state)
    return slice_state(clone, kept)


def test_per_client_dropout_averages_each_parameter_over_its_holders() -> None:
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algorithm = FedDropout(0.5, per_client=True)
    cap = Capture()
    trainer = fit(algorithm, model, clients=2, callbacks=[cap])
    a, b = (algorithm.kept_for(1, r.client) for r in cap.replies)
    assert any(not torch.equal(a[g], b[g]) for g in a)
    bias = "fc.bias"  # held by both: the sample-weighted mean of the two updates
    deltas = [r.message.decode()[bias] for r in cap.replies]
    weights = [r.num_samples for r in cap.replies]
    mean = (deltas[0] * weights[0] + deltas[1] * weights[1]) / sum(weights)
    assert torch.allclose(model.state_dict()[bias], before[bias] + mean, atol=1e-6)
    held = torch.zeros(model.widths["stem"], dtype=torch.bool)
    held[a["stem"]] = True
    held[b["stem"]] = True
    w = model.state_dict()["stem_bn.weight"]
    assert torch.equal(w[~held], before["stem_bn.weight"][~held])
    assert not torch.equal(w[held], before["stem_bn.weight"][held])
    assert trainer.history[-1]["params_ratio"] < 0.5


def test_sub_network_algorithms_need_a_masked_model() -> None:
    with pytest.raises(ValueError, match="masked=True"):
        fit(FedMorph(), tiny(masked=False))
    with pytest.raises(ValueError, match="MaskedClassifier"):
        fit(FedDropout(), BoringClassifier(in_features=3 * 8 * 8))
    with pytest.raises(ValueError, match="model must be a LightningModule, got Linear"):
        fit(FedDropout(), torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_fedpruned_keeps_one_sub_network_and_evaluates_it() -> None:
    model = tiny()
    algorithm = FedPruned(0.5)
    cap = Capture()
    fit(algorithm, model, rounds=2, callbacks=[cap])
    shapes = {tuple(m.extras[WIDTHS_KEY].tolist()) for m in cap.down}
    assert len(shapes) == 1
    assert all(torch.equal(kept_from_masks(model)[g], algorithm.fixed[g]) for g in model.groups)
    restored = FedPruned(0.5)
    restored.load_state_dict(algorithm.state_dict())
    assert all(torch.equal(restored.fixed[g], algorithm.fixed[g]) for g in model.groups)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        FedPruned(1.5)


def test_feddropout_draws_a_new_sub_network_each_round_and_evaluates_the_full_one() -> None:
    model = tiny()
    algorithm = FedDropout(0.5)
    fit(algorithm, model, rounds=2)
    first, second = algorithm.kept(1, 0), algorithm.kept(2, 0)
    assert any(not torch.equal(first[g], second[g]) for g in first)
    assert all(bool((v > 0).all()) for v in model.mask_logits.values())
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        FedDropout(0.0)


def test_fedavg_on_the_plain_network_sends_more_than_fedmorph() -> None:
    cap_avg, cap_morph = Capture(), Capture()
    fit(FedAvg(), tiny(masked=False), callbacks=[cap_avg])
    fit(FedMorph(distill_every=100), tiny(), callbacks=[cap_morph])
    assert cap_morph.down[0].nbytes < cap_avg.down[0].nbytes
