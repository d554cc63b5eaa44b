"""Shared by the example tests: "same command, same results.json except wall_s".

``rerun`` runs an example's command again in a fresh Python process (another hash seed, so an
iteration over a set of strings would show; the same number of torch threads as this process),
and ``assert_same_results`` compares the ``results.json`` files two runs wrote, per-method
subfolders included.

Before comparing, only what cannot be equal between two runs is removed:

* durations in seconds: every key ending in ``_s`` (``wall_s``, ``round_wall_s``, the anomaly
  example's ``timings`` ``federated_s`` / ``phase1_s`` / ``ideal_s`` / ``local_s``) and
  fedmorph's ``s_per_round``; each must hold a number;
* ``loggers``: the logger run directories (W&B names them by start time and a random id);
* the output folder itself, wherever a string holds it (``config.output_dir``, the anomaly
  example's ``config.argv``, fedmorph's ``figures`` paths): replaced by ``<output-dir>``, so
  what follows it is still compared.

``environment`` (versions, CPU, threads) is compared like the rest: two runs of one command
on one machine record the same; a test whose two commands set the thread count differently
on purpose names ``torch_threads`` in ``drop_environment``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DURATION = re.compile(r"_s$|^s_per_round$")
LOGGER_DIRS = "loggers"
OUTPUT_DIR = "<output-dir>"


def comparable(
    value: Any,
    output_dir: Path,
    drop_config: Sequence[str] = (),
    drop_environment: Sequence[str] = (),
) -> Any:
    """``value`` without durations, logger directories, ``drop_config``, and ``output_dir``.

    ``drop_environment`` keys are removed from every ``environment`` record, at any depth.
    """
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if DURATION.search(key):
                assert isinstance(item, int | float), f"{key} is not a duration: {item!r}"
                continue
            if key == LOGGER_DIRS:
                continue
            if key == "config" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if k not in drop_config}
            if key == "environment" and isinstance(item, dict):
                item = {k: v for k, v in item.items() if k not in drop_environment}
            kept[key] = comparable(item, output_dir, drop_environment=drop_environment)
        return kept
    if isinstance(value, list):
        return [comparable(item, output_dir, drop_environment=drop_environment) for item in value]
    if isinstance(value, str):
        return value.replace(str(output_dir), OUTPUT_DIR)
    return value


def differences(a: Any, b: Any, where: str = "") -> Iterator[str]:
    """The places where two JSON values differ, as ``/key[index]`` paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                yield f"{where}/{key}: only in {'first' if key in a else 'second'}"
            else:
                yield from differences(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from differences(x, y, f"{where}[{i}]")
    elif type(a) is not type(b) or (a != b and not (a != a and b != b)):  # NaN == NaN here
        yield f"{where}: {a!r:.80} != {b!r:.80}"


def _assert_same_results(
    first: Path,
    second: Path,
    files: dict[str, str] | None = None,
    drop_config: Sequence[str] = (),
    drop_environment: Sequence[str] = (),
) -> list[str]:
    """Assert the two runs' ``results.json`` files agree; returns the files compared.

    ``files`` maps a file of the first run to where the second run wrote it (default: every
    ``results.json`` under ``first``, at the same place under ``second``, and no others).
    ``drop_config`` names ``config`` keys of the top-level file that the two commands set
    differently on purpose; ``drop_environment`` names ``environment`` keys that differ on
    purpose in every file (``torch_threads`` where one command sets ``--threads``).
    """
    if files is None:
        names = [
            sorted(str(p.relative_to(run)) for p in run.rglob("results.json"))
            for run in (first, second)
        ]
        assert names[0] == names[1], f"the runs wrote different results.json files: {names}"
        files = {name: name for name in names[0]}
    assert "results.json" in files
    for name_a, name_b in files.items():
        drop = drop_config if name_a == "results.json" else ()
        a = comparable(json.loads((first / name_a).read_text()), first, drop, drop_environment)
        b = comparable(json.loads((second / name_b).read_text()), second, drop, drop_environment)
        diff = list(differences(a, b))
        assert not diff, f"{name_a} differs between two runs of one command:\n" + "\n".join(
            diff[:20]
        )
    return sorted(files)


@pytest.fixture
def assert_same_results() -> Callable[..., list[str]]:
    """:func:`_assert_same_results`."""
    return _assert_same_results


def _rerun(args: Sequence[str], timeout: float = 300) -> None:
    """``python ARGS`` from the repository root, in a fresh process; fails with its log."""
    parent_seed = os.environ.get("PYTHONHASHSEED")
    env = {
        **os.environ,
        "PYTHONHASHSEED": "2" if parent_seed == "1" else "1",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}:\n{proc.stderr[-3000:]}"


@pytest.fixture
def rerun() -> Callable[..., None]:
    """:func:`_rerun`."""
    return _rerun
