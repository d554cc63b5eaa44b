from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from fedlightning.datamodules import TensorLoader
from fedlightning.demos import BoringClassifier, blobs
from fedlightning.evaluation import evaluate


class Counting(BoringClassifier):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        return super().forward(x)


def test_evaluate_reuses_the_steps_forward_and_matches_a_hand_count() -> None:
    torch.manual_seed(0)
    x, y = blobs(100)
    model = Counting()
    loader = TensorLoader(x, y, batch_size=30)
    Counting.calls = 0
    out = evaluate(model, loader, {"acc": MulticlassAccuracy(num_classes=3, average="micro")})
    assert Counting.calls == len(loader)  # one forward per batch, not two
    with torch.no_grad():
        expected = float((model(x).argmax(1) == y).float().mean())
    assert abs(out["acc"] - expected) < 1e-6
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert abs(out["test_loss"] - float(loss.detach())) < 1e-5  # batch-size weighted mean


def test_evaluate_without_test_step_runs_the_metrics_only() -> None:
    class Bare(BoringClassifier):
        test_step = BoringClassifier.__mro__[1].test_step  # type: ignore[assignment]

    x, y = blobs(50)
    out: dict[str, Any] = evaluate(
        Bare(), TensorLoader(x, y, batch_size=25), {"acc": MulticlassAccuracy(3)}
    )
    assert set(out) == {"acc"}
