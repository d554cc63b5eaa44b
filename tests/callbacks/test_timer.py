import time
from typing import Any

import torch

from fedlightning import FederatedTrainer
from fedlightning.callbacks import Callback, RoundTimer
from fedlightning.demos import BoringClassifier, demo_datamodule


class Slow(Callback):
    def on_round_start(self, trainer: Any, round: int) -> None:
        time.sleep(0.05)


def test_round_timer_measures_and_logs_each_round() -> None:
    torch.manual_seed(0)
    timer = RoundTimer()
    trainer = FederatedTrainer(rounds=3, callbacks=[timer, Slow()], progress_bar=False)
    trainer.fit(BoringClassifier(), demo_datamodule())
    assert len(timer.times) == 3 and all(t >= 0.05 for t in timer.times)
    assert [h["round_s"] for h in trainer.history] == timer.times
