"""Lightning's accelerator, devices and precision names resolve to one placement, or fail early."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.fabric.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision

from fedlightning.accelerators import ACCELERATORS, PRECISIONS, Placement, resolve_placement

cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False"
)


def test_cpu_names_resolve() -> None:
    placement = resolve_placement("cpu", 1, "32-true")
    assert placement == Placement("cpu", None, "32-true") and placement.is_default
    assert placement.device == torch.device("cpu")
    assert resolve_placement("cpu", "auto", "bf16").precision == "bf16-mixed"
    assert resolve_placement("cpu", [0], 64).precision == "64-true"  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        assert resolve_placement("auto").accelerator in ("cpu", "mps")


@pytest.mark.parametrize(
    "precision,plugin", [("bf16-mixed", MixedPrecision), ("64-true", DoublePrecision)]
)
def test_plugins_are_fabrics(precision: str, plugin: type) -> None:
    placement = resolve_placement("cpu", 1, precision)
    assert isinstance(placement.plugin(), plugin)
    assert placement.plugin() is not placement.plugin()  # a fresh one per local run
    assert isinstance(resolve_placement("cpu", 1, "bf16-true").plugin(), HalfPrecision)


def test_bad_names_are_refused_with_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"accelerator must be one of .*'cuda'.*accelerator='tpu'"):
        resolve_placement("tpu")
    with pytest.raises(ValueError, match=r"precision must be one of .*'bf16-mixed'.*precision='8'"):
        resolve_placement("cpu", 1, "8")
    with pytest.raises(ValueError, match=r"devices must be one device .*devices=2"):
        resolve_placement("cpu", 2)
    with pytest.raises(ValueError, match=r"devices=\[0, 1\]"):
        resolve_placement("cpu", [0, 1])
    with pytest.raises(ValueError, match="precision='16-mixed' needs a GPU"):
        resolve_placement("cpu", 1, "16-mixed")
    assert set(ACCELERATORS) >= {"auto", "cpu", "cuda", "gpu", "mps"}
    assert set(PRECISIONS) == {"32-true", "64-true", "16-mixed", "bf16-mixed", "bf16-true"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match=r"accelerator='cuda' needs a CUDA device"):
        resolve_placement("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match=r"accelerator='gpu' needs a CUDA or MPS device"):
            resolve_placement("gpu")


@cuda
@pytest.mark.cuda
def test_cuda_placement_moves_modules_and_batches() -> None:
    placement = resolve_placement("cuda", 1, "16-mixed")
    module = placement.place_module(torch.nn.Linear(3, 2))
    assert next(module.parameters()).device.type == "cuda"
    batch = placement.place_batch((torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)))
    assert batch[0].device.type == "cuda" and batch[0].dtype == torch.float16
    assert batch[1].dtype == torch.long


def _cuda_fit(executor: Any, tmp_path: Any = None, **kwargs: Any) -> tuple[Any, Any]:
    from fedlightning import FederatedTrainer
    from fedlightning.demos import BoringClassifier, demo_datamodule

    torch.manual_seed(0)
    model = BoringClassifier()
    trainer = FederatedTrainer(
        rounds=2,
        clients_per_round=3,
        executor=executor,
        progress_bar=False,
        output_dir=tmp_path,
        checkpoint_every=1 if tmp_path is not None else None,
        **{"accelerator": "cuda", **kwargs},
    )
    trainer.fit(model, demo_datamodule(num_clients=4))
    return trainer, model


@cuda
@pytest.mark.cuda
def test_cuda_run_keeps_model_and_aggregation_on_the_device(tmp_path: Any) -> None:
    from fedlightning.callbacks import Callback

    seen: list[str] = []

    class Devices(Callback):
        def on_message(self, trainer: Any, round: int, client: int, direction: Any, m: Any) -> None:
            seen.extend(t.device.type for t in m.decode().values())

    _, model = _cuda_fit("sequential", tmp_path, callbacks=[Devices()])
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert set(seen) == {"cuda"}  # both directions: encoded and aggregated on the GPU
    from fedlightning.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    from fedlightning.demos import BoringClassifier

    cpu_model = BoringClassifier()
    cpu_model.load_state_dict(state["model"])  # a GPU checkpoint loads on the CPU
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), cpu_model.state_dict()[k])


@cuda
@pytest.mark.cuda
def test_cuda_vectorized_equals_sequential_on_the_device() -> None:
    from fedlightning.executors.vectorized import VectorizedExecutor

    _, seq = _cuda_fit("sequential")
    executor = VectorizedExecutor()
    _, vec = _cuda_fit(executor)  # type: ignore[arg-type]
    assert executor.fallbacks == []
    for k, v in seq.state_dict().items():
        assert torch.allclose(v, vec.state_dict()[k], atol=1e-5), k


@cuda
@pytest.mark.cuda
def test_cuda_bytes_do_not_depend_on_device_or_mixed_precision() -> None:
    cpu, _ = _cuda_fit("sequential", accelerator="cpu")
    gpu, _ = _cuda_fit("sequential")
    mixed, _ = _cuda_fit("sequential", precision="16-mixed")
    bytes_total = [h["bytes_total"] for h in cpu.history]
    assert bytes_total == [h["bytes_total"] for h in gpu.history]
    assert bytes_total == [h["bytes_total"] for h in mixed.history]
