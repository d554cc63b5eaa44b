"""Runs as real subprocesses: killed, resumed, fed damaged files, pointed at a used folder."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "faults" / "tiny_run.py"


def _env() -> dict[str, str]:
    """A fresh process's environment: this one's, minus the W&B service that this test
    process may have started (a child would otherwise share it)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = _env()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}:\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final weights' hash of the uninterrupted run."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    _run(folder, "--rounds", "6", "--width", "200000", "--every", "1")
    return (folder / "final.sha256").read_text()


def _kill_during_write(proc: subprocess.Popen[bytes], folder: Path, name: str, nth: int) -> bool:
    """SIGKILL ``proc`` as soon as its ``nth`` temporary file for ``name`` appears.

    Returns whether the kill came while a write was under way.
    """
    seen: set[str] = set()
    checkpoints = folder / "checkpoints"
    while proc.poll() is None:
        if checkpoints.is_dir():
            temps = [e.name for e in os.scandir(checkpoints) if e.name.endswith(".tmp")]
            fresh = [t for t in temps if t.startswith(f".{name}") and t not in seen]
            seen.update(fresh)
            if fresh and len(seen) >= nth:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize(("name", "nth"), [("round_", 2), ("last", 2), ("last", 4)])
def test_killed_during_a_checkpoint_write_then_resumed_equals_the_uninterrupted_run(
    name: str, nth: int, reference: str, tmp_path: Path
) -> None:
    """kill -9 while a checkpoint (16 MB) is being written; the resumed run ends as if never
    interrupted, from the last complete checkpoint."""
    env = _env()
    args = [str(tmp_path), "--rounds", "6", "--width", "200000", "--every", "1"]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _kill_during_write(proc, tmp_path, name, nth), "the run ended before the kill"
    assert not (tmp_path / "final.sha256").exists()
    _run(*args, "--resume")
    assert (tmp_path / "final.sha256").read_text() == reference


def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "evil.ckpt"
    crafted.write_bytes(pickle.dumps({"round": 1, "model": Payload()}))
    out = _run(tmp_path / "run", "--resume-from", crafted, check=False)
    assert out.returncode != 0
    assert not marker.exists()
    assert "evil.ckpt" in out.stderr


def test_a_truncated_checkpoint_names_the_file_and_the_newest_valid_one(tmp_path: Path) -> None:
    _run(tmp_path, "--rounds", "3", "--every", "1")
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    out = _run(tmp_path, "--rounds", "4", "--every", "1", "--resume", check=False)
    assert out.returncode != 0
    assert "last.ckpt" in out.stderr and "round_0003.ckpt" in out.stderr


def test_resume_by_another_run_is_refused_with_the_differences(tmp_path: Path) -> None:
    _run(tmp_path, "--rounds", "2")
    out = _run(tmp_path, "--rounds", "4", "--partition", "dirichlet", "--resume", check=False)
    assert out.returncode != 0
    assert "belongs to another run" in out.stderr and "partition" in out.stderr
    out = _run(tmp_path, "--rounds", "1", "--resume", check=False)
    assert out.returncode != 0 and "pass rounds >= 2" in out.stderr


def test_two_runs_into_one_folder_are_refused(tmp_path: Path) -> None:
    _run(tmp_path, "--rounds", "1")
    out = _run(tmp_path, "--rounds", "1", check=False)
    assert out.returncode != 0 and "already holds another run" in out.stderr
    _run(tmp_path, "--rounds", "1", "--overwrite")


def test_a_killed_offline_wandb_run_keeps_its_rounds_and_resume_continues_it(
    tmp_path: Path,
) -> None:
    from fedlightning.loggers import read_wandb_run

    args = [tmp_path, "--rounds", "5", "--wandb"]
    out = _run(*args, "--kill-at-round", "4", check=False)
    assert out.returncode == -signal.SIGKILL
    [first] = sorted((tmp_path / "wandb").glob("offline-run-*"))
    kept = read_wandb_run(first, timeout=2)
    assert [h["round"] for h in kept["history"]] == [1, 2, 3]
    _run(*args, "--resume")
    run_id = (tmp_path / "wandb_id").read_text()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(run_id) for r in runs)  # one W&B run, continued
    # W&B writes the resumed rounds to a new offline folder of the same run, or, when the
    # killed process's W&B service is still up, to the run's open file: either way, the
    # run's files together hold every round once.
    files = sorted((tmp_path / "wandb").glob(f"offline-run-*/run-{run_id}.wandb"))
    rounds = [h["round"] for f in files for h in read_wandb_run(f.parent, timeout=5)["history"]]
    assert sorted(rounds) == [1, 2, 3, 4, 5]


def test_the_cli_twice_with_the_same_seed_gives_the_same_results(tmp_path: Path) -> None:
    import json

    env = _env()
    results = []
    for name in ("a", "b"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedlightning.cli",
                "fit",
                "--config",
                str(ROOT / "examples" / "configs" / "fedavg.yaml"),
                "--trainer.rounds",
                "2",
                "--trainer.clients_per_round",
                "3",
                "--trainer.local_steps",
                "3",
                "--trainer.local_epochs",
                "null",
                "--trainer.output_dir",
                str(tmp_path / name),
                "--logger",
                "none",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        data = json.loads((tmp_path / name / "results.json").read_text())
        data.pop("wall_s")
        data["config"].pop("output_dir", None)
        results.append(data)
    assert results[0] == results[1]
    assert "acc_local" in results[0]["final"]
