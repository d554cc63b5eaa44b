"""Checkpoint files: atomic writes, weights-only loading, damage detection, every algorithm."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import random
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule

from fedlightning import FederatedTrainer, checkpoint
from fedlightning.algorithms import (
    Algorithm,
    CommunityFedAvg,
    FedAvg,
    FedDropout,
    FedFSNet,
    FedMorph,
    FedProx,
    FedPruned,
    GroupIdentification,
)
from fedlightning.algorithms.fsnet import ConstantBeta, PayloadBreakdown
from fedlightning.callbacks import CommCost, RoundTimer
from fedlightning.checkpoint import (
    CheckpointError,
    copy_checkpoint,
    load_checkpoint,
    newest_valid,
    round_checkpoints,
    save_checkpoint,
)
from fedlightning.datamodules import IID, FederatedDataModule
from fedlightning.datamodules.anomaly import AnomalyDataModule
from fedlightning.demos import BoringClassifier
from fedlightning.environment import environment
from fedlightning.messages import Message
from fedlightning.models.autoencoders import ConvAutoencoder5
from fedlightning.models.masked import MaskedResNet8
from tests.executors.conftest import image_datamodule


def _state(seed: int = 0) -> dict[str, Any]:
    """A state with every kind of value the trainer and the algorithms put in one."""
    g = torch.Generator().manual_seed(seed)
    return {
        "round": 2,
        "model": OrderedDict(w=torch.randn(3, 4, generator=g), n=torch.tensor(7)),
        "algorithm": {
            "fixed": {"stem": torch.tensor([0, 2])},
            "history": [{"a": 1, "b": 2.5}],
            "pair": (torch.ones(2, dtype=torch.float64), torch.zeros(1, dtype=torch.bfloat16), 3),
            "set": {1, 2},
            "raw": b"\x00\xff",
            "shape": torch.Size([2, 3]),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "nothing": None,
            "flag": True,
            "param": torch.nn.Parameter(torch.ones(2)),
        },
        "client_states": {1: {"local_state": {"bn.running_mean": torch.zeros(3)}}},
        "callbacks": [("CommCost", {"total": {"down": 10, "up": 4}})],
        "history": [{"round": 1, "loss": 0.5}],
        "drops": [{"round": 1, "client": 3, "reason": "NaN loss"}],
        "wall_s": 1.25,
        "seed": seed,
        "fingerprint": {"model": "BoringClassifier", "lr": 0.1},
        "wandb_run_id": None,
        "version": "0.0.0",
        "environment": environment(),  # as the trainer records it
    }


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Equal values of the same types, tensors bit for bit (dtype and shape included)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where  # NaN
    else:
        assert a == b, where


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- format


def test_round_trip_keeps_every_value_and_the_file_loads_weights_only(tmp_path: Path) -> None:
    state = _state()
    del state["environment"]
    path = save_checkpoint(tmp_path / "sub" / "round_0002.ckpt", state)
    assert path == tmp_path / "sub" / "round_0002.ckpt"
    loaded = load_checkpoint(path)
    assert loaded.pop("environment") == environment()  # recorded where the state has none
    assert_same(loaded, state)
    assert "environment" not in state  # the caller's state is not changed
    envelope = torch.load(path, map_location="cpu", weights_only=True)
    assert envelope["format"] == checkpoint.FORMAT
    assert len(envelope["sha256"]) == 64
    assert envelope["payload"].dtype == torch.uint8
    assert envelope["nbytes"] == envelope["payload"].numel()
    assert _leftovers(path.parent) == []


def test_a_state_that_records_its_own_environment_keeps_it(tmp_path: Path) -> None:
    recorded = environment() | {"torch": "1.0.0"}
    path = save_checkpoint(tmp_path / "a.ckpt", {"w": torch.ones(2), "environment": recorded})
    assert load_checkpoint(path)["environment"] == recorded


def test_loading_in_another_environment_warns_naming_the_file_and_what_differs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    same = save_checkpoint(tmp_path / "same.ckpt", {"w": torch.ones(2)})
    elsewhere = environment() | {"cpu_capability": "AVX2", "torch_threads": 64}
    moved = save_checkpoint(tmp_path / "moved.ckpt", {"w": torch.ones(2), "environment": elsewhere})
    with caplog.at_level("WARNING", logger="fedlightning.checkpoint"):
        load_checkpoint(same)
        assert caplog.text == ""
        state = load_checkpoint(moved)
    assert torch.equal(state["w"], torch.ones(2))  # loaded all the same
    assert str(moved) in caplog.text and "another environment" in caplog.text
    assert "cpu_capability: AVX2 -> " in caplog.text and "torch_threads: 64 -> " in caplog.text


def test_a_new_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    umask = os.umask(0o022)
    os.umask(umask)
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@dataclasses.dataclass(frozen=True)
class _Point:
    x: int


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (np.zeros(2), "state['algorithm']['bad']"),
        (np.float64(1.0), "state['algorithm']['bad']"),
        ([1, _Point(1)], "state['algorithm']['bad'][1]"),
        (slice(1, 2), "state['algorithm']['bad']"),
        (defaultdict(int, a=1), "state['algorithm']['bad']"),
        ({_Point(1): 1}, "state['algorithm']['bad'] key _Point(x=1)"),
    ],
)
def test_a_state_that_would_not_load_weights_only_is_refused_before_writing(
    tmp_path: Path, value: Any, where: str
) -> None:
    path = save_checkpoint(tmp_path / "round_0001.ckpt", _state())
    before = path.read_bytes()
    state = _state()
    state["algorithm"]["bad"] = value
    with pytest.raises(CheckpointError, match="cannot be saved") as info:
        save_checkpoint(path, state)
    assert where in str(info.value)
    assert type(value).__name__ in str(info.value)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_type_registered_as_a_safe_global_is_accepted(tmp_path: Path) -> None:
    state = _state()
    state["algorithm"]["point"] = _Point(3)
    with torch.serialization.safe_globals([_Point]):
        loaded = load_checkpoint(save_checkpoint(tmp_path / "a.ckpt", state))
    assert loaded["algorithm"]["point"] == _Point(3)


# ---------------------------------------------------------------------------- atomic writes


def test_a_write_failing_midway_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "round_0001.ckpt", _state(0))
    before = path.read_bytes()
    real_save = torch.save
    seen: list[bytes] = []

    def half_then_fail(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, io.BytesIO):  # the payload: serialize as usual
            real_save(obj, f, *args, **kwargs)
            return
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        seen.append(path.read_bytes())  # mid-write: the final path is untouched
        assert [n.startswith(".round_0001.ckpt.") for n in _leftovers(tmp_path)] == [True]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _state(1))
    monkeypatch.undo()
    assert seen == [before]
    assert path.read_bytes() == before
    assert_same(load_checkpoint(path), _state(0))
    assert _leftovers(tmp_path) == []


def test_a_failing_fsync_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "last.ckpt", _state(0))
    before = path.read_bytes()

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output"):
        save_checkpoint(path, _state(1))
    with pytest.raises(OSError, match="Input/output"):
        copy_checkpoint(path, tmp_path / "copy.ckpt")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not (tmp_path / "copy.ckpt").exists()
    assert _leftovers(tmp_path) == []


def test_a_new_file_appears_only_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "round_0001.ckpt"
    real_replace = os.replace
    states: list[bool] = []

    def watch(src: Any, dst: Any) -> None:
        states.append(Path(dst).exists())
        assert Path(dst) == path and load_checkpoint(src)["seed"] == 5
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", watch)
    save_checkpoint(path, _state(5))
    assert states == [False]
    assert load_checkpoint(path)["seed"] == 5


def test_copy_is_atomic_and_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = save_checkpoint(tmp_path / "round_0002.ckpt", _state(2))
    last = save_checkpoint(tmp_path / "last.ckpt", _state(1))
    old = last.read_bytes()

    def half_then_fail(source: Any, target: Any, length: int = 0) -> None:
        target.write(source.read(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.shutil, "copyfileobj", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        copy_checkpoint(src, last)
    monkeypatch.undo()
    assert last.read_bytes() == old
    assert _leftovers(tmp_path) == []
    assert copy_checkpoint(src, last) == last
    assert last.read_bytes() == src.read_bytes()
    assert_same(load_checkpoint(last), _state(2))


# ---------------------------------------------------------------------------- damage


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """round_0001 and round_0002 valid, round_0003 truncated, last.ckpt zero bytes."""
    folder = tmp_path / "checkpoints"
    for rnd in (1, 2, 3):
        save_checkpoint(folder / f"round_{rnd:04d}.ckpt", _state(rnd))
    third = folder / "round_0003.ckpt"
    third.write_bytes(third.read_bytes()[: third.stat().st_size // 2])
    (folder / "last.ckpt").write_bytes(b"")
    return folder


def _error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(p.read_bytes()[:-300]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:64]), "truncated"),
        (lambda p: p.write_bytes(b"not a checkpoint at all\n" * 40), "damaged"),
        (lambda p: p.write_bytes(random.Random(0).randbytes(4096)), "damaged"),
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: torch.save({"round": 1}, p), "not a fedlightning checkpoint"),
        (lambda p: torch.save([1, 2], p), "not a fedlightning checkpoint"),
    ],
)
def test_a_damaged_file_names_itself_and_the_newest_valid_round(
    run_dir: Path, damage: Callable[[Path], object], reason: str
) -> None:
    last = run_dir / "last.ckpt"
    save_checkpoint(last, _state(3))
    damage(last)
    error = _error(last)
    assert reason in error.reason
    assert error.newest == run_dir / "round_0002.ckpt"
    assert str(run_dir / "round_0002.ckpt") in str(error)


def test_the_newest_valid_round_skips_damaged_ones(run_dir: Path) -> None:
    assert [p.name for p in round_checkpoints(run_dir)] == [
        "round_0003.ckpt",
        "round_0002.ckpt",
        "round_0001.ckpt",
    ]
    assert newest_valid(run_dir) == run_dir / "round_0002.ckpt"
    error = _error(run_dir / "round_0003.ckpt")
    assert error.newest == run_dir / "round_0002.ckpt"
    (run_dir / "round_0002.ckpt").write_bytes(b"\x00" * 10)
    assert newest_valid(run_dir) == run_dir / "round_0001.ckpt"
    assert _error(run_dir / "last.ckpt").newest == run_dir / "round_0001.ckpt"
    # A damaged file is never proposed as its own replacement.
    assert _error(run_dir / "round_0002.ckpt").newest == run_dir / "round_0001.ckpt"


def test_when_no_round_is_valid_the_message_says_so(run_dir: Path, tmp_path: Path) -> None:
    for rnd in (1, 2):
        (run_dir / f"round_{rnd:04d}.ckpt").write_bytes(b"")
    error = _error(run_dir / "last.ckpt")
    assert error.newest is None
    assert f"no valid round_NNNN.ckpt in {run_dir}" in str(error)
    assert newest_valid(run_dir) is None
    assert newest_valid(tmp_path / "nowhere") is None


def test_rounds_are_ordered_by_number_not_by_name_or_time(tmp_path: Path) -> None:
    for rnd in (10000, 9999, 2):
        save_checkpoint(tmp_path / f"round_{rnd:04d}.ckpt", _state(rnd))
    os.utime(tmp_path / "round_0002.ckpt", (2e9, 2e9))  # the newest by time
    (tmp_path / "round_0003.ckpt.tmp").write_bytes(b"")  # not a round file
    (tmp_path / "round_x.ckpt").write_bytes(b"")
    assert [p.name for p in round_checkpoints(tmp_path)] == [
        "round_10000.ckpt",
        "round_9999.ckpt",
        "round_0002.ckpt",
    ]
    assert newest_valid(tmp_path) == tmp_path / "round_10000.ckpt"


def test_a_flipped_byte_is_detected(tmp_path: Path) -> None:
    state = _state()
    state["model"]["w"] = torch.full((64,), 0.25)  # a run of bytes easy to find in the file
    path = save_checkpoint(tmp_path / "round_0001.ckpt", state)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(torch.full((16,), 0.25).numpy().tobytes())
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))
    error = _error(path)
    assert "damaged" in error.reason


def test_a_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "round_0001.ckpt", _state())
    envelope = torch.load(path, weights_only=True)
    envelope["payload"][-10] ^= 1  # the zip still reads: only the checksum can tell
    torch.save(envelope, path)
    error = _error(path)
    assert "SHA-256 mismatch" in error.reason
    assert error.newest is None  # the only round file is this one


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    envelope = torch.load(path, weights_only=True)
    envelope["format"] = 99
    torch.save(envelope, path)
    assert "format 99" in _error(path).reason


# ---------------------------------------------------------------------------- code execution


class _Exploit:
    """Unpickling this writes ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_the_exploit_really_runs_when_unpickled_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("how", ["torch.save", "pickle", "inside a valid envelope"])
def test_a_crafted_file_is_refused_without_running_code(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "marker"
    good = save_checkpoint(tmp_path / "round_0001.ckpt", _state())
    path = tmp_path / "round_0002.ckpt"
    state = {"round": 2, "model": _Exploit(marker)}
    if how == "torch.save":
        torch.save(state, path)
    elif how == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:  # the right envelope and checksum around a malicious state
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        torch.save(
            {
                "format": checkpoint.FORMAT,
                "sha256": hashlib.sha256(payload).hexdigest(),
                "nbytes": len(payload),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
            },
            path,
        )
    error = _error(path)
    assert not marker.exists()
    assert "refused" in error.reason and "exec" in error.reason
    assert error.newest == good
    assert newest_valid(tmp_path) == good
    assert not marker.exists()


# ---------------------------------------------------------------------------- every algorithm


def _mlp(batchnorm: bool = False) -> LightningModule:
    return BoringClassifier(in_features=64, momentum=0.9, batchnorm=batchnorm)


def _subnet_model() -> MaskedResNet8:
    widths = {"stem": 6, "s0b0_mid": 6, "s0b0_out": 6, "s1b0_mid": 8, "s1b0_out": 8}
    widths |= {"s2b0_mid": 10, "s2b0_out": 10, "s3b0_mid": 12, "s3b0_out": 12}
    return MaskedResNet8(image_size=12, widths=widths, masked=True, seed=0, lr=0.05)


def _subnet_data() -> FederatedDataModule:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 12, 12, generator=g), torch.randint(0, 10, (24,), generator=g)
    xt, yt = torch.rand(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
    return FederatedDataModule((x, y), partition=IID(4), batch_size=6, test=(xt, yt))


def _brightness(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n_per_class)
    x = torch.tensor([0.2, 0.8])[y].view(-1, 1, 1, 1) + 0.05 * torch.randn(
        len(y), 1, 8, 8, generator=g
    )
    return x.clamp(0, 1), y


def _anomaly_data() -> AnomalyDataModule:
    return AnomalyDataModule(
        _brightness(60, 0),
        test=_brightness(20, 1),
        clients_per_class=2,
        outlier_fraction=0.1,
        num_classes=2,
        batch_size=32,
        seed=0,
    )


class _MeanDetector:
    """Inlier when the mean pixel is within the training range (Phase I, cheaply)."""

    def __init__(self) -> None:
        self.bounds = torch.zeros(2)

    def fit(self, x: torch.Tensor, seed: int = 0) -> _MeanDetector:
        means = x.mean(dim=(1, 2, 3))
        self.bounds = torch.quantile(means, torch.tensor([0.05, 0.95]))
        return self

    def inlier_mask(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(1, 2, 3))
        return (means >= self.bounds[0]) & (means <= self.bounds[1])

    def to_message(self) -> Message:
        return Message(extras={"bounds": self.bounds.to(torch.float32)})

    def from_message(self, message: Message) -> _MeanDetector:
        other = _MeanDetector()
        other.bounds = message.extras["bounds"]
        return other


SUBNET = {"clients_per_round": 2}
WORKLOADS: dict[
    str,
    tuple[
        Callable[[], LightningModule], Callable[[], Any], Callable[[], Algorithm], dict[str, Any]
    ],
] = {
    "fedavg": (_mlp, image_datamodule, FedAvg, {}),
    "fedprox": (_mlp, image_datamodule, lambda: FedProx(mu=0.5), {}),
    "fedavg_local_bn": (lambda: _mlp(True), image_datamodule, lambda: FedAvg(local_bn=True), {}),
    "community_fedavg": (
        _mlp,
        image_datamodule,
        lambda: CommunityFedAvg(communities=[[0, 2, 4], [1, 3, 5]]),
        {},
    ),
    "community_fedavg_phase1": (
        ConvAutoencoder5,
        _anomaly_data,
        lambda: CommunityFedAvg(phase1=GroupIdentification(_MeanDetector(), tolerance=0.1)),
        {"eval_every": None},
    ),
    "fedfsnet": (
        _mlp,
        image_datamodule,
        lambda: FedFSNet(
            num_synthetic=8,
            beta=ConstantBeta(1.0),
            hidden_widths=(16,),
            hidden_steps=3,
            hidden_batch_size=8,
        ),
        {},
    ),
    "fedmorph": (
        _subnet_model,
        _subnet_data,
        lambda: FedMorph(
            distill_every=1, distill_epochs=1, distill_samples=8, distill_batch_size=8, lam=1e-2
        ),
        SUBNET,
    ),
    "feddropout": (_subnet_model, _subnet_data, lambda: FedDropout(0.5, per_client=True), SUBNET),
    "fedpruned": (_subnet_model, _subnet_data, lambda: FedPruned(0.5), SUBNET),
}


def _trainer_state(trainer: FederatedTrainer) -> dict[str, Any]:
    """What ``FederatedTrainer.save_checkpoint`` saves, built from the trainer's parts."""
    return {
        "round": trainer.current_round,
        "model": trainer.global_model.state_dict(),
        "algorithm": trainer.algorithm.state_dict(),
        "client_states": trainer.client_states,
        "callbacks": [(type(c).__name__, c.state_dict()) for c in trainer.callbacks],
        "history": trainer.history,
        "drops": trainer.drops,
        "wall_s": 1.5,
        "seed": trainer.seed,
        "fingerprint": {"algorithm": repr(trainer.algorithm), "rounds": trainer.rounds},
        "wandb_run_id": None,
        "version": "test",
        "environment": environment(),
    }


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_algorithms_state_round_trips_weights_only(name: str, tmp_path: Path) -> None:
    model, data, algorithm, settings = WORKLOADS[name]
    settings = dict(settings)
    torch.manual_seed(0)
    trainer = FederatedTrainer(
        algorithm=algorithm(),
        rounds=2,
        clients_per_round=settings.pop("clients_per_round", 3),
        local_epochs=1,
        seed=3,
        callbacks=[CommCost(), RoundTimer(), PayloadBreakdown()],
        progress_bar=False,
        **settings,
    )
    trainer.fit(model(), data())
    assert [h["round"] for h in trainer.history] == [1, 2]
    state = _trainer_state(trainer)
    assert state["algorithm"] or name in {"fedavg", "fedprox", "fedavg_local_bn"}
    assert bool(state["client_states"]) == (name == "fedavg_local_bn")
    loaded = load_checkpoint(save_checkpoint(tmp_path / "round_0002.ckpt", state))
    assert_same(loaded, state)
    # The algorithm and the callbacks take back what they saved.
    trainer.algorithm.load_state_dict(loaded["algorithm"])
    assert_same(trainer.algorithm.state_dict(), state["algorithm"])
    for callback, (_, saved) in zip(trainer.callbacks, loaded["callbacks"], strict=True):
        callback.load_state_dict(saved)
    # The trainer's own checkpoint goes through the same format.
    written = load_checkpoint(trainer.save_checkpoint(tmp_path / "round_0003.ckpt"))
    assert_same(written["model"], state["model"])
    assert_same(written["algorithm"], state["algorithm"])
    assert_same(written["client_states"], state["client_states"])
