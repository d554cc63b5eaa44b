"""Server-side state follows the global model's placement: its device and floating dtype.

The trainer places the global model (device, and float64 / bfloat16 for ``"64-true"`` /
``"bf16-true"``) before ``Algorithm.setup``; hidden models, distillation inputs, teachers and
community models must follow it, and client hooks must convert what a message carries to the
working module's placement. Without a GPU, ``precision="64-true"`` on the CPU is the proxy: a
float64 model fed a float32 tensor fails where a CUDA model fed a CPU tensor would, so a
missing conversion shows up here. ``"bf16-mixed"`` keeps float32 parameters and runs the
clients under autocast with bfloat16 inputs. The ``cuda``-marked runs check the device itself
where one exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from fedlightning import FederatedTrainer
from fedlightning.algorithms import Algorithm
from fedlightning.algorithms.community import (
    AutoencoderDetector,
    CommunityFedAvg,
    GroupIdentification,
    client_aucs,
)
from fedlightning.algorithms.fed_dropout import FedDropout
from fedlightning.algorithms.fed_pruned import FedPruned
from fedlightning.algorithms.fedmorph import FedMorph, FedMorphProx
from fedlightning.algorithms.fsnet import ConstantBeta, FedFSNet
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.models import MNISTClassifier
from fedlightning.models.autoencoders import ConvAutoencoder5
from fedlightning.models.masked import (
    count_flops,
    cut,
    kept_from_masks,
    logistic_noise,
    slice_state,
)

from .test_subnetwork import data as masked_data
from .test_subnetwork import tiny

PRECISIONS = ("64-true", "bf16-mixed")
#: The parameters' dtype under each precision: mixed precision keeps float32 weights.
PARAM_DTYPE = {"32-true": torch.float32, "64-true": torch.float64, "bf16-mixed": torch.float32}


# ---------------------------------------------------------------------- workloads
def _fsnet_data() -> FederatedDataModule:
    """4-class 28 x 28 images (the bright quadrant is the class), 4 non-IID clients."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 4
    x = 0.2 * torch.rand(100, 1, 28, 28, generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] += 0.8
    return FederatedDataModule(
        (x[:80], y[:80]), partition=SortedShards(4, 2), batch_size=20, seed=0, test=(x[80:], y[80:])
    )


def _anomaly_data() -> AnomalyDataModule:
    """4 clients (2 per class) of dark / bright 8 x 8 images, with outliers."""

    def images(n: int, seed: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(2).repeat_interleave(n)
        x = torch.tensor([0.2, 0.8])[y].view(-1, 1, 1, 1)
        return (x + 0.05 * torch.randn(len(y), 1, 8, 8, generator=g)).clamp(0, 1), y

    dm = AnomalyDataModule(
        images(40, 0),
        test=images(20, 1),
        clients_per_class=2,
        outlier_fraction=0.1,
        num_classes=2,
        batch_size=16,
        seed=0,
    )
    dm.setup()
    return dm


Workload = Callable[[], tuple[Algorithm, LightningModule, FederatedDataModule]]

WORKLOADS: dict[str, Workload] = {
    "FedFSNet": lambda: (
        FedFSNet(
            num_synthetic=8,
            beta=ConstantBeta(0.5),
            hidden_widths=(16,),
            hidden_steps=3,
            hidden_batch_size=8,
        ),
        MNISTClassifier(lr=0.05, num_classes=4),
        _fsnet_data(),
    ),
    "FedMorph": lambda: (
        FedMorph(
            distill_every=1,
            distill_epochs=1,
            distill_batch_size=8,
            distill_samples=12,
            recalibrate_bn=True,
            init_keep_ratio=0.5,
        ),
        tiny(),
        masked_data(),
    ),
    "FedMorphProx": lambda: (
        FedMorphProx(
            mu=0.01,
            distill_every=1,
            distill_epochs=1,
            distill_batch_size=8,
            distill_masks="straight_through",
        ),
        tiny(),
        masked_data(),
    ),
    "FedDropout": lambda: (FedDropout(0.5, per_client=True), tiny(), masked_data()),
    "FedPruned": lambda: (FedPruned(0.5), tiny(), masked_data()),
    "CommunityFedAvg": lambda: (
        CommunityFedAvg(
            phase1=GroupIdentification(
                AutoencoderDetector(ConvAutoencoder5(), epochs=1, batch_size=16), tolerance=0.1
            )
        ),
        ConvAutoencoder5(),
        _anomaly_data(),
    ),
}


def _fit(name: str, **settings: Any) -> FederatedTrainer:
    algorithm, model, datamodule = WORKLOADS[name]()
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=2,
        clients_per_round=2,
        local_epochs=1,
        seed=3,
        progress_bar=False,
        **settings,
    )
    trainer.fit(model, datamodule)
    return trainer


def _server_tensors(trainer: FederatedTrainer) -> dict[str, Tensor]:
    """The floating tensors of the algorithm's server-side models and data, by name."""
    algorithm = trainer.algorithm
    out: dict[str, Tensor] = {}
    if isinstance(algorithm, FedFSNet):
        for key, value in algorithm.hidden_model.state_dict().items():
            out[f"hidden.{key}"] = value
    if isinstance(algorithm, FedMorph):
        out["distill_inputs"] = algorithm.distill_inputs
        for key, value in cut(algorithm.model).state_dict().items():
            out[f"teacher.{key}"] = value
    if isinstance(algorithm, CommunityFedAvg):
        for index, state in enumerate(algorithm.states):
            for key, value in state.items():
                out[f"community{index}.{key}"] = value
        for key, value in algorithm.community_model(0).state_dict().items():
            out[f"community_model.{key}"] = value
    return {k: v for k, v in out.items() if v.is_floating_point()}


def _check_run(trainer: FederatedTrainer, dtype: torch.dtype, device: str) -> None:
    assert trainer.drops == []
    assert len(trainer.history) == 2
    for entry in trainer.history:
        bad = {k: v for k, v in entry.items() if not math.isfinite(v)}
        assert not bad, f"non-finite metrics: {bad}"
    model_state = trainer.global_model.state_dict()
    floating = {k: v for k, v in model_state.items() if v.is_floating_point()}
    assert floating and all(v.dtype == dtype for v in floating.values())
    assert all(v.device.type == device for v in model_state.values())
    server = _server_tensors(trainer)
    wrong = {
        k: (v.dtype, v.device.type)
        for k, v in server.items()
        if v.dtype != dtype or v.device.type != device
    }
    assert not wrong, f"server-side tensors off the global model's placement: {wrong}"
    algorithm = trainer.algorithm
    if isinstance(algorithm, FedFSNet):
        # D' travels as float32 images whatever the precision, from the model's device.
        assert algorithm.synthetic is not None
        assert algorithm.synthetic.dtype == torch.float32
        assert algorithm.synthetic.device.type == device
        assert trainer.history[-1]["fsnet_synthetic_agreement"] >= 0.0
    if isinstance(algorithm, FedMorph):
        assert trainer.history[-1]["distill_steps"] > 0
    if isinstance(algorithm, CommunityFedAvg):
        # Community models score CPU float32 test data wherever they live.
        data = trainer.datamodule
        assert isinstance(data, AnomalyDataModule)
        models = [algorithm.community_model(algorithm.community_of(c)) for c in data.client_ids]
        aucs = client_aucs(models, data.inlier_classes.tolist(), data.class_test_data)
        assert all(0.0 <= a <= 1.0 for a in aucs)


# ---------------------------------------------------------------------- the runs
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_server_side_state_follows_the_global_model(name: str, precision: str) -> None:
    torch.manual_seed(0)
    trainer = _fit(name, accelerator="cpu", precision=precision)
    _check_run(trainer, PARAM_DTYPE[precision], "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["32-true", "64-true"])
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_server_side_state_follows_the_global_model_on_cuda(name: str, precision: str) -> None:
    torch.manual_seed(0)
    trainer = _fit(name, accelerator="cuda", precision=precision)
    _check_run(trainer, PARAM_DTYPE[precision], "cuda")


# ---------------------------------------------------------------------- the helpers
def test_a_teacher_cut_from_a_float64_network_keeps_its_exact_weights() -> None:
    model = tiny().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12)  # below float32's resolution: a float32 round trip would lose it
    kept = kept_from_masks(model)
    teacher = cut(model, kept)
    expected = slice_state(model, kept)
    for key, value in teacher.state_dict().items():
        assert value.dtype == expected[key].dtype
        assert torch.equal(value, expected[key]), key
    assert count_flops(teacher) == count_flops(cut(tiny(), kept))


def test_noise_from_a_cpu_generator_is_the_same_whatever_the_output_placement() -> None:
    draw = logistic_noise((3, 4), generator=torch.Generator().manual_seed(0))
    same = logistic_noise((3, 4), generator=torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(draw, same)
    wide = logistic_noise(
        (3, 4), generator=torch.Generator().manual_seed(0), device="cpu", dtype=torch.float64
    )
    assert wide.dtype == torch.float64 and torch.isfinite(wide).all()
