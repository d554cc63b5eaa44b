"""Loggers that work without a network: W&B offline first, CSV when wandb is missing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

__all__ = ["default_logger", "wandb_logger"]


def wandb_logger(
    project: str = "fedlightning",
    *,
    save_dir: str | Path | None = None,
    name: str | None = None,
    offline: bool | None = None,
    **kwargs: Any,
) -> Logger:
    """A Lightning ``WandbLogger`` that never blocks a run when W&B is unreachable.

    Offline unless ``offline=False`` is given or ``WANDB_MODE=online`` is set: runs are
    written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.

    Args:
        project: W&B project.
        save_dir: Directory of the local run files (default: the working directory).
        name: Run name.
        offline: Force offline (``True``) or online (``False``) mode.
        **kwargs: Passed to ``WandbLogger``.

    Returns:
        The logger.

    Raises:
        ImportError: If wandb is not installed (``pip install "fedlightning[wandb]"``).
    """
    if importlib.util.find_spec("wandb") is None:
        raise ImportError('W&B logging needs wandb: pip install "fedlightning[wandb]"')
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = os.environ.get("WANDB_MODE", "offline") != "online"
    directory = Path(save_dir) if save_dir is not None else Path.cwd()
    directory.mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project, name=name, save_dir=str(directory), offline=offline, **kwargs
    )


def default_logger(output_dir: str | Path | None) -> Logger:
    """Offline W&B in ``output_dir`` when wandb is installed, else a CSV logger."""
    directory = Path(output_dir) if output_dir is not None else Path.cwd()
    if importlib.util.find_spec("wandb") is not None:
        return wandb_logger(save_dir=directory)
    return CSVLogger(save_dir=str(directory), name="logs")
