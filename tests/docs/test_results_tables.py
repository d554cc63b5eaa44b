"""Every marked results table in the docs is what the committed results files give."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _tables():
    spec = importlib.util.spec_from_file_location("results_tables", DOCS / "results_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables()
PAGES = sorted(DOCS.glob("*.md"))
RUNS = sorted(p.parent for p in (DOCS / "results").rglob("results.json"))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_marked_tables_match_the_committed_results(page: Path) -> None:
    stale = tables.refresh(page, write=False)
    assert not stale, f"{page.name}: run `python docs/results_tables.py`; stale: {stale}"


def test_a_changed_number_is_caught(tmp_path: Path) -> None:
    page = DOCS / "server_optimizers.md"
    text = page.read_text()
    spec, body = tables.blocks(page)[0]
    number = re.search(r"0\.\d{4}", body)
    assert number is not None
    wrong = body.replace(number[0], "0.9999", 1)
    copy = tmp_path / "page.md"
    copy.write_text(text.replace(body, wrong))
    assert tables.refresh(copy, write=False) == [spec]
    tables.refresh(copy, write=True)
    assert copy.read_text() == text


def test_every_committed_run_is_shown_and_has_its_command() -> None:
    assert RUNS
    # A renderer's argument is a run, or runs joined by commas (paired seeds, split parts).
    shown = {
        name
        for page in PAGES
        for spec, _ in tables.blocks(page)
        for arg in spec.split()[1:]
        for name in arg.split(",")
    }
    for run in RUNS:
        name = str(run.relative_to(DOCS / "results"))
        assert name in shown, f"docs/results/{name} is committed but no page shows it"
        # One command per line, in order ("#" lines comment); the last wrote results.json.
        lines = (run / "command.txt").read_text().splitlines()
        commands = [shlex.split(line) for line in lines if line.strip() and line[0] != "#"]
        assert commands, f"{name}: command.txt holds no command"
        for command in commands:
            scripts = [a for a in command if a.endswith(".py")]
            assert all((DOCS.parent / a).is_file() for a in scripts), f"{name}: {scripts}"
        command = commands[-1]
        assert any(a.endswith(".py") for a in command), f"{name}: the last command runs no script"
        config = json.loads((run / "results.json").read_text()).get("config", {})
        if "--output-dir" in command and "output_dir" in config:
            assert command[command.index("--output-dir") + 1] == config["output_dir"], name
        if "--seed" in command and "seed" in config:
            assert int(command[command.index("--seed") + 1]) == int(config["seed"]), name


def test_unknown_renderer_is_named() -> None:
    with pytest.raises(KeyError, match="unknown results table 'nope'"):
        tables.render("nope a/b")
    with pytest.raises(FileNotFoundError, match="no committed results for run 'a/b'"):
        tables.render("anomaly_auc a/b")


def _run(every: int, rounds: int) -> dict:
    curve = [[r, r / 100] for r in range(2, rounds + 1, 2)]
    method = {"curve": curve, "distill_js": [[every, 0.01]]}
    config = {"distill_every": every, "eval_every": 2, "rounds": rounds}
    return {"config": config, "methods": {"fedmorph": method}}


def test_fedmorph_distillation_reads_before_and_after_each_distillation(monkeypatch) -> None:
    runs = {"p/a": _run(10, 20), "p/b": _run(10, 20), "p/c": _run(10, 30)}
    monkeypatch.setattr(tables, "load", runs.__getitem__)
    body = tables.fedmorph_distillation("p/a", "p/b")
    assert "| r8 -> r10 | r18 -> r20 |" in body
    assert "| a | 0.080 -> 0.100 | 0.180 -> 0.200 |" in body
    with pytest.raises(ValueError, match="need one"):
        tables.fedmorph_distillation("p/a", "p/c")


def test_phase1_rescoring_refuses_scores_that_no_longer_give_the_runs_communities(
    monkeypatch,
) -> None:
    run = tables.load("anomaly_detection/leiden")
    broken = {**run, "communities": [sorted(range(90))]}
    monkeypatch.setattr(tables, "load", lambda name: broken)
    with pytest.raises(ValueError, match="no longer give its communities"):
        tables.anomaly_methods("anomaly_detection/leiden")


def test_phase1_rescoring_gives_what_a_full_run_with_that_rule_found() -> None:
    # Seed 2's Phase-I-only run (z = 1) and its full run at t = 0.06 share their scores; the
    # methods table's Leiden cell at t = 0.06 must be the full run's partition, which needs
    # the pipeline's own seed for the randomized methods (the run's seed gives 8, ARI 0.750).
    full = tables.load("anomaly_detection/s2_leiden_federated")
    assert (
        full["phase1"]["ratios"]
        == tables.load("anomaly_detection/s2_phase1_z1")["phase1"]["ratios"]
    )
    row = next(
        line
        for line in tables.anomaly_methods("anomaly_detection/s2_phase1_z1").splitlines()
        if line.startswith("| 0.06 |")
    )
    leiden = row.split("|")[1 + 1 + tables.ANOMALY_METHODS.index("leiden")].strip()
    assert leiden.startswith(f"{len(full['communities'])}, ARI {full['ari']:.3f}")


def test_anomaly_local_sets_budgets_side_by_side_and_refuses_other_clients(monkeypatch) -> None:
    ref = tables.load("anomaly_detection/leiden")
    longer = {
        "config": {**ref["config"], "local_max_epochs": 91},
        "client_inlier_class": ref["client_inlier_class"],
        "auc": {
            "local": {
                **ref["auc"]["local"],
                "epochs_per_client": [50 + k for k in ref["client_inlier_class"]],
            }
        },
    }
    runs = {"a/ref": ref, "a/long": longer, "a/other": {**longer, "client_inlier_class": [0] * 90}}
    monkeypatch.setattr(tables, "load", runs.__getitem__)
    body = tables.anomaly_local("a/ref", "a/long")
    assert "| local, 40 epochs max | local, 91 epochs max |" in body
    mean_local = ref["auc"]["local"]["mean"]
    row = (
        f"| **mean** | {mean_local:.3f} (40.0 epochs, mean of all) | {mean_local:.3f} (54.5 epochs)"
    )
    assert row in body
    per_class = ref["auc"]["local"]["per_class"]["3"]
    assert (
        f"| 3 | {per_class:.3f} (40.0 epochs, mean of all) | {per_class:.3f} (53.0 epochs) |"
        in body
    )
    with pytest.raises(ValueError, match="clients differ"):
        tables.anomaly_local("a/ref", "a/other")


def test_fedmorph_seeds_pairs_each_seed_with_the_reference_and_refuses_missing_seeds(
    monkeypatch,
) -> None:
    def run(method: str, seed: int, acc: float, down: int) -> dict:
        curve = [[r, acc - 0.01 * (5 - i)] for i, r in enumerate(range(42, 52, 2))]
        curve[-1][1] = acc
        entry = {"accuracy": acc, "curve": curve, "bytes_down": down}
        return {"seed": seed, "config": {"keep_ratio": 0.25}, "methods": {method: entry}}

    runs = {
        "f/avg1": run("fedavg", 1, 0.80, 1600),
        "f/avg2": run("fedavg", 2, 0.90, 1600),
        "f/m1": run("fedmorph", 1, 0.79, 100),
        "f/m2": run("fedmorph", 2, 0.86, 100),
        "f/m3": run("fedmorph", 3, 0.86, 100),
        "f/m2b": run("fedmorph", 2, 0.85, 100),
        "f/p1": run("fedpruned", 1, 0.79, 100),
        "f/p2": run("fedpruned", 2, 0.86, 200),
    }
    monkeypatch.setattr(tables, "load", runs.__getitem__)
    body = tables.fedmorph_seeds("f/avg1,f/avg2", "f/m2,f/m1")
    # the gap is taken seed by seed: -1.0 on seed 1, -4.0 on seed 2 (mean -2.5, sd 2.1)
    assert "| fedmorph (keep 0.25) | 1, 2 | 79.0, 86.0 | 82.5 +- 4.9 | -1.0, -4.0 |" in body
    assert "| -2.5 +- 2.1 | -2.5 +- 2.1 | 1/16.0 |" in body
    assert "| fedavg | 1, 2 | 80.0, 90.0 | 85.0 +- 7.1 | +0.0, +0.0 | 0.0 +- 0.0 |" in body
    # the sub-network's size, so its bytes, may differ between seeds
    assert "| 1/8.0 to 1/16.0 |" in tables.fedmorph_seeds("f/avg1,f/avg2", "f/p1,f/p2")
    with pytest.raises(ValueError, match=r"seeds \[1, 3\] differ"):
        tables.fedmorph_seeds("f/avg1,f/avg2", "f/m1,f/m3")
    with pytest.raises(ValueError, match="seed 2 appears twice"):
        tables.fedmorph_seeds("f/avg1,f/avg2", "f/m1,f/m2,f/m2b")
    with pytest.raises(ValueError, match=r"mixes fedmorph \(keep 0.25\) and fedpruned"):
        tables.fedmorph_seeds("f/avg1,f/avg2", "f/m1,f/p2")
