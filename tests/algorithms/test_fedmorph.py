import copy

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms.base import ClientContext
from fedlightning.algorithms.fedmorph import FedMorph, FedMorphProx, distill, recalibrate_batchnorm
from fedlightning.algorithms.subnetwork import WIDTHS_KEY
from fedlightning.codecs import TopK
from fedlightning.messages import Message
from fedlightning.models.masked import MaskedResNet8, cut, js_divergence, relaxed_size

from .test_subnetwork import SIZE, Capture, data, tiny


def test_distill_moves_the_student_towards_the_teacher() -> None:
    torch.manual_seed(0)  # the weights' initialisation
    student = tiny(seed=1)
    teacher = cut(tiny(seed=2))  # another network: far from the student
    x = torch.rand(64, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    student.eval()
    teacher.eval()
    with torch.no_grad():
        before = float(js_divergence(student(x), teacher(x)))
    distill(
        student,
        teacher,
        x,
        epochs=15,
        batch_size=16,
        lr=0.05,
        lam=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    student.eval()
    with torch.no_grad():
        after = float(js_divergence(student(x), teacher(x)))
    assert after < 0.5 * before


def test_distill_with_a_large_lambda_shrinks_the_network() -> None:
    student = tiny(seed=1)
    teacher = cut(tiny(seed=1))
    x = torch.rand(32, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    size0 = float(relaxed_size(student, hard=True))
    out = distill(
        student,
        teacher,
        x,
        epochs=5,
        batch_size=8,
        lr=0.5,
        lam=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(relaxed_size(student, hard=True)) < size0
    assert out["distill_steps"] == 20.0
    assert 0.0 <= out["distill_js"] <= 0.7


def test_distill_is_reproducible_from_its_generator() -> None:
    x = torch.rand(16, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    results = []
    base_student, base_teacher = tiny(seed=1), cut(tiny(seed=2))
    for _ in range(2):
        student, teacher = copy.deepcopy(base_student), copy.deepcopy(base_teacher)
        distill(
            student,
            teacher,
            x,
            epochs=1,
            batch_size=8,
            lr=0.1,
            lam=1e-4,
            generator=torch.Generator().manual_seed(9),
        )
        results.append(student.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def _self_distilled_js(masks: str, seed: int) -> float:
    """JS between a sub-network and its own network after distilling into it, lam = 0.

    The mask logits are (almost) frozen, so the sub-network morphed afterwards keeps the
    same channels and any divergence comes from what distillation did to the weights.
    One batch of all the images, so the student's batch statistics are the teacher's
    running statistics and the two start out computing the same function.
    """
    torch.manual_seed(seed)  # the weights' initialisation
    student = tiny(seed=seed)
    with torch.no_grad():
        for i, v in enumerate(student.mask_logits.values()):
            v.copy_(torch.linspace(-1.0, 1.0, v.shape[0]).roll(i))
        student.fc.weight.mul_(10.0)  # confident outputs, as after training
    x = torch.rand(64, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    student.train()
    student.train_masks = "straight_through"
    with torch.no_grad():  # BatchNorm statistics of the sub-network, as after client training
        for _ in range(100):
            student(x)
    student.train_masks = "noisy"
    teacher = cut(student)
    teacher.eval()
    distill(
        student,
        teacher,
        x,
        epochs=10,
        batch_size=64,
        lr=0.01,
        lam=0.0,
        masks=masks,
        mask_lr=1e-9,  # the same sub-network before and after
        generator=torch.Generator().manual_seed(seed),
    )
    morphed = cut(student)
    morphed.eval()
    with torch.no_grad():
        return float(js_divergence(morphed(x), teacher(x)))


@pytest.mark.parametrize("seed", [0, 1])
def test_straight_through_distillation_keeps_the_sub_network_noisy_does_not(seed: int) -> None:
    straight = _self_distilled_js("straight_through", seed)
    noisy = _self_distilled_js("noisy", seed)
    assert straight < 1e-3
    assert noisy > 10 * straight


def test_mask_lr_sets_the_mask_logits_step() -> None:
    x = torch.rand(32, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    moved = []
    for mask_lr in (1e-6, 1.0):
        student = tiny(seed=1)
        before = {g: v.detach().clone() for g, v in student.mask_logits.items()}
        distill(
            student,
            cut(tiny(seed=1)),
            x,
            epochs=1,
            batch_size=8,
            lr=0.1,
            lam=1e-2,
            mask_lr=mask_lr,
            generator=torch.Generator().manual_seed(0),
        )
        after = {g: v.detach() for g, v in student.mask_logits.items()}
        moved.append(max(float((after[g] - before[g]).abs().max()) for g in before))
    assert moved[0] < 1e-4
    assert moved[1] > 1e3 * moved[0]


def test_distill_rejects_bad_settings() -> None:
    x = torch.rand(4, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="epochs must be"):
        distill(tiny(), cut(tiny()), x, epochs=0, batch_size=2, lr=0.1, lam=0.0)
    with pytest.raises(ValueError, match="masked student"):
        distill(tiny(masked=False), cut(tiny()), x, epochs=1, batch_size=2, lr=0.1, lam=0.0)
    with pytest.raises(ValueError, match="inputs must be"):
        distill(tiny(), cut(tiny()), x[0], epochs=1, batch_size=2, lr=0.1, lam=0.0)
    with pytest.raises(ValueError, match="masks must be one of"):
        distill(tiny(), cut(tiny()), x, epochs=1, batch_size=2, lr=0.1, lam=0.0, masks="hard")
    with pytest.raises(ValueError, match="mask_lr must be"):
        distill(tiny(), cut(tiny()), x, epochs=1, batch_size=2, lr=0.1, lam=0.0, mask_lr=0.0)


def test_fedmorph_distils_on_schedule_and_morphs_a_new_sub_network() -> None:
    model = tiny()
    masks0 = {g: v.detach().clone() for g, v in model.mask_logits.items()}
    algorithm = FedMorph(
        distill_every=2,
        distill_epochs=1,
        distill_batch_size=8,
        lam=1e-3,
        distill_lr=0.1,
        distill_samples=12,
    )
    trainer = FederatedTrainer(
        algorithm=algorithm, rounds=2, clients_per_round=2, seed=0, progress_bar=False
    )
    trainer.fit(model, data())
    assert "distill_js" not in trainer.history[0]
    assert "distill_js" in trainer.history[1]
    assert trainer.history[1]["distill_steps"] == 2.0  # 12 samples, batch 8
    assert any(not torch.equal(masks0[g], model.mask_logits[g]) for g in model.groups)
    assert [h["round"] for h in algorithm.layer_history] == [0.0, 2.0]
    assert set(algorithm.layer_ratios()) == set(model.groups)


def test_fedmorph_init_keep_ratio_sets_the_first_sub_network() -> None:
    model = tiny(seed=4)
    algorithm = FedMorph(distill_every=100, init_keep_ratio=0.5)
    capture = Capture()
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=1,
        clients_per_round=2,
        seed=0,
        progress_bar=False,
        callbacks=[capture],
    )
    trainer.fit(model, data())
    widths = {g: -(-w // 2) for g, w in model.widths.items()}  # ceil(0.5 * C)
    assert algorithm.layer_history[0] == {
        "round": 0.0,
        **{g: widths[g] / model.widths[g] for g in model.groups},
    }
    assert capture.down[0].extras[WIDTHS_KEY].tolist() == [widths[g] for g in model.groups]


def test_fedmorph_with_topk_uplink_sends_a_fraction_of_the_update() -> None:
    plain = FederatedTrainer(
        algorithm=FedMorph(distill_every=100),
        rounds=1,
        clients_per_round=2,
        seed=0,
        progress_bar=False,
    )
    plain.fit(tiny(), data())
    topk = FederatedTrainer(
        algorithm=FedMorph(distill_every=100, uplink=TopK(0.1)),
        rounds=1,
        clients_per_round=2,
        seed=0,
        progress_bar=False,
    )
    topk.fit(tiny(), data())
    assert topk.history[0]["bytes_down"] == plain.history[0]["bytes_down"]
    assert topk.history[0]["bytes_up"] < 0.3 * plain.history[0]["bytes_up"]


def test_fedmorph_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="distill_every must be"):
        FedMorph(distill_every=0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        FedMorph(lam=-1.0)
    with pytest.raises(ValueError, match="regularizer must be"):
        FedMorph(regularizer="bytes")
    with pytest.raises(ValueError, match="distill_data must be"):
        FedMorph(distill_data=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="distill_masks must be one of"):
        FedMorph(distill_masks="gumbel")
    with pytest.raises(ValueError, match="mask_lr must be"):
        FedMorph(mask_lr=-1.0)
    with pytest.raises(ValueError, match="init_keep_ratio must be"):
        FedMorph(init_keep_ratio=0.0)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        FedMorphProx(mu=-0.1)


def test_fedmorphprox_adds_the_proximal_term() -> None:
    algorithm = FedMorphProx(mu=0.5)
    module = cut(tiny())
    received = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        module.fc.bias.add_(2.0)  # 10 entries moved by 2
    ctx = ClientContext(client=0, round=1, message=Message(), received=received, num_samples=1)
    loss = algorithm.training_loss(ctx, module, None, torch.tensor(1.0))
    assert float(loss.detach()) == pytest.approx(1.0 + 0.5 * 0.5 * 10 * 4.0)
    assert copy.copy(algorithm).mu == 0.5
    assert "FedMorphProx(mu=0.5" in repr(algorithm)


def test_fedmorph_can_regularize_flops() -> None:
    model = MaskedResNet8(image_size=SIZE, widths=tiny().widths)
    algorithm = FedMorph(
        distill_every=1,
        distill_epochs=1,
        regularizer="flops",
        lam=1e-9,
        distill_samples=8,
        distill_batch_size=8,
    )
    trainer = FederatedTrainer(
        algorithm=algorithm, rounds=1, clients_per_round=1, seed=0, progress_bar=False
    )
    trainer.fit(model, data())
    expected = float(relaxed_size(model, "flops").detach())
    assert trainer.history[0]["distill_size"] == pytest.approx(expected, rel=1e-6)


def test_layer_ratios_are_shares_of_the_server_network_widths() -> None:
    model = tiny()
    algorithm = FedMorph(distill_every=100)
    FederatedTrainer(
        algorithm=algorithm, rounds=1, clients_per_round=1, seed=0, progress_bar=False
    ).fit(model, data())
    kept = {g: int((model.mask_logits[g] >= 0).sum()) for g in model.groups}
    expected = {g: max(kept[g], 1) / model.widths[g] for g in model.groups}
    assert algorithm.layer_ratios() == pytest.approx(expected)


def test_bn_recalibration_matches_the_statistics_of_the_cut_network() -> None:
    model = tiny()
    x = torch.rand(40, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    recalibrate_batchnorm(model, x, batch_size=40)
    # one batch with momentum=None: the running mean is that batch's mean, masks deterministic
    sub = cut(model)
    seen: dict[str, torch.Tensor] = {}
    sub.stem_bn.register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0]))
    sub.eval()
    with torch.no_grad():
        sub(x)
    kept = torch.nonzero(model.mask_logits["stem"] >= 0).flatten()
    assert torch.allclose(model.stem_bn.running_mean[kept], seen["in"].mean((0, 2, 3)), atol=1e-5)
    assert model.train_masks == "noisy" and model.stem_bn.momentum == 0.1
