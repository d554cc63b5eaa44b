"""Tests for fedlightning.environment."""

from __future__ import annotations

import json

import numpy as np
import torch

from fedlightning.environment import environment, environment_differences


def test_environment_names_versions_cpu_and_threads_of_this_process() -> None:
    env = environment()
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"]  # a model name, never empty
    assert json.loads(json.dumps(env)) == env  # goes into results.json as it is


def test_environment_reads_the_thread_count_when_called() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = environment()["torch_threads"]
        torch.set_num_threads(2)
        two = environment()["torch_threads"]
    finally:
        torch.set_num_threads(threads)
    assert (one, two) == (1, 2)


def test_environment_differences_lists_changed_and_missing_keys() -> None:
    env = environment()
    assert environment_differences(env, dict(env)) == []
    moved = env | {"cpu_capability": "AVX2", "extra": 1}
    assert environment_differences(env, moved) == [
        f"cpu_capability: {env['cpu_capability']} -> AVX2",
        "extra: (none) -> 1",
    ]
