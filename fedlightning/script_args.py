"""Command-line options that every example script shares with ``FederatedTrainer``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from fedlightning.accelerators import ACCELERATORS, PRECISIONS
from fedlightning.run_dir import last_checkpoint

__all__ = ["add_trainer_arguments", "last_checkpoint", "run_script"]


def add_trainer_arguments(
    parser: argparse.ArgumentParser, accelerator: str = "auto", *, resume: bool = False
) -> None:
    """Add ``--accelerator``, ``--precision`` (Lightning's names) and ``--overwrite``.

    Args:
        parser: The script's parser.
        accelerator: The default accelerator.
        resume: Also add ``--resume``, for scripts that hand :func:`last_checkpoint` to
            ``FederatedTrainer(resume=...)``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_trainer_arguments(parser, accelerator="cpu")
        >>> args = parser.parse_args(["--precision", "bf16-mixed", "--overwrite"])
        >>> args.accelerator, args.precision, args.overwrite
        ('cpu', 'bf16-mixed', True)
    """
    parser.add_argument(
        "--accelerator",
        default=accelerator,
        choices=ACCELERATORS,
        help=f"where clients train (lightning.Trainer's names; default {accelerator})",
    )
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=PRECISIONS,
        help="32-true, 64-true, 16-mixed (GPU), bf16-mixed or bf16-true",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in the output folder instead of refusing it",
    )
    if resume:
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in the output folder from its checkpoints/last.ckpt "
            "(same result as an uninterrupted run; a larger --rounds extends it)",
        )


def run_script(main: Callable[[], object], script: str) -> int:
    """Run an example script's ``main``, the way the ``fedlightning`` CLI runs its own.

    A setting or an input that is refused (``ValueError``: a bad option value, an output
    folder that holds another run, a checkpoint of another run) is printed as one line on
    stderr, naming the script, with exit status 2, rather than as a traceback.

    Args:
        main: The script's entry point, called without arguments (it reads ``sys.argv``).
        script: The script's path or name, for the message.

    Returns:
        The exit status: ``main``'s own when it returns an ``int``, else 0.

    Example:
        >>> def main() -> None:
        ...     raise ValueError("rounds must be >= 1, got rounds=0")
        >>> run_script(main, "fedavg.py")
        2
    """
    try:
        status = main()
    except ValueError as exc:
        print(f"{Path(script).name}: error: {exc}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
