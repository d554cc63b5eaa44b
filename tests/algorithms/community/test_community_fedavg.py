from types import SimpleNamespace

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms import FedAvg
from fedlightning.algorithms.base import Reply
from fedlightning.algorithms.community import (
    CommunityFedAvg,
    GroupIdentification,
    client_aucs,
    true_communities,
)
from fedlightning.callbacks import Callback, CommCost
from fedlightning.messages import Message
from fedlightning.models.autoencoders import ConvAutoencoder5

S_U = 4 * 3_217  # the Phase II model here is the 5-layer AE (it runs on 8x8 images)


def _trainer(algorithm, rounds=2, **kw):
    return FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        local_epochs=1,
        seed=0,
        callbacks=[CommCost(), *kw.pop("callbacks", [])],
        eval_every=None,
        progress_bar=False,
        **kw,
    )


def test_phase1_and_phase2_bytes_through_the_trainer(two_class_data, brightness_detector):
    algo = CommunityFedAvg(phase1=GroupIdentification(brightness_detector(), tolerance=0.1))
    trainer = _trainer(algo, rounds=2)
    torch.manual_seed(0)
    trainer.fit(ConvAutoencoder5(), two_class_data)
    assert algo.communities == [[0, 1, 2], [3, 4, 5]]
    assert algo.phase1_result is not None
    phase2 = sum(h["bytes_down"] + h["bytes_up"] for h in trainer.history)
    # eq. (2): r * sum 2 |G_i| S_u, plus the 8-byte sample count on each upload.
    assert phase2 == 2 * (2 * 6 * S_U) + 2 * 6 * 8
    assert trainer.results["bytes"]["total"] - phase2 == algo.phase1_result.bytes["total"]
    # Members share their community's model; the two communities differ.
    a, b = algo.community_model(0), algo.community_model(1)
    assert algo.community_of(1) == algo.community_of(2) == 0
    assert not torch.equal(a.net[0].weight, b.net[0].weight)
    aucs = client_aucs(
        [a if algo.community_of(c) == 0 else b for c in range(6)],
        two_class_data.inlier_classes.tolist(),
        two_class_data.class_test_data,
    )
    assert len(aucs) == 6 and aucs[0] == aucs[1] == aucs[2]


def test_one_community_of_everybody_is_fedavg(two_class_data):
    torch.manual_seed(0)
    model = ConvAutoencoder5()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    algo = CommunityFedAvg(communities=[list(range(6))])
    _trainer(algo).fit(model, two_class_data)
    reference = ConvAutoencoder5()
    reference.load_state_dict(init)
    ref_trainer = _trainer(FedAvg())
    ref_trainer.fit(reference, two_class_data)
    for key, value in ref_trainer.global_model.state_dict().items():
        torch.testing.assert_close(algo.states[0][key], value)


def test_updates_are_averaged_only_inside_each_community():
    model = ConvAutoencoder5()
    algo = CommunityFedAvg(communities=[[0, 2], [1]])
    algo.setup(SimpleNamespace(), model, SimpleNamespace(num_clients=3))  # type: ignore[arg-type]
    before = [{k: v.clone() for k, v in s.items()} for s in algo.states]
    key = "net.0.bias"

    def reply(client, value, n):
        update = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
        update[key] += value
        return Reply(client, Message(update), n)

    algo.aggregate(1, [reply(0, 1.0, 10), reply(1, 5.0, 1), reply(2, 4.0, 30)])
    torch.testing.assert_close(algo.states[0][key], before[0][key] + (10 * 1.0 + 30 * 4.0) / 40)
    torch.testing.assert_close(algo.states[1][key], before[1][key] + 5.0)


class _Steps(Callback):
    def __init__(self):
        self.steps = {}

    def on_client_fit_end(self, trainer, round, reply):
        self.steps.setdefault(round, set()).add(reply.metrics["steps"])


def test_epochs_per_round_follow_the_reference_schedule(two_class_data):
    steps = _Steps()
    algo = CommunityFedAvg(communities=[[0, 1, 2], [3, 4, 5]], epochs_per_round=[1, 2])
    _trainer(algo, rounds=3, callbacks=[steps]).fit(ConvAutoencoder5(), two_class_data)
    per_epoch = -(-66 // 32)  # 66 samples per client, batch 32
    assert steps.steps == {1: {per_epoch}, 2: {2 * per_epoch}, 3: {2 * per_epoch}}


def test_true_communities_and_bad_settings():
    assert true_communities([1, 0, 1, 0]) == [[1, 3], [0, 2]]
    with pytest.raises(ValueError, match="exactly one of communities"):
        CommunityFedAvg()
    with pytest.raises(ValueError, match="exactly one of communities"):
        CommunityFedAvg(communities=[[0]], phase1=GroupIdentification())
    with pytest.raises(ValueError, match="epochs_per_round"):
        CommunityFedAvg(communities=[[0]], epochs_per_round=[1, 0])


def test_resume_keeps_the_communities_and_does_not_rerun_phase1(
    two_class_data, brightness_detector, tmp_path, monkeypatch
):
    """Phase I runs once per run: a resumed run takes its communities from the checkpoint."""

    def run(rounds, out, resume=None):
        algo = CommunityFedAvg(phase1=GroupIdentification(brightness_detector(), tolerance=0.1))
        trainer = _trainer(algo, rounds=rounds, output_dir=out, checkpoint_every=1, resume=resume)
        torch.manual_seed(0)
        model = ConvAutoencoder5()
        trainer.fit(model, two_class_data)
        return algo, trainer

    full, full_trainer = run(3, tmp_path / "full")
    run(2, tmp_path / "part")
    calls = []
    original = GroupIdentification.run
    monkeypatch.setattr(
        GroupIdentification, "run", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    resumed, resumed_trainer = run(
        3, tmp_path / "part", resume=tmp_path / "part" / "checkpoints" / "round_0002.ckpt"
    )
    assert calls == []  # Phase I did not run again
    assert resumed.communities == full.communities == [[0, 1, 2], [3, 4, 5]]
    for a, b in zip(resumed.states, full.states, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # Phase I's bytes are counted once, in round 0, in both runs
    assert resumed_trainer.results["bytes"] == full_trainer.results["bytes"]
