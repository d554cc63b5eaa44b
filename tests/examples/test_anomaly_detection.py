import importlib.util
import json
from pathlib import Path

import pytest

from fedlightning.datamodules import load_dataset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "anomaly_detection.py"


def _example():
    spec = importlib.util.spec_from_file_location("anomaly_detection_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    # The real data is required (CI installs Debian's dataset-fashion-mnist): a missing
    # dataset fails here with the loader's message rather than skipping.
    load_dataset("fashion_mnist", split="test", download=False)
    out = tmp_path_factory.mktemp("anomaly")
    assert _example().main(["--output-dir", str(out), "--quick", "--seed", "1"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_the_issue_keys(quick_run):
    out, r = quick_run
    n = r["num_clients"]
    assert n == 20
    assert sorted(c for group in r["communities"] for c in group) == list(range(n))
    assert r["client_inlier_class"] == [c // 2 for c in range(n)]
    assert -1 <= r["ari"] <= 1 and r["modularity"] is not None
    for name in ("local", "federated", "ideal"):
        table = r["auc"][name]
        assert sorted(table["per_class"], key=int) == [str(c) for c in range(10)]
        assert 0 <= table["mean"] <= 1 and table["std"] >= 0
    assert (out / "community_graph.png").stat().st_size > 0
    assert (out / "auc_per_class.png").stat().st_size > 0
    assert r["wall_s"] > 0 and r["config"]["quick"] is True


def test_quick_run_measured_bytes_match_the_formulas(quick_run):
    _, r = quick_run
    cost = r["comm_cost_mb"]
    n = r["num_clients"]
    # Phase I: eq. (1) differs only by the 4-byte threshold per model, one byte per
    # association bit instead of one bit, and the real candidate/community list sizes.
    assert cost["phase1"]["measured"] == pytest.approx(cost["phase1"]["formula"], rel=0.01)
    assert cost["phase1"]["measured_by_exchange"]["models"] == pytest.approx(
        n * (n - 1) * (4 * 3_217 + 4) / 1e6
    )
    # Phase II: eq. (2) exactly, plus the 8-byte sample count on each upload.
    rounds = r["config"]["rounds"]
    assert cost["phase2"]["measured"] == pytest.approx(
        cost["phase2"]["formula_eq2"] + rounds * n * 8 / 1e6
    )
    assert cost["phase2"]["formula_eq3"] < cost["phase2"]["formula_eq2"]
    # Centralized: every training sample at one byte per pixel.
    assert cost["centralized"] == pytest.approx(r["num_train_samples"] * 784 / 1e6)
    assert 0.95 * n * 200 <= r["num_train_samples"] <= n * 200  # 4,000 images, 90% + outliers
    t4 = cost["table4"]
    assert t4["this_work"]["phase2_model_bytes"] == 4 * 28_353
    assert t4["prior_work"]["phase2_model_bytes"] == 4 * 105_392


def test_yaml_config_builds_the_seed000_pipeline():
    from fedlightning.algorithms.community import AutoencoderDetector, CommunityFedAvg
    from fedlightning.cli import build_parser
    from fedlightning.models import ConvAutoencoder7

    config = EXAMPLE.parent / "configs" / "anomaly_detection.yaml"
    parser = build_parser()
    cfg = parser.parse_args(["fit", "--config", str(config)])
    fit = parser._subcommands_action._name_parser_map["fit"]
    init = fit.instantiate_classes(cfg.fit)
    algorithm = init.trainer.algorithm
    assert isinstance(algorithm, CommunityFedAvg)
    assert isinstance(algorithm.phase1.detector, AutoencoderDetector)
    assert algorithm.phase1.tolerance == 0.06 and algorithm.phase1.method == "leiden"
    assert algorithm.epochs_per_round == [1, 10]
    assert isinstance(init.model, ConvAutoencoder7)
    assert init.trainer.rounds == 10
    assert init.data.partition.num_clients == 90


def test_yaml_config_takes_the_label_free_tolerance_from_the_command_line():
    import numpy as np

    from fedlightning.algorithms.community import sampling_tolerance
    from fedlightning.cli import build_parser

    config = EXAMPLE.parent / "configs" / "anomaly_detection.yaml"
    parser = build_parser()
    override = "--trainer.algorithm.init_args.phase1.init_args.tolerance_z=1.5"
    cfg = parser.parse_args(["fit", "--config", str(config), override])
    fit = parser._subcommands_action._name_parser_map["fit"]
    phase1 = fit.instantiate_classes(cfg.fit).trainer.algorithm.phase1
    assert phase1.tolerance_z == 1.5
    ratios = np.array([[0.9, 0.5], [0.6, 0.8]])
    sizes = np.array([600, 300])
    np.testing.assert_allclose(
        phase1.tolerances(ratios, sizes), sampling_tolerance([0.9, 0.8], sizes, 1.5)
    )


def test_same_seed_same_result_and_parallel_baselines_change_nothing(
    quick_run, tmp_path, assert_same_results
):
    # The fixture ran everything in one process; this run puts the baselines in a second
    # process (--jobs 2). Same seed: the same communities and the same AUC of every client.
    first_dir, first = quick_run
    args = ["--output-dir", str(tmp_path), "--quick", "--seed", "1", "--jobs", "2"]
    assert _example().main(args) == 0
    second = json.loads((tmp_path / "results.json").read_text())
    assert second["communities"] == first["communities"]
    for name in ("local", "federated", "ideal"):
        assert second["auc"][name]["per_class"] == first["auc"][name]["per_class"]
    assert (tmp_path / "baselines" / "results.json").exists()
    assert set(second["timings"]) >= {"federated_s", "phase1_s", "ideal_s", "local_s"}
    # In fact the whole results.json, and each method's, but for durations and the output
    # folder (see conftest.py), and the config keys of the one flag that differs: --jobs 2,
    # which also sets threads (1) and is in argv. The second process writes the ideal
    # baseline's file under baselines/.
    files = {
        "results.json": "results.json",
        "federated/results.json": "federated/results.json",
        "ideal/results.json": "baselines/ideal/results.json",
    }
    written = sorted(str(p.relative_to(first_dir)) for p in first_dir.rglob("results.json"))
    assert written == sorted(files)
    assert_same_results(
        first_dir,
        tmp_path,
        files,
        drop_config=("jobs", "threads", "argv"),
        drop_environment=("torch_threads",),
    )


def test_phase1_scores_are_kept_and_reproduce_the_candidate_lists(quick_run):
    import numpy as np

    from fedlightning.algorithms.community.graph import candidate_lists

    _, r = quick_run
    n = r["num_clients"]
    ratios = np.array(r["phase1"]["ratios"])
    assert ratios.shape == (n, n) and ((ratios >= 0) & (ratios <= 1)).all()
    assert candidate_lists(ratios, r["phase1"]["tolerance"]) == r["phase1"]["candidates"]


def test_tolerance_z_derives_each_clients_tolerance_from_its_own_share(tmp_path):
    import numpy as np

    from fedlightning.algorithms.community import candidate_lists, sampling_tolerance

    args = ["--output-dir", str(tmp_path), "--quick", "--skip-baselines", "--tolerance-z", "1.5"]
    assert _example().main(args) == 0
    p1 = json.loads((tmp_path / "results.json").read_text())["phase1"]
    ratios = np.array(p1["ratios"])
    dm = _example().build_data(_example().parse_args(args))
    dm.setup()
    sizes = [dm.num_samples(c) for c in dm.client_ids]
    assert p1["tolerance_z"] == 1.5
    np.testing.assert_allclose(p1["tolerances"], sampling_tolerance(np.diag(ratios), sizes, 1.5))
    assert candidate_lists(ratios, p1["tolerances"]) == p1["candidates"]
    assert candidate_lists(ratios, p1["tolerance"]) != p1["candidates"]  # 0.06 is not used


def test_killed_run_resumed_gives_the_uninterrupted_result(
    quick_run, tmp_path, assert_same_results, caplog
):
    # One Phase II round, then a kill halfway through the local baseline (its last clients
    # never saved); the same command must refuse the folder, and with --resume must finish
    # with the fixture's result without repeating Phase I or the finished clients.
    import logging

    first_dir, _ = quick_run
    base = ["--output-dir", str(tmp_path), "--quick", "--seed", "1"]
    assert _example().main([*base, "--rounds", "1"]) == 0
    saved = sorted((tmp_path / "local" / "checkpoints").glob("client_*.ckpt"))
    assert len(saved) == 20
    for path in saved[12:]:
        path.unlink()
    with pytest.raises(ValueError, match=r"already holds another run.*anomaly_detection\.py"):
        _example().main(base)
    with caplog.at_level(logging.INFO):
        assert _example().main([*base, "--resume"]) == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("Phase I:")]
    files = {
        "results.json": "results.json",
        "federated/results.json": "federated/results.json",
        "ideal/results.json": "ideal/results.json",
    }
    assert_same_results(first_dir, tmp_path, files, drop_config=("resume", "argv"))


def test_one_baseline_alone(quick_run, tmp_path):
    # --part local runs the local baseline only: the fixture's local AUCs, no ideal folder.
    _, first = quick_run
    args = ["--output-dir", str(tmp_path), "--quick", "--seed", "1", "--part", "local"]
    assert _example().main(args) == 0
    part = json.loads((tmp_path / "results.json").read_text())
    assert set(part["auc"]) == {"local"} and set(part["timings"]) == {"local_s"}
    assert part["client_inlier_class"] == first["client_inlier_class"]
    assert part["auc"]["local"] == first["auc"]["local"]
    assert not (tmp_path / "ideal").exists() and not (tmp_path / "federated").exists()
