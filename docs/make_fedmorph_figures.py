"""Draw docs/fedmorph.md's Dirichlet(0.4) figures from the committed runs.

Reads ``docs/results/fedmorph/dir50_<method>/results.json`` (each written by the command in
the ``command.txt`` beside it) and draws

* the test accuracy of every run against the round, and
* for every FedMorph run, the kept share of channels of each masked layer after each
  distillation (seed 004 Figure 3 over time): flat lines mean the masks did not learn.

Usage: python docs/make_fedmorph_figures.py [--results docs/results/fedmorph] [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent


def load_runs(root: Path, prefix: str) -> dict[str, dict[str, Any]]:
    """``run name -> the run's single method summary`` for every ``<prefix>*`` run."""
    runs = {}
    for path in sorted(root.glob(f"{prefix}*/results.json")):
        methods = json.loads(path.read_text())["methods"]
        runs[path.parent.name.removeprefix(prefix)] = next(iter(methods.values()))
    return runs


def draw_accuracy(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Test accuracy against the round, one line per run."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, m in runs.items():
        rounds, accs = zip(*m["curve"], strict=True)
        ax.plot(rounds, accs, label=name, lw=1.2)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (5,000 images)")
    ax.set_title("Fashion-MNIST, Dirichlet(0.4), 100 clients, 10 per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_layers(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Kept share of every masked layer after each distillation, one panel per FedMorph run."""
    import matplotlib.pyplot as plt

    morph = {name: m for name, m in runs.items() if m.get("layer_ratios")}
    fig, axes = plt.subplots(1, len(morph), figsize=(5.5 * len(morph), 4), squeeze=False)
    for ax, (name, m) in zip(axes[0], morph.items(), strict=True):
        history = m["layer_ratios"]
        rounds = [h["round"] for h in history]
        layers = [k for k in history[0] if k != "round"]
        cmap = plt.get_cmap("viridis")
        for i, layer in enumerate(layers):
            ax.plot(
                rounds,
                [h[layer] for h in history],
                marker=".",
                color=cmap(i / max(1, len(layers) - 1)),
                label=layer,
            )
        ax.set_xlabel("round (distillation every 10)")
        ax.set_ylabel("kept share of channels")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=DOCS / "results" / "fedmorph")
    parser.add_argument("--prefix", default="dir50_")
    parser.add_argument("--out", type=Path, default=DOCS / "img")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    runs = load_runs(args.results, args.prefix)
    if not runs:
        raise SystemExit(f"no {args.prefix}*/results.json under {args.results}")
    draw_accuracy(runs, args.out / f"fedmorph_{args.prefix}accuracy.png")
    draw_layers(runs, args.out / f"fedmorph_{args.prefix}layers.png")


if __name__ == "__main__":
    main()
