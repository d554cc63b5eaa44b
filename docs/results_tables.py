"""Render every results table of the docs from the committed results files.

Each measured run lives in ``docs/results/<page>/<run>/`` as the ``results.json`` its example
wrote, with the exact command in the ``command.txt`` beside it. A docs page marks each table
it shows with an HTML comment naming a renderer and its arguments::

    <!-- results-table: anomaly_auc anomaly_detection/leiden -->
    | ... the rendered markdown ... |
    <!-- /results-table -->

``python docs/results_tables.py`` rewrites every marked block from the files;
``python docs/results_tables.py --check`` exits 1 and names the block if a page differs from
what the files give (``tests/docs/test_results_tables.py`` runs the same check), so no number
in a marked table can drift from the run that produced it.

Usage: python docs/results_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "results"

BLOCK = re.compile(
    r"(?P<open><!-- results-table: (?P<spec>[^>]*?) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /results-table -->)",
    re.S,
)

#: Seed 000, Table 3 of Nardi et al. (Ital-IA 2023): AUC-ROC per inlier class, and its mean.
PAPER_TABLE3: dict[str, list[float]] = {
    "local": [0.672, 0.950, 0.485, 0.713, 0.583, 0.601, 0.512, 0.849, 0.395, 0.734],
    "federated": [0.664, 0.946, 0.670, 0.726, 0.726, 0.592, 0.704, 0.873, 0.567, 0.809],
    "ideal": [0.753, 0.953, 0.688, 0.748, 0.732, 0.599, 0.707, 0.869, 0.550, 0.800],
}
PAPER_TABLE3_MEAN = {"local": 0.649, "federated": 0.728, "ideal": 0.740}
SETTINGS = ("local", "federated", "ideal")


def load(run: str) -> dict[str, Any]:
    """The committed ``results.json`` of ``run`` (``<page>/<run>`` under ``docs/results``)."""
    path = RESULTS / run / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no committed results for run {run!r}: {path} is missing")
    return json.loads(path.read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- server optimizers (docs/server_optimizers.md) -----------------------------------------


def server_optimizers(*runs: str) -> str:
    """Final and best ``acc_global`` and total bytes of ``examples/fedavg.py`` runs."""
    rows = []
    for run in runs:
        r = load(run)
        accs = [h["test_acc"] for h in r["history"] if h.get("test_acc") is not None]
        rows.append(
            [
                run.rsplit("/", 1)[-1],
                f"{r['final']['acc_global']:.4f}",
                f"{max(accs):.4f}",
                f"{r['bytes']['total']:,}",
            ]
        )
    return _table(["run", "final acc_global", "best acc_global", "bytes"], rows)


# --- seed 000 (docs/anomaly_detection.md) --------------------------------------------------


def _merged(spec: str) -> dict[str, Any]:
    """Seed 000 run ``spec``: a run, or ``run,baselines_run`` whose AUC tables are joined.

    The baselines (local, ideal) may come from a second run of the same seed
    (``--part baselines``); they do not depend on Phase I.
    """
    first, *rest = spec.split(",")
    r = dict(load(first))
    r["auc"] = dict(r["auc"])
    for other in rest:
        b = load(other)
        if b["seed"] != r["seed"]:
            raise ValueError(f"{spec}: the runs have different seeds")
        r["auc"].update({k: v for k, v in b["auc"].items() if k not in r["auc"]})
    return r


def anomaly_auc(run: str) -> str:
    """Seed 000 Table 3: AUC-ROC per inlier class of one run, beside the paper's.

    ``run`` may join a federated run and its baselines run: ``federated,baselines``.
    """
    auc = _merged(run)["auc"]
    header = ["inlier class"]
    header += [f"{s} (ours)" for s in SETTINGS if s in auc]
    header += [f"{s} (paper)" for s in SETTINGS]
    rows = []
    for c in range(10):
        row = [str(c)] + [f"{auc[s]['per_class'][str(c)]:.3f}" for s in SETTINGS if s in auc]
        rows.append(row + [f"{PAPER_TABLE3[s][c]:.3f}" for s in SETTINGS])
    rows.append(["Std Dev"] + [f"{auc[s]['std']:.3f}" for s in SETTINGS if s in auc] + [""] * 3)
    rows.append(
        ["**Mean**"]
        + [f"**{auc[s]['mean']:.3f}**" for s in SETTINGS if s in auc]
        + [f"{PAPER_TABLE3_MEAN[s]:.3f}" for s in SETTINGS]
    )
    return _table(header, rows)


def anomaly_communities(run: str) -> str:
    """Seed 000 Table 2: the communities Phase I found, with ARI and modularity."""
    r = load(run)
    rows = []
    for entry in r["community_table"]:
        classes = sorted(entry["classes"].items(), key=lambda kv: (-kv[1], int(kv[0])))
        members = ", ".join(f"I{c} x{n}" for c, n in classes)
        rows.append([f"G{entry['community']}", str(entry["size"]), members])
    head = (
        f"{r['config']['community_method']}: {len(r['communities'])} communities, "
        f"ARI against the true classes {r['ari']:.3f}, modularity {r['modularity']:.3f}\n\n"
    )
    return head + _table(["community", "size", "members (inlier class x clients)"], rows)


def anomaly_cost(run: str) -> str:
    """Seed 000 Table 4: measured bytes of both phases against eq. (1) and (2), in MB."""
    cost = load(run)["comm_cost_mb"]
    p1, p2 = cost["phase1"], cost["phase2"]
    row = [
        f"{p1['measured']:.3f}",
        f"{p1['formula']:.3f}",
        f"{100 * (p1['measured'] / p1['formula'] - 1):+.2f}%",
        f"{p2['measured']:.3f}",
        f"{p2['formula_eq2']:.3f}",
        f"{100 * (p2['measured'] / p2['formula_eq2'] - 1):+.3f}%",
        f"{p2['formula_eq3']:.3f}",
    ]
    header = [
        "Phase I measured",
        "eq. (1)",
        "difference",
        "Phase II measured",
        "eq. (2)",
        "difference",
        "eq. (3)",
    ]
    return _table(header, [row])


def _phase2_epochs(cfg: dict[str, Any]) -> int:
    """Local epochs each community trains in Phase II: the first round's, then the others'."""
    return int(cfg["epochs_first"] + (cfg["rounds"] - 1) * cfg["epochs_per_round"])


def anomaly_summary(*runs: str) -> str:
    """Seed 000 runs side by side: communities, ARI, mean AUCs, bytes and wall time."""
    rows = []
    for run in runs:
        r = load(run)
        auc, cost = r["auc"], r["comm_cost_mb"]
        means = [f"{auc[s]['mean']:.3f}" if s in auc else "" for s in SETTINGS]
        cfg = r["config"]
        epochs = _phase2_epochs(cfg)
        rows.append(
            [
                cfg["community_method"],
                f"{cfg['rounds']} ({epochs} epochs)",
                str(len(r["communities"])),
                f"{r['ari']:.3f}",
                *means,
                f"{cost['phase1']['measured'] + cost['phase2']['measured']:.1f}",
                f"{r['wall_s']:,.0f}",
            ]
        )
    header = ["Phase I method", "Phase II rounds", "communities", "ARI", "local", "federated"]
    header.append("ideal")
    return _table([*header, "MB (both phases)", "wall s"], rows)


def _phase1_rule(r: dict[str, Any]) -> str:
    """A run's Phase I rule: community method and tolerance (fixed or sampling)."""
    p1 = r["phase1"]
    z = p1.get("tolerance_z")
    return f"{p1['method']}, " + (f"z = {z:g}" if z is not None else f"t = {p1['tolerance']:g}")


def anomaly_seeds(*specs: str) -> str:
    """Seed 000 over data seeds: each spec is a run, or ``federated_run,baselines_run``."""
    rows = []
    for spec in specs:
        r = _merged(spec)
        local, fed, ideal = (r["auc"][k]["mean"] for k in SETTINGS)
        rows.append(
            [
                str(r["seed"]),
                _phase1_rule(r),
                str(len(r["communities"])),
                f"{r['ari']:.3f}",
                f"{local:.3f}",
                f"{fed:.3f}",
                f"{ideal:.3f}",
                f"{fed - local:+.3f}",
                f"{fed - ideal:+.3f}",
            ]
        )
    header = ["seed", "Phase I rule", "communities", "ARI", "local", "federated", "ideal"]
    return _table([*header, "federated - local", "federated - ideal"], rows)


def anomaly_epochs(run: str) -> str:
    """Seed 000: training each inlier class's model saw, local against federated."""
    r = load(run)
    cfg = r["config"]
    fed_epochs = _phase2_epochs(cfg)
    classes = r["client_inlier_class"]
    rows = []
    local_epochs = r["auc"]["local"].get("epochs_per_client")
    for c in range(10):
        members = [i for i, k in enumerate(classes) if k == c]
        held = [
            f"{len(m)} clients ({sum(1 for i in m if classes[i] == c)} of class {c})"
            for m in r["communities"]
            if any(classes[i] == c for i in m)
        ]
        local = (
            f"{sum(local_epochs[i] for i in members) / len(members):.1f}"
            if local_epochs is not None
            else f"{r['auc']['local']['epochs_mean']:.1f} (mean of all)"
        )
        rows.append(
            [
                str(c),
                local,
                f"{fed_epochs} x " + " and ".join(held),
                f"{r['auc']['local']['per_class'][str(c)]:.3f}",
                f"{r['auc']['federated']['per_class'][str(c)]:.3f}",
                f"{r['auc']['ideal']['per_class'][str(c)]:.3f}",
            ]
        )
    header = ["class", "local epochs", "federated epochs x community", "local", "federated"]
    return _table([*header, "ideal"], rows)


def anomaly_budget(reference: str, *runs: str) -> str:
    """Seed 000: federated AUC per class of several runs (Phase II budgets or community
    methods), against the reference's local and ideal baselines (the runs may skip them)."""
    ref = load(reference)
    fed = [load(run) for run in (reference, *runs)]

    header = ["class", f"local ({ref['config']['local_max_epochs']} epochs max)"]
    header += [
        f"federated, {r['config']['community_method']}, r = {r['config']['rounds']} "
        f"({_phase2_epochs(r['config'])} epochs)"
        for r in fed
    ]
    header.append("ideal (reference budget)")
    rows = []
    for c in [*map(str, range(10)), "mean"]:
        pick = (lambda a: a["mean"]) if c == "mean" else (lambda a, c=c: a["per_class"][c])
        cells = [pick(ref["auc"]["local"]), *(pick(r["auc"]["federated"]) for r in fed)]
        cells.append(pick(ref["auc"]["ideal"]))
        label = "**mean**" if c == "mean" else c
        rows.append([label, *(f"{v:.3f}" for v in cells)])
    return _table(header, rows)


def anomaly_community_budget(*runs: str) -> str:
    """Seed 000: federated mean AUC per community under several Phase II budgets.

    The runs must have found the same communities (e.g. one run extended with ``--resume``
    to more rounds); each cell is the mean AUC of the community's clients.
    """
    loaded = [load(run) for run in runs]
    first = loaded[0]
    for run, r in zip(runs[1:], loaded[1:], strict=True):
        if r["communities"] != first["communities"]:
            raise ValueError(f"{run}: its communities differ from {runs[0]}'s")
    classes = first["client_inlier_class"]
    header = ["community", "classes (clients)"]
    header += [
        f"r = {r['config']['rounds']} ({_phase2_epochs(r['config'])} epochs)" for r in loaded
    ]
    header.append("change (last - first)")
    rows = []
    for k, members in enumerate(first["communities"]):
        counts: dict[int, int] = {}
        for i in members:
            counts[classes[i]] = counts.get(classes[i], 0) + 1
        means = [
            statistics.fmean(r["auc"]["federated"]["per_client"][i] for i in members)
            for r in loaded
        ]
        label = " + ".join(f"{c} ({n})" for c, n in sorted(counts.items()))
        rows.append([str(k), label, *(f"{m:.3f}" for m in means), f"{means[-1] - means[0]:+.3f}"])
    return _table(header, rows)


def anomaly_local(reference: str, *runs: str) -> str:
    """Seed 000: the local baseline under several epoch budgets, per class, with the epochs
    its clients ran (early stopping), against the reference run's federated and ideal.

    A run must have the reference's clients (the same inlier class per client).
    """
    ref = load(reference)
    locals_ = [ref, *(load(run) for run in runs)]
    classes = ref["client_inlier_class"]
    for run, r in zip(runs, locals_[1:], strict=True):
        if r["client_inlier_class"] != classes:
            raise ValueError(f"{run}: its clients differ from {reference}'s")
    header = ["class"]
    header += [f"local, {r['config']['local_max_epochs']} epochs max" for r in locals_]
    header += [
        f"federated, {ref['config']['community_method']}, r = {ref['config']['rounds']} "
        f"({_phase2_epochs(ref['config'])} epochs)",
        "ideal",
    ]
    rows = []
    for c in [*map(str, range(10)), "mean"]:
        members = [i for i, k in enumerate(classes) if c == "mean" or str(k) == c]
        cells = ["**mean**" if c == "mean" else c]
        for r in locals_:
            table = r["auc"]["local"]
            auc = table["mean"] if c == "mean" else table["per_class"][c]
            ran = table.get("epochs_per_client")  # older runs kept the mean only
            epochs = (
                f"{sum(ran[i] for i in members) / len(members):.1f} epochs"
                if ran is not None
                else f"{table['epochs_mean']:.1f} epochs, mean of all"
            )
            cells.append(f"{auc:.3f} ({epochs})")
        for setting in ("federated", "ideal"):
            table = ref["auc"][setting]
            cells.append(f"{table['mean'] if c == 'mean' else table['per_class'][c]:.3f}")
        rows.append(cells)
    return _table(header, rows)


#: Tolerances and community methods of the Phase I re-scoring table.
ANOMALY_TOLERANCES = (0.02, 0.03, 0.04, 0.06, 0.08)
#: Standard errors of the label-free sampling rule (``--tolerance-z``) in the same table.
ANOMALY_Z = (1.0, 2.0)
ANOMALY_METHODS = ("fastgreedy", "leiden", "louvain", "greedy_modularity")


def _client_sizes(r: dict[str, Any]) -> list[int]:
    """Every client's sample count: the protocol's clients hold equal shares."""
    n, total = int(r["num_clients"]), int(r["num_train_samples"])
    if total % n:
        raise ValueError(f"{total} samples do not split evenly over {n} clients")
    return [total // n] * n


def _phase1_rules(r: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(row label, tolerance(s), is the run's own rule) of the Phase I re-scoring table."""
    import numpy as np

    from fedlightning.algorithms.community import sampling_tolerance

    p1 = r["phase1"]
    own_z = p1.get("tolerance_z")
    rules = [(f"{t:.2f}", t, own_z is None and t == p1["tolerance"]) for t in ANOMALY_TOLERANCES]
    diag = np.diag(np.asarray(p1["ratios"]))
    for z in ANOMALY_Z:
        t = sampling_tolerance(diag, _client_sizes(r), z)
        label = f"z = {z:g} ({t.min():.4f}" + ("" if np.ptp(t) == 0 else f"-{t.max():.4f}") + ")"
        rules.append((label, t, own_z == z))
    return rules


def anomaly_methods(run: str) -> str:
    """Seed 000: every community method and several tolerances on one run's Phase I scores.

    Recomputed from the run's saved inlier-ratio matrix (``phase1.ratios``) with the
    library's own functions: five fixed tolerances and the sampling rule at ``z`` = 1 and 2;
    the run's own (method, tolerance) must give its communities.
    """
    from fedlightning.algorithms.community import (
        candidate_lists,
        detect_communities,
        similarity_graph,
    )
    from fedlightning.algorithms.community.fedavg import PHASE1_ROUND
    from fedlightning.metrics.anomaly import adjusted_rand
    from fedlightning.round import derive_seed

    r = load(run)
    ratios, classes = r["phase1"]["ratios"], r["client_inlier_class"]
    # The seed the pipeline gives Leiden and Louvain (CommunityFedAvg's Phase I round), so
    # that each cell is what a run with that rule would have found.
    seed = derive_seed(int(r["seed"]), PHASE1_ROUND)
    rows = []
    for label, tol, own_rule in _phase1_rules(r):
        cells = []
        for method in ANOMALY_METHODS:
            groups = detect_communities(
                similarity_graph(candidate_lists(ratios, tol)), method, seed=seed
            )
            own = own_rule and method == r["phase1"]["method"]
            if own and groups != r["communities"]:
                raise ValueError(f"{run}: its Phase I scores no longer give its communities")
            mixed = [sorted({classes[i] for i in g}) for g in groups]
            merges = " ".join(
                "{" + ",".join(map(str, m)) + "}" for m in sorted(mixed) if len(m) > 1
            )
            ari = adjusted_rand(groups, classes)
            cells.append(f"{len(groups)}, ARI {ari:.3f}" + (f": {merges}" if merges else ""))
        rows.append([label, *cells])
    return _table(["t", *ANOMALY_METHODS], rows)


def anomaly_noise(*runs: str) -> str:
    """Seed 000: the gaps of the tolerance rule against the sampling rule's prediction.

    For every ordered pair of clients the relative gap ``R[j, i] / R[i, i] - 1``; pairs of
    the same inlier class should differ by sampling noise alone, whose standard deviation
    :func:`~fedlightning.algorithms.community.sampling_tolerance` predicts (``z = 1``). The
    last two columns are the shares of pairs the mutual rule joins by an edge.
    """
    import numpy as np

    from fedlightning.algorithms.community import sampling_tolerance

    header = [
        "run",
        "seed",
        "Phase I epochs",
        "samples per client",
        "R[i, i]",
        "predicted sd (z = 1)",
        "same-class gap sd",
        "same-class pairs joined at 1 sd / 0.06",
        "other pairs joined at 1 sd / 0.06",
    ]
    rows = []
    for run in runs:
        r = load(run)
        ratios = np.asarray(r["phase1"]["ratios"])
        classes = np.asarray(r["client_inlier_class"])
        diag = np.diag(ratios)
        sd = sampling_tolerance(diag, _client_sizes(r), 1.0)
        gaps = ratios.T / diag[:, None] - 1  # gaps[i, j]: detector j on client i's data
        same = (classes[:, None] == classes[None, :]) & ~np.eye(len(classes), dtype=bool)
        other = classes[:, None] != classes[None, :]
        # An edge needs both clients to accept (the mutual rule); count unordered pairs.
        one_sd, fixed = np.abs(gaps) <= sd[:, None], np.abs(gaps) <= 0.06
        joined = [a & a.T for a in (one_sd, fixed)]
        upper = np.triu(np.ones_like(same), k=1)

        def shares(mask: Any, joined: list[Any] = joined, upper: Any = upper) -> str:
            counts = " / ".join(f"{int(j[mask & upper].sum()):,}" for j in joined)
            return f"{counts} of {int((mask & upper).sum()):,}"

        p = "-".join(sorted({f"{v:.4f}" for v in diag}))
        rows.append(
            [
                run.rsplit("/", 1)[-1],
                str(r["seed"]),
                str(r["config"]["phase1_epochs"]),
                "-".join(sorted({str(n) for n in _client_sizes(r)})),
                p,
                "-".join(sorted({f"{v:.4f}" for v in sd})),
                f"{gaps[same].std():.4f}",
                shares(same),
                shares(other),
            ]
        )
    return _table(header, rows)


# --- seed 004 (docs/fedmorph.md) -----------------------------------------------------------


def _last_mean(curve: list[list[float]], k: int = 5) -> float:
    return sum(a for _, a in curve[-k:]) / min(k, len(curve))


def fedmorph_runs(reference: str, *runs: str) -> str:
    """Seed 004: each ``examples/fedmorph.py`` run against the reference (FedAvg) run."""
    ref = next(iter(load(reference)["methods"].values()))
    rows = []
    for run in (reference, *runs):
        for m in load(run)["methods"].values():
            rows.append(
                [
                    run.rsplit("/", 1)[-1],
                    f"{m['accuracy']:.3f}",
                    f"{m['max_accuracy']:.3f}",
                    f"{_last_mean(m['curve']):.3f}",
                    f"{100 * (m['accuracy'] - ref['accuracy']):+.1f}",
                    f"{m['params_ratio']:.4f}",
                    f"1/{ref['bytes_down'] / m['bytes_down']:.1f}",
                    f"1/{ref['bytes_up'] / m['bytes_up']:.1f}",
                    ", ".join(f"{js:.3f}" for _, js in m.get("distill_js", [])),
                    f"{m['wall_s']:,.0f}",
                ]
            )
    header = ["run", "final acc", "best", "mean last 5", "vs FedAvg (points)", "params ratio"]
    return _table([*header, "down / FedAvg", "up / FedAvg", "JS after distilling", "wall s"], rows)


def _mean_sd(values: list[float]) -> str:
    """``mean +- sd`` in points (sample standard deviation; ``mean`` alone for one value)."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} +- {100 * statistics.stdev(values):.1f}"


def _ratio_range(ratios: list[float]) -> str:
    """``1/x``, or ``1/lo to 1/hi`` where the seeds' ratios differ at one decimal.

    ``ratios`` are reference bytes over a method's; a method that sends more than the
    reference (every ratio under 1) reads ``x1.49`` (its bytes over the reference's).
    """
    if max(ratios) < 1:
        lo, hi = f"x{1 / max(ratios):.2f}", f"x{1 / min(ratios):.2f}"
    else:
        lo, hi = f"1/{min(ratios):.1f}", f"1/{max(ratios):.1f}"
    return lo if lo == hi else f"{lo} to {hi}"


def _fedmorph_label(r: dict[str, Any], name: str) -> str:
    """Seed 004's row label: the method, and its sub-network's keep share."""
    if name in ("fedavg", "fedprox"):
        return name
    # FedMorph's sub-network size is set by its masks' initial keep share when given
    keep = r["config"].get("keep_ratio")
    if name.startswith("fedmorph") and r["config"].get("mask_init_keep") is not None:
        keep = r["config"]["mask_init_keep"]
    return f"{name} (keep {keep})"


def _fsnet_label(r: dict[str, Any], name: str) -> str:
    """Seed 003's row label: the method, and how D' travels."""
    if name != "fedfsnet":
        return name
    codec = r["config"].get("synthetic_codec")
    codec = "float32" if codec == "identity" else codec
    return f"{name} ({r['config']['num_synthetic']} x {codec})"


def _runs_by_seed(
    group: str, label_of: Callable[[dict[str, Any], str], str]
) -> tuple[str, dict[int, dict[str, Any]]]:
    """One method's comma-separated runs: its row label and its results by seed.

    Refuses a group that mixes methods, or holds one seed twice.
    """
    label, by_seed = "", {}
    for run in group.split(","):
        r = load(run)
        name, entry = next(iter(r["methods"].items()))
        this = label_of(r, name)
        if label and this != label:
            raise ValueError(f"{group}: mixes {label} and {this}")
        if int(r["seed"]) in by_seed:
            raise ValueError(f"{group}: seed {r['seed']} appears twice")
        label, by_seed[int(r["seed"])] = this, entry
    return label, by_seed


def _paired_seeds(
    groups: tuple[str, ...],
    label_of: Callable[[dict[str, Any], str], str],
    final: Callable[[dict[str, Any]], float],
    late: tuple[str, Callable[[dict[str, Any]], float]],
    reference_name: str = "FedAvg",
) -> str:
    """Methods over several seeds, each against the first group's method on the same seed.

    A seed fixes the partition, the sampled clients and the initialisation, so each gap to
    the reference is taken seed by seed (paired), then averaged; every group must hold the
    reference's seeds. ``final`` reads a method's final accuracy, ``late`` names and reads a
    late-rounds average (less sensitive to one evaluation's swing); ``reference_name`` heads
    the gap columns.
    """
    reference, late_name, late_of = groups[0], late[0], late[1]
    _, ref = _runs_by_seed(reference, label_of)
    seeds = sorted(ref)
    rows = []
    for group in groups:
        label, runs = _runs_by_seed(group, label_of)
        if sorted(runs) != seeds:
            raise ValueError(f"{group}: seeds {sorted(runs)} differ from the reference's {seeds}")
        gaps = [final(runs[s]) - final(ref[s]) for s in seeds]
        gaps_late = [late_of(runs[s]) - late_of(ref[s]) for s in seeds]
        rows.append(
            [
                label,
                ", ".join(map(str, seeds)),
                ", ".join(f"{100 * final(runs[s]):.1f}" for s in seeds),
                _mean_sd([final(runs[s]) for s in seeds]),
                ", ".join(f"{100 * g:+.1f}" for g in gaps),
                _mean_sd(gaps),
                _mean_sd(gaps_late),
                _ratio_range([ref[s]["bytes_down"] / runs[s]["bytes_down"] for s in seeds]),
            ]
        )
    vs = f"vs {reference_name}"
    header = ["method", "seeds", "final acc (%) per seed", "final acc, mean +- sd"]
    header += [f"{vs} per seed", f"{vs}, mean +- sd", f"{vs}, {late_name}"]
    return _table([*header, f"down / {reference_name}"], rows)


def fedmorph_seeds(reference: str, *groups: str) -> str:
    """Seed 004: methods over several seeds, each against the reference method on the same seed.

    Each argument is one method's runs, comma-separated (``fedmorph/a,fedmorph/b``); the first
    is the reference (FedAvg); see :func:`_paired_seeds`.
    """
    return _paired_seeds(
        (reference, *groups),
        _fedmorph_label,
        final=lambda m: m["accuracy"],
        late=("mean last 5", lambda m: _last_mean(m["curve"])),
    )


def _curve_table(runs: tuple[str, ...], point: Callable[[Any], tuple[int, str]], every: int) -> str:
    """One row per run's (single) method: its accuracy at every ``every``-th evaluated round."""
    curves = {
        run.rsplit("/", 1)[-1]: dict(
            point(p) for p in next(iter(load(run)["methods"].values()))["curve"]
        )
        for run in runs
    }
    marks = sorted({r for c in curves.values() for r in c if r % every == 0})
    rows = [[name] + [c.get(r, "") for r in marks] for name, c in curves.items()]
    return _table(["run"] + [f"r{r}" for r in marks], rows)


def fedmorph_curves(*runs: str) -> str:
    """Seed 004: test accuracy of each run at every evaluation, or every ten rounds if the
    runs were evaluated more than ten times."""
    evaluations = max(len(next(iter(load(r)["methods"].values()))["curve"]) for r in runs)
    every = 10 if evaluations > 10 else 1
    return _curve_table(runs, lambda p: (int(p[0]), f"{p[1]:.3f}"), every=every)


def fedmorph_distillation(*runs: str) -> str:
    """Seed 004: accuracy at the evaluation before and after each distillation round.

    Methods that never distil (no ``distill_js``) get no row; the runs must share their
    distillation and evaluation schedules, so that the columns mean the same rounds.
    """
    schedules, rows = set(), []
    for run in runs:
        r = load(run)
        cfg = r["config"]
        every, step, rounds = int(cfg["distill_every"]), int(cfg["eval_every"]), int(cfg["rounds"])
        for m in r["methods"].values():
            if not m.get("distill_js"):
                continue
            schedules.add((every, step, rounds))
            acc = {int(k): a for k, a in m["curve"]}
            cells = [
                f"{acc[k - step]:.3f} -> {acc[k]:.3f}" if k in acc and k - step in acc else ""
                for k in range(every, rounds + 1, every)
            ]
            rows.append([run.rsplit("/", 1)[-1], *cells])
    if len(schedules) != 1:
        raise ValueError(
            f"runs {runs} need one (distill_every, eval_every, rounds) schedule, got {schedules}"
        )
    every, step, rounds = schedules.pop()
    return _table(["run"] + [f"r{k - step} -> r{k}" for k in range(every, rounds + 1, every)], rows)


def fedmorph_layers(run: str) -> str:
    """Seed 004: kept share of every masked layer after each distillation."""
    m = next(iter(load(run)["methods"].values()))
    history = m["layer_ratios"]
    layers = [k for k in history[0] if k != "round"]
    rows = []
    for layer in layers:
        shares = [h[layer] for h in history]
        rows.append([layer] + [f"{s:.3f}" for s in shares] + [f"{shares[-1] - shares[0]:+.3f}"])
    header = ["layer"] + [f"r{int(h['round'])}" for h in history] + ["change"]
    return _table(header, rows)


# --- seed 003 (docs/fsnet.md) --------------------------------------------------------------


def fsnet_runs(*runs: str) -> str:
    """Seed 003: final accuracies, bytes and D's share of the downlink of each run."""
    rows = []
    for run in runs:
        r = load(run)
        for name, m in r["methods"].items():
            payload = m.get("payload", {})
            share = payload.get("extras_share_down")
            codec = r["config"].get("synthetic_codec") if name == "fedfsnet" else None
            codec = "float32" if codec == "identity" else codec
            stats = ", pixel statistics" if r["config"].get("statistics") == "pixel" else ""
            label = run.rsplit("/", 1)[-1]
            rows.append(
                [
                    label if len(r["methods"]) == 1 else f"{label}: {name}",
                    str(int(m["curve"][-1]["round"])),
                    f"{100 * m['acc_global']:.1f}",
                    f"{100 * m['acc_local']:.1f}" if m.get("acc_local") is not None else "",
                    f"{r['config']['num_synthetic']} x {codec}{stats}" if codec else "",
                    f"{100 * share:.1f}%" if share else "",
                    f"{m['bytes_down']:,}",
                    f"{m['bytes_up']:,}",
                    f"{m['wall_s']:,.0f}",
                ]
            )
    header = ["run", "rounds", "acc_global %", "acc_local %", "D' sent as", "D' / weights down"]
    return _table([*header, "bytes down", "bytes up", "wall s"], rows)


def fsnet_curves(*runs: str) -> str:
    """Seed 003: acc_global (%) at every evaluated round of each run."""
    return _curve_table(runs, lambda p: (int(p["round"]), f"{100 * p['acc_global']:.1f}"), every=1)


def _fsnet_late_mean(m: dict[str, Any]) -> float:
    """Mean acc_global at rounds 30, 40 and 50 (evaluated by every seed 003 run)."""
    points = [p["acc_global"] for p in m["curve"] if p["round"] in (30, 40, 50)]
    if len(points) != 3:
        raise ValueError("a seed 003 run without evaluations at rounds 30, 40 and 50")
    return sum(points) / 3


def fsnet_seeds(reference: str, *groups: str) -> str:
    """Seed 003: methods over several seeds, each against non-IID FedAvg on the same seed.

    Each argument is one method's runs, comma-separated; the first is the reference; see
    :func:`_paired_seeds`. The late average is over rounds 30, 40 and 50, which runs
    evaluated every 5 or every 10 rounds share.
    """
    return _paired_seeds(
        (reference, *groups),
        _fsnet_label,
        final=lambda m: m["acc_global"],
        late=("mean r30, r40, r50", _fsnet_late_mean),
    )


# --- seed 002 (docs/federated_vae.md) ------------------------------------------------------

#: Rows of the seed 002 table: (key in ``centralized`` / ``federated``, label, format).
VAE_SCORES: tuple[tuple[str, str, str], ...] = (
    ("test_elbo", "test ELBO (nats/image, higher is better)", "{:.2f}"),
    ("test_recon", "test reconstruction (BCE)", "{:.2f}"),
    ("test_kl", "test KL", "{:.2f}"),
    (
        "frechet_distance",
        "Frechet distance of samples to the test set (classifier features)",
        "{:.1f}",
    ),
    ("frechet_distance_reconstructions", "Frechet distance of the test reconstructions", "{:.1f}"),
    ("sample_confidence", "sample confidence (mean top softmax probability)", "{:.3f}"),
    ("classifier_score", "classifier score (Inception-style, max 10)", "{:.2f}"),
    ("class_entropy", "predicted-class entropy of samples (max log 10 = 2.30)", "{:.2f}"),
    ("reconstruction_accuracy", "classifier accuracy on the test reconstructions", "{:.3f}"),
    ("wall_s", "training wall time (s)", "{:,.0f}"),
)


def vae_scores(run: str) -> str:
    """Seed 002: centralized against federated on every score, with the two targets' gaps."""
    r = load(run)
    cen, fed, cfg = r["centralized"], r["federated"], r["config"]
    gaps = {
        "test_elbo": f"{100 * r['targets']['elbo_relative_gap']:.2f}%",
        "frechet_distance": f"{100 * r['targets']['frechet_relative_gap']:.1f}%",
    }
    rows = [
        [label, fmt.format(cen[k]), fmt.format(fed[k]), gaps.get(k, "")]
        for k, label, fmt in VAE_SCORES
    ]
    rows.append(
        ["bytes sent (down / up)", "", f"{r['bytes']['down']:,} / {r['bytes']['up']:,}", ""]
    )
    clf = r["classifier"]
    rows.append(
        [
            "scoring classifier: test accuracy, train-vs-test Frechet distance (the floor)",
            f"{clf['test_acc']:.3f}, {clf['frechet_distance_train_vs_test']:.2f}",
            "",
            "",
        ]
    )
    subset = cfg["train_subset"]
    data = f"{subset:,} training images" if subset else "all training images"
    header = [
        f"Fashion-MNIST, {data}",
        f"centralized ({cfg['epochs']} epochs)",
        f"federated ({cfg['clients']} IID clients, {cfg['rounds']} x {cfg['local_epochs']})",
        "gap",
    ]
    return _table(header, rows)


RENDERERS: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        server_optimizers,
        anomaly_auc,
        anomaly_communities,
        anomaly_cost,
        anomaly_summary,
        anomaly_seeds,
        anomaly_epochs,
        anomaly_budget,
        anomaly_community_budget,
        anomaly_local,
        anomaly_methods,
        anomaly_noise,
        fedmorph_runs,
        fedmorph_seeds,
        fedmorph_curves,
        fedmorph_distillation,
        fedmorph_layers,
        fsnet_runs,
        fsnet_curves,
        fsnet_seeds,
        vae_scores,
    )
}


def render(spec: str) -> str:
    """The markdown a ``results-table`` marker with this ``spec`` stands for."""
    name, *args = spec.split()
    if name not in RENDERERS:
        raise KeyError(f"unknown results table {name!r}; known: {sorted(RENDERERS)}")
    return RENDERERS[name](*args)


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(spec, body)`` of every marked table of ``page``."""
    return [(m["spec"], m["body"]) for m in BLOCK.finditer(page.read_text())]


def refresh(page: Path, *, write: bool) -> list[str]:
    """Re-render every marked table of ``page``; the specs whose text differed."""
    text = page.read_text()
    stale: list[str] = []

    def sub(m: re.Match[str]) -> str:
        body = render(m["spec"])
        if body != m["body"]:
            stale.append(m["spec"])
        return m["open"] + body + m["close"]

    new = BLOCK.sub(sub, text)
    if write and new != text:
        page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables")
    args = parser.parse_args(argv)
    status = 0
    for page in sorted(DOCS.glob("*.md")):
        for spec in refresh(page, write=not args.check):
            print(f"{page.name}: {'stale' if args.check else 'rewrote'} {spec}")
            status = 1 if args.check else status
    return status


if __name__ == "__main__":
    sys.exit(main())
