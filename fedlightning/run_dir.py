"""A run's folder and identity: one run per ``output_dir``, its fingerprint, atomic results.

* :func:`prepare_output_dir` checks, before round 1, that the folder is a writable directory
  that holds no other run (unless the run resumes from it or ``overwrite=True``).
* :func:`write_json` writes ``results.json`` atomically (temp file, ``fsync``, ``os.replace``),
  so a kill leaves the previous complete file, never half of one.
* :func:`run_fingerprint` names what makes two runs the same run (data, partition and its
  seed, clients, algorithm, model class, seed); :func:`fingerprint_differences` lists what
  differs when a checkpoint is resumed by another run.
* :func:`weights_hash` identifies the initial global weights in ``results.json``.
* :class:`LastCheckpointSchedule` decides how often ``last.ckpt`` is written by default:
  every round while writing it costs under 5% of a round, else at the interval that keeps it
  under 5%.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedlightning.checkpoint import atomic_write

__all__ = [
    "CHECKPOINT_DIR",
    "LAST_CHECKPOINT",
    "LastCheckpointSchedule",
    "checkpoint_dir",
    "fingerprint_differences",
    "last_checkpoint",
    "prepare_output_dir",
    "run_fingerprint",
    "weights_hash",
    "write_json",
]

CHECKPOINT_DIR = "checkpoints"
"""The folder of a run's checkpoints, inside its ``output_dir``."""

LAST_CHECKPOINT = "last.ckpt"
"""The checkpoint a run resumes from, inside :data:`CHECKPOINT_DIR`."""

RUN_FILES = ("results.json", CHECKPOINT_DIR)
"""What marks a folder as holding a run."""


def checkpoint_dir(output_dir: Path) -> Path:
    """Where a run in ``output_dir`` writes its checkpoints."""
    return Path(output_dir) / CHECKPOINT_DIR


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint a run in ``output_dir`` would resume from, or None when it has none.

    Args:
        output_dir: The trainer's ``output_dir``.

    Example:
        >>> import tempfile
        >>> last_checkpoint(Path(tempfile.mkdtemp())) is None
        True
    """
    path = checkpoint_dir(output_dir) / LAST_CHECKPOINT
    return path if path.is_file() else None


def prepare_output_dir(output_dir: Path, *, resume: Path | None, overwrite: bool) -> None:
    """Make ``output_dir`` ready for a run, or refuse it with the reason and the way out.

    Args:
        output_dir: The run's folder (created when missing).
        resume: The checkpoint the run resumes from, if any: a folder it lies in may hold
            the run it continues.
        overwrite: Remove another run's ``results.json`` and checkpoints first.

    Raises:
        ValueError: If ``output_dir`` is a file, is not writable, or holds another run.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir must be a directory, got output_dir={output_dir} (a file)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"output_dir={output_dir} is not writable: {type(exc).__name__}: {exc}"
        ) from exc
    held = [name for name in RUN_FILES if _holds(output_dir / name)]
    if not held:
        return
    if resume is not None and _inside(resume, output_dir):
        return
    if overwrite:
        for name in held:
            target = output_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        return
    raise ValueError(
        f"output_dir={output_dir} already holds another run ({', '.join(held)}); use a new "
        "folder, resume it with resume=<its checkpoints/last.ckpt> (--resume in the "
        "examples fedavg.py, fsnet.py, fedmorph.py, federated_vae.py and "
        "anomaly_detection.py), or pass "
        "overwrite=True (--overwrite in the examples, --trainer.overwrite true in the CLI) to "
        "replace it"
    )


def _holds(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.ckpt"))
    return path.exists()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def write_json(path: Path, data: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``data`` as JSON atomically: a kill leaves the old file or the new, never half.

    Uses :func:`fedlightning.checkpoint.atomic_write`, the checkpoints' own writer.

    Args:
        path: The file.
        data: JSON-serializable data.
        default: ``json.dumps``'s ``default`` for other values.

    Returns:
        ``path``.
    """
    text = json.dumps(data, indent=2, default=default).encode()
    atomic_write(path, lambda handle: handle.write(text))
    return path


def run_fingerprint(
    *,
    seed: int,
    num_clients: int,
    algorithm: str,
    model: nn.Module,
    data: Mapping[str, Any],
) -> dict[str, str]:
    """What makes two runs the same run, as strings (so it survives any checkpoint format).

    Args:
        seed: The trainer's seed.
        num_clients: Number of clients of the datamodule.
        algorithm: The algorithm's settings (its ``repr``).
        model: The global model (its class and parameter shapes count).
        data: The datamodule's ``hparams`` (dataset, partitioner and its seed...).

    Returns:
        Field -> value.
    """
    shapes = ",".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    out = {
        "seed": str(seed),
        "num_clients": str(num_clients),
        "algorithm": algorithm,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "model_shapes": hashlib.sha256(shapes.encode()).hexdigest()[:16],
    }
    for key, value in sorted(data.items()):
        out[f"data.{key}"] = repr(value)
    return out


def fingerprint_differences(saved: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """``"field: checkpoint X, this run Y"`` for every field that differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if a != b:
            out.append(f"{key}: checkpoint {a}, this run {b}")
    return out


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes and values), in hexadecimal."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LastCheckpointSchedule:
    """When to write ``last.ckpt`` by default: often, but never over ``budget`` of the time.

    Every round at first; after each write, the interval becomes the smallest number of
    rounds whose time makes the write cost at most ``budget`` (5%) of it.

    Args:
        budget: The share of the run's time that writing ``last.ckpt`` may take.
    """

    def __init__(self, budget: float = 0.05) -> None:
        self.budget = budget
        self.interval = 1
        self.since = 0
        self.writes: list[float] = []
        self.round_s = 0.0

    def due(self) -> bool:
        """Count one finished round; whether ``last.ckpt`` is due now."""
        self.since += 1
        return self.since >= self.interval

    def written(self, write_s: float, round_s: float) -> None:
        """Record a write that took ``write_s`` after rounds of ``round_s`` seconds each."""
        self.since = 0
        self.writes.append(write_s)
        self.round_s = round_s
        if round_s > 0:
            self.interval = max(1, math.ceil(write_s / (self.budget * round_s)))

    def summary(self) -> dict[str, float]:
        """What the schedule measured: the writes' mean seconds, a round's, the interval."""
        mean = sum(self.writes) / len(self.writes) if self.writes else 0.0
        return {
            "last_ckpt_writes": float(len(self.writes)),
            "last_ckpt_write_s": mean,
            "round_s": self.round_s,
            "write_share": mean / self.round_s if self.round_s > 0 else 0.0,
            "interval": float(self.interval),
        }
