"""The command-line options the example scripts share with ``FederatedTrainer``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fedlightning.script_args import add_trainer_arguments, last_checkpoint


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
