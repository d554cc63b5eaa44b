"""The command-line options the example scripts share with ``FederatedTrainer``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fedlightning.script_args import add_trainer_arguments, last_checkpoint, run_script

ROOT = Path(__file__).resolve().parents[1]


def test_resume_flag_only_where_the_script_asks_for_it() -> None:
    plain = argparse.ArgumentParser()
    add_trainer_arguments(plain, accelerator="cpu")
    with pytest.raises(SystemExit):
        plain.parse_args(["--resume"])
    resumable = argparse.ArgumentParser()
    add_trainer_arguments(resumable, accelerator="cpu", resume=True)
    assert resumable.parse_args(["--resume"]).resume is True
    assert resumable.parse_args([]).resume is False


def test_last_checkpoint_is_the_runs_last_ckpt_or_none(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert last_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"


def test_run_script_prints_a_refused_setting_as_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refused() -> None:
        raise ValueError("rounds must be >= 1, got rounds=0")

    assert run_script(refused, "examples/fedavg.py") == 2
    assert capsys.readouterr().err == "fedavg.py: error: rounds must be >= 1, got rounds=0\n"
    assert run_script(lambda: {"final": {}}, "fedavg.py") == 0
    assert run_script(lambda: 3, "fedavg.py") == 3

    def bug() -> None:
        raise KeyError("a bug, not a refused setting")

    with pytest.raises(KeyError):  # anything else keeps its traceback
        run_script(bug, "fedavg.py")


def test_an_example_refuses_a_used_folder_in_one_line(tmp_path: Path) -> None:
    # The folder check comes before any data is read, so this costs a process start only.
    (tmp_path / "federated").mkdir()
    (tmp_path / "federated" / "results.json").write_text("{}")
    script = ROOT / "examples" / "anomaly_detection.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("anomaly_detection.py: error: output_dir=")
    assert "--resume" in lines[0] and "--overwrite" in lines[0]
