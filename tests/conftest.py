import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite runs tiny models: one thread avoids oversubscription on small CI machines.
torch.set_num_threads(1)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolate_wandb(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep W&B's own files out of the user's home and the repository."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("WANDB_DIR", str(base))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(base / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(base / "wandb-config"))
