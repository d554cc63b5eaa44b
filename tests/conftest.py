import faulthandler
import gc
import os
import sys

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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Release Ray before the interpreter's teardown, not during it.

    Ray's core worker has crashed interpreters that still held Ray objects when they exited
    (ray-project/ray#47864, #36885); the suite once ended with "Segmentation fault" after its
    summary line. A test that leaves Ray running is shut down here, and the garbage it left
    (object references, actor handles) is collected while Ray's modules are still whole.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        print("\nconftest: a test left Ray running; shutting it down", file=sys.stderr)
        ray.shutdown()
    gc.collect()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Keep faulthandler on through the interpreter's teardown (pytest turns it off here).

    A crash in an extension's teardown then prints every thread's stack instead of only the
    shell's "Segmentation fault".
    """
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
