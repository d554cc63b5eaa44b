"""Draw the accuracy curves of docs/server_optimizers.md and print its results table.

Reads the committed runs under ``docs/results/server_optimizers/<run>/results.json`` (each
written by the command in the ``command.txt`` beside it).

Usage: python docs/make_server_optimizer_figure.py [--out docs/img/server_optimizers.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import results_tables

RESULTS = Path(__file__).parent / "results" / "server_optimizers"
RUNS = ["fedavg", "fedavgm", "fedadam", "fedyogi", "scaffold"]


def load(run: str) -> dict:
    """The committed ``results.json`` of ``run``."""
    return json.loads((RESULTS / run / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "img" / "server_optimizers.png"
    )
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in RUNS:
        if not (RESULTS / run / "results.json").is_file():
            continue
        history = load(run)["history"]
        points = [(h["round"], h["test_acc"]) for h in history if h.get("test_acc") is not None]
        ax.plot([r for r, _ in points], [a for _, a in points], label=run)
    ax.set_xlabel("round")
    ax.set_ylabel("acc_global")
    ax.set_title("Fashion-MNIST, 100 clients, 2 sorted shards each, 10 per round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(results_tables.server_optimizers(*(f"server_optimizers/{r}" for r in RUNS)), end="")


if __name__ == "__main__":
    main()
