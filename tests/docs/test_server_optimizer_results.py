"""Every number of docs/server_optimizers.md comes from a committed results file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _figure_script():
    spec = importlib.util.spec_from_file_location(
        "make_server_optimizer_figure", DOCS / "make_server_optimizer_figure.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_matches_the_committed_results() -> None:
    page = (DOCS / "server_optimizers.md").read_text()
    rows = _figure_script().table_rows()
    assert len(rows) >= 3
    for row in rows:
        assert row in page, f"docs/server_optimizers.md lacks the row {row!r}"
    documented = re.findall(r"^\| (\w+) \| 0\.\d{4} \|", page, flags=re.M)
    assert sorted(documented) == sorted(r.split(" | ")[0][2:] for r in rows)


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
