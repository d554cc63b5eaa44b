"""The software and hardware a run's numbers were computed on, for its ``results.json``.

A seeded run is bit-exact on one machine with one thread count, but float32 results move
in the last bits between CPUs (PyTorch picks AVX2 or AVX-512 kernels at run time), torch
versions and thread counts, and a non-IID run can amplify that to about a point of
accuracy. :func:`environment` records what decides it, so a committed result can be
checked against the machine that produced it; :func:`environment_differences` names what
changed when a run is resumed somewhere else.

Example:
    >>> env = environment()
    >>> env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    True
    >>> environment_differences({"torch_threads": 1}, {"torch_threads": 2})
    ['torch_threads: 1 -> 2']
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Mapping
from typing import Any

import lightning
import numpy as np
import torch

from fedlightning.version import __version__

__all__ = ["environment", "environment_differences"]


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """Names of the CUDA devices, only where CUDA is already initialized.

    Initializing CUDA here would break executors that fork worker processes afterwards, so
    an uninitialized process reports the device count alone (as ``cuda_devices``).
    """
    if not torch.cuda.is_initialized():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def environment() -> dict[str, Any]:
    """The versions, CPU, its vector instructions and thread count of this process.

    Returns:
        ``fedlightning``, ``python``, ``torch``, ``lightning``, ``numpy`` (versions);
        ``platform``, ``cpu`` (model name), ``cpu_capability`` (the kernels PyTorch
        dispatches to, e.g. ``AVX512`` or ``AVX2``), ``cpu_count``, ``torch_threads``
        (``torch.get_num_threads()`` now), ``cuda`` (the CUDA torch was built with, or
        ``None``), ``cuda_devices``, ``gpus`` (names, where CUDA is initialized) and
        ``deterministic_algorithms``. JSON-serializable.
    """
    return {
        "fedlightning": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion, which checkpoints refuse
        "lightning": str(lightning.__version__),
        "numpy": str(np.__version__),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": _gpus(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def environment_differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`environment` records, as ``"key: old -> new"``.

    Args:
        before: The earlier record (e.g. a checkpoint's).
        after: The later one (e.g. this process's).

    Returns:
        One entry per key whose value differs or is in only one record, sorted by key;
        empty when they agree.
    """
    return [
        f"{key}: {before.get(key, '(none)')} -> {after.get(key, '(none)')}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
