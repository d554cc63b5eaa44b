"""Wall time of seed 000's whole pipeline: Phase I, Phase II, and both baselines.

Runs ``examples/anomaly_detection.py`` in-process with the given settings (default: the
paper's full scale, 90 clients, p = 9, d = 0.1, r = 10, 1 then 10 local epochs per round)
and prints one JSON line: seconds per part (``federated_s`` = Phase I + Phase II,
``ideal_s``, ``local_s``), ``wall_s``, the issue's 600 s target and ``ratio_to_target``
(below 1 meets it), plus the CPU threads and load average it ran under, because the figure
depends on how busy the machine is. Any example flag can be passed through after ``--``.

    python benchmarks/anomaly_detection.py --output-dir runs/bench-ad
    python benchmarks/anomaly_detection.py --output-dir runs/bench-ad -- --epochs-per-round 1
    python benchmarks/anomaly_detection.py --output-dir runs/bench-ad --quick

References:
    M. Nardi, L. Valerio, A. Passarella, seed 000 (the pipeline and its settings).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "anomaly_detection.py"
TARGET_S = 600.0


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("anomaly_detection_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    """Time the pipeline and print one JSON line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    example_argv = ["--output-dir", str(args.output_dir), *extra]
    if args.quick:
        example_argv.append("--quick")
    if args.threads:
        example_argv += ["--threads", str(args.threads)]
    example = _example()
    results = example.run(example.parse_args(example_argv))
    line = {
        **{k: round(v, 2) for k, v in results["timings"].items()},
        "wall_s": round(results["wall_s"], 2),
        "target_s": TARGET_S,
        "ratio_to_target": round(results["wall_s"] / TARGET_S, 3),
        "num_clients": results["num_clients"],
        "num_train_samples": results["num_train_samples"],
        "config": {k: results["config"][k] for k in ("rounds", "epochs_per_round", "quick")},
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
