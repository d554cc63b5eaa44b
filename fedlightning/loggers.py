"""Loggers that work without a network: W&B offline first, CSV when wandb is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

__all__ = ["default_logger", "read_wandb_run", "wandb_logger"]


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
    written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``. The local
    run file is written every half second, so a run that is killed keeps its finished rounds.

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
    if "settings" not in kwargs:
        kwargs["settings"] = _durable_settings()
    return WandbLogger(
        project=project, name=name, save_dir=str(directory), offline=offline, **kwargs
    )


FLUSH_SECONDS = 0.5
"""How often W&B writes a run's data to its local ``.wandb`` file (W&B's default: 15 s)."""


def _durable_settings() -> Any:
    """W&B settings under which a killed run keeps what it logged up to half a second before.

    W&B buffers the run file for 15 s by default, so a run killed within that time kept no
    history at all; every round reaches the disk within ``FLUSH_SECONDS`` here.
    """
    import wandb

    try:
        return wandb.Settings(x_transaction_log_flush_interval=FLUSH_SECONDS)
    except Exception:  # an older or newer wandb without the setting: its default
        return None


def default_logger(output_dir: str | Path | None) -> Logger:
    """Offline W&B in ``output_dir`` when wandb is installed, else a CSV logger."""
    directory = Path(output_dir) if output_dir is not None else Path.cwd()
    if importlib.util.find_spec("wandb") is not None:
        return wandb_logger(save_dir=directory)
    return CSVLogger(save_dir=str(directory), name="logs")


_WANDB_BLOCK = 32768
_WANDB_HEADER = struct.Struct("<4sHB")
_WANDB_RECORD = struct.Struct("<IHB")


def read_wandb_run(run_dir: str | Path, timeout: float = 30.0) -> dict[str, Any]:
    """Read back what an offline W&B run logged, from its local ``.wandb`` file.

    Useful to check an offline run without a W&B server (and in tests). W&B's service
    writes the file in the background, so this waits, up to ``timeout`` seconds, for the
    file to appear and for the run's exit record to reach the disk.

    Args:
        run_dir: An ``offline-run-*`` directory, its ``files`` sub-directory, or a directory
            holding exactly one such run (e.g. the logger's ``save_dir/wandb``).
        timeout: Seconds to wait for the run to be complete on disk.

    Returns:
        ``{"history": [per-step dicts], "config": {...}, "summary": {...},
        "complete": bool}``; ``complete`` is false when the exit record was not seen.

    Raises:
        FileNotFoundError: If no ``run-*.wandb`` file is found.
        ValueError: If the file is not a W&B run file.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    root = Path(run_dir)
    deadline = time.monotonic() + timeout
    while True:  # W&B's service may still be creating the file
        files = sorted(root.glob("run-*.wandb")) or sorted(root.parent.glob("run-*.wandb"))
        files = files or sorted(root.glob("**/run-*.wandb"))
        if files or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in or under {root}")
    while True:
        out = _parse_wandb_file(files[-1], pb)
        if out["complete"] or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def _parse_wandb_file(path: Path, pb: Any) -> dict[str, Any]:
    raw = path.read_bytes()
    out: dict[str, Any] = {"history": [], "config": {}, "summary": {}, "complete": False}
    if len(raw) < _WANDB_HEADER.size:
        return out
    ident, magic, _ = _WANDB_HEADER.unpack_from(raw, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file (header {raw[:7]!r})")
    for data in _wandb_records(raw):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
        elif kind == "exit":
            out["complete"] = True
    return out


def _items(items: Any) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def _wandb_records(raw: bytes) -> list[bytes]:
    """Records of the LevelDB-log framing W&B uses: 32 KiB blocks, 7-byte record headers."""
    records: list[bytes] = []
    pos, pending = _WANDB_HEADER.size, b""
    while pos + _WANDB_RECORD.size <= len(raw):
        left = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left < _WANDB_RECORD.size:
            pos += left
            continue
        _, length, kind = _WANDB_RECORD.unpack_from(raw, pos)
        pos += _WANDB_RECORD.size
        if kind == 0 and length == 0:
            pos += left - _WANDB_RECORD.size
            continue
        chunk = raw[pos : pos + length]
        pos += length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
            pending = b""
    return records
