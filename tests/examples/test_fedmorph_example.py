"""The seed 004 example on generated tensors of the real shapes (CIFAR-10 cannot be fetched)."""

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fedmorph.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fedmorph_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fedmorph_example"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("dataset", "model"), [("cifar10", "resnet18"), ("cifar10", "vgg16")])
def test_cifar10_code_paths_write_results_and_figures(
    tmp_path: Path, dataset: str, model: str
) -> None:
    example = load()
    out = tmp_path / model
    results = example.main(
        [
            "--quick",
            "--synthetic",
            "80",
            "--dataset",
            dataset,
            "--model",
            model,
            "--rounds",
            "2",
            "--methods",
            "fedavg",
            "fedmorph_topk10",
            "--output-dir",
            str(out),
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["methods"]) == {"fedavg", "fedmorph_topk10"}
    morph = saved["methods"]["fedmorph_topk10"]
    for key in (
        "accuracy",
        "params_ratio",
        "flops_ratio",
        "bytes_down",
        "bytes_up",
        "wall_s",
        "curve",
    ):
        assert key in morph
    assert 0 < morph["params_ratio"] < 1 and 0 < morph["flops_ratio"] < 1
    rel = results["relative_to_fedavg"]["fedmorph_topk10"]
    assert rel["bytes_down_ratio"] == pytest.approx(
        morph["bytes_down"] / saved["methods"]["fedavg"]["bytes_down"]
    )
    assert rel["bytes_up_ratio"] < rel["bytes_down_ratio"]
    assert (out / "layer_ratios.png").stat().st_size > 0
    assert (out / "accuracy.png").stat().st_size > 0
    assert saved["config"]["model"] == model and saved["seed"] == 12345


DIRICHLET_QUICK = [
    "--quick",
    "--synthetic",
    "80",
    "--partition",
    "dirichlet",
    "--rounds",
    "1",
    "--methods",
    "fedprox",
    "fedmorphprox",
    "feddropout",
    "fedpruned_topk25",
]


@pytest.fixture(scope="module")
def dirichlet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``DIRICHLET_QUICK`` run in this process: its output folder and returned results."""
    out = tmp_path_factory.mktemp("dirichlet")
    return out, load().main([*DIRICHLET_QUICK, "--output-dir", str(out)])


def test_dirichlet_defaults_and_baselines(dirichlet_run: tuple[Path, dict]) -> None:
    example = load()
    args = example.parse_args(["--partition", "dirichlet"])
    assert args.methods == ["fedavg", "fedprox", "fedmorph", "fedmorphprox"]
    assert args.rounds == 1500 and args.clients == 100 and args.clients_per_round == 10
    _, results = dirichlet_run
    methods = results["methods"]
    assert methods["fedprox"]["params_ratio"] == 1.0
    assert methods["feddropout"]["params_ratio"] < 0.2  # 0.25 of every layer's channels
    assert methods["fedpruned_topk25"]["bytes_up"] < methods["fedpruned_topk25"]["bytes_down"]
    assert "FedMorphProx(mu=0.01" in methods["fedmorphprox"]["algorithm"]


def test_same_command_same_results(
    dirichlet_run: tuple[Path, dict],
    tmp_path: Path,
    rerun: Callable,
    assert_same_results: Callable,
) -> None:
    # The Dirichlet run above again, as its command line in a fresh process, into another
    # folder: the same results.json, and the same per-method ones, but for durations and the
    # output folder (see conftest.py).
    first, _ = dirichlet_run
    rerun([str(EXAMPLE), *DIRICHLET_QUICK, "--output-dir", str(tmp_path)])
    compared = assert_same_results(first, tmp_path)
    methods = ["fedprox", "fedmorphprox", "feddropout", "fedpruned_topk25"]
    assert compared == sorted(["results.json", *(f"{m}/results.json" for m in methods)])


def test_yaml_config_builds_fedmorph_on_the_masked_resnet8() -> None:
    from fedlightning.algorithms.fedmorph import FedMorph
    from fedlightning.cli import build_parser
    from fedlightning.codecs import TopK
    from fedlightning.models.masked import MaskedResNet8

    config = EXAMPLE.parent / "configs" / "fedmorph.yaml"
    parser = build_parser()
    cfg = parser.parse_args(["fit", "--config", str(config)])
    init = parser.instantiate_classes(cfg)
    assert isinstance(init.fit.model, MaskedResNet8) and init.fit.model.masked
    algorithm = init.fit.trainer.algorithm
    assert isinstance(algorithm, FedMorph) and isinstance(algorithm.uplink, TopK)
    assert (algorithm.distill_every, algorithm.distill_epochs, algorithm.lam) == (10, 2, 1.6e-6)
    assert algorithm.distill_masks == "noisy"
    assert init.fit.trainer.clients_per_round == 10
    cfg = parser.parse_args(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.algorithm.init_args.distill_masks",
            "straight_through",
        ]
    )
    assert parser.instantiate_classes(cfg).fit.trainer.algorithm.distill_masks == (
        "straight_through"
    )


def test_distillation_options_reach_fedmorph() -> None:
    example = load()
    args = example.parse_args(
        ["--distill-masks", "straight_through", "--mask-lr", "0.2", "--mask-init-keep", "0.5"]
    )
    algorithm = example.make_algorithm("fedmorph_topk10", args, torch.zeros(2, 1, 28, 28))
    assert algorithm.distill_masks == "straight_through"
    assert algorithm.mask_lr == 0.2 and algorithm.init_keep_ratio == 0.5
    default = example.make_algorithm("fedmorph", example.parse_args([]), torch.zeros(2, 1, 28, 28))
    assert default.distill_masks == "noisy" and default.init_keep_ratio is None


def test_resume_extends_a_run_to_the_uninterrupted_result(tmp_path: Path) -> None:
    example = load()
    argv = [
        "--quick", "--synthetic", "80", "--distill-every", "2", "--methods", "fedmorph",
    ]  # fmt: skip
    whole = example.main([*argv, "--rounds", "3", "--output-dir", str(tmp_path / "a")])
    part = tmp_path / "b"
    example.main([*argv, "--rounds", "2", "--output-dir", str(part)])
    with pytest.raises(ValueError, match="already holds another run"):
        example.main([*argv, "--rounds", "3", "--output-dir", str(part)])
    resumed = example.main([*argv, "--rounds", "3", "--resume", "--output-dir", str(part)])
    a, b = whole["methods"]["fedmorph"], resumed["methods"]["fedmorph"]
    assert (b["bytes_down"], b["bytes_up"]) == (a["bytes_down"], a["bytes_up"])
    assert b["curve"] == a["curve"] and b["ratio_curve"] == a["ratio_curve"]
    assert b["layer_ratios"] == a["layer_ratios"] and b["distill_js"] == a["distill_js"]
    assert b["params_ratio"] == a["params_ratio"] and b["wall_s"] > 0
