"""A small, fully seeded federated run for the fault tests, started as a real subprocess.

    python tests/faults/tiny_run.py OUTPUT_DIR --rounds 6 [--resume] [--partition dirichlet]

``--width`` makes the model (and its checkpoints) larger, so that a kill is likely to land
during a checkpoint write. On success it writes ``final.sha256``: the hash of the final
global weights.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import seed_everything

from fedlightning import FederatedTrainer
from fedlightning.callbacks import Callback
from fedlightning.datamodules import IID, Dirichlet, FederatedDataModule
from fedlightning.demos import BoringClassifier, blobs
from fedlightning.run_dir import weights_hash


class KillAt(Callback):
    """SIGKILL this process 3 s into round ``round``: W&B flushes its run file every 0.5 s, so
    the rounds before are on disk by then, even on a loaded machine."""

    def __init__(self, round: int) -> None:
        self.round = round

    def on_round_start(self, trainer: object, round: int) -> None:
        if round == self.round:
            time.sleep(3.0)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    """Run (or resume) the tiny job."""
    p = argparse.ArgumentParser()
    p.add_argument("output_dir", type=Path)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--partition", default="iid", choices=["iid", "dirichlet"])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--resume-from", type=Path, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--every", default="auto", help="checkpoint_every: auto, none or N")
    p.add_argument("--wandb", action="store_true", help="log to an offline W&B run")
    p.add_argument("--kill-at-round", type=int, default=None, help="SIGKILL itself then")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x, y = blobs(400, in_features=16, seed=0)
    partition = IID(num_clients=8) if args.partition == "iid" else Dirichlet(8, alpha=1.0)
    dm = FederatedDataModule((x, y), test=(x[:100], y[:100]), partition=partition, seed=0)
    seed_everything(0, verbose=False)
    model = BoringClassifier(hidden=args.width)
    resume = args.resume_from
    if args.resume and resume is None:
        last = args.output_dir / "checkpoints" / "last.ckpt"
        resume = last if last.exists() else None
    every = (
        None if args.every == "none" else args.every if args.every == "auto" else int(args.every)
    )
    trainer = FederatedTrainer(
        checkpoint_every=every,
        rounds=args.rounds,
        clients_per_round=4,
        seed=0,
        accelerator="cpu",
        output_dir=args.output_dir,
        resume=resume,
        overwrite=args.overwrite or (args.resume and resume is None),
        progress_bar=False,
        logger=args.wandb,
        callbacks=[KillAt(args.kill_at_round)] if args.kill_at_round else None,
    )
    trainer.fit(model, dm)
    (args.output_dir / "final.sha256").write_text(weights_hash(model))
    (args.output_dir / "wandb_id").write_text(str(trainer.wandb_run_id))


if __name__ == "__main__":
    sys.exit(main())
