"""The committed server-optimizer runs are complete 50-round runs of their command.

That the page's table matches them is checked for every page by test_results_tables.py.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_committed_run_has_its_command() -> None:
    root = DOCS / "results" / "server_optimizers"
    runs = sorted(p.parent for p in root.glob("*/results.json"))
    assert runs
    for run in runs:
        command = (run / "command.txt").read_text()
        assert "examples/fedavg.py" in command
        results = json.loads((run / "results.json").read_text())
        assert results["complete"] is True and results["rounds_done"] == 50
        assert f"--algorithm {results['config']['algorithm']}" in command
        assert f"--seed {results['config']['seed']}" in command or results["config"]["seed"] == 0
