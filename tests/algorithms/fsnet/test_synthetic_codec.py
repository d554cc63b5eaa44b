"""FedFSNet's ``synthetic_codec``: D' encoded on the downlink, decoded by the clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedlightning import FederatedTrainer
from fedlightning.algorithms.base import ClientContext
from fedlightning.algorithms.fsnet import ConstantBeta, FedFSNet, PayloadBreakdown
from fedlightning.codecs import Codec, Float16, Identity, TopK, UInt8
from fedlightning.datamodules import FederatedDataModule, SortedShards
from fedlightning.messages import Message
from fedlightning.models import MNISTClassifier

NUM_SYNTHETIC = 8
PIXELS = 28 * 28
ROUNDS = 3
CLIENTS_PER_ROUND = 2
# D' exists from the end of round 1: it goes down in rounds 2 and 3, to each client.
D_PRIME_MESSAGES = (ROUNDS - 1) * CLIENTS_PER_ROUND


def _data(n: int = 160, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4-class images: the bright quadrant is the class (as in test_fsnet_algorithm.py)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = 0.2 * torch.rand(n, 1, 28, 28, generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] += 0.8
    return x, y


def _datamodule() -> FederatedDataModule:
    return FederatedDataModule(
        _data(), partition=SortedShards(4, 2), batch_size=20, seed=0, test=_data(40, seed=1)
    )


def _fsnet(**kwargs: Any) -> FedFSNet:
    settings: dict[str, Any] = {
        "num_synthetic": NUM_SYNTHETIC,
        "beta": ConstantBeta(1.0),
        "hidden_widths": (16,),
        "hidden_steps": 3,
        "hidden_batch_size": 8,
    }
    settings.update(kwargs)
    return FedFSNet(**settings)


def _fit(
    algorithm: FedFSNet, rounds: int = ROUNDS, **kwargs: Any
) -> tuple[FederatedTrainer, PayloadBreakdown]:
    payload = PayloadBreakdown()
    trainer = FederatedTrainer(
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=CLIENTS_PER_ROUND,
        local_epochs=1,
        seed=3,
        progress_bar=False,
        callbacks=[payload],
        **kwargs,
    )
    torch.manual_seed(0)
    trainer.fit(MNISTClassifier(lr=0.05, num_classes=4), _datamodule())
    return trainer, payload


def _assert_same_model(a: FederatedTrainer, b: FederatedTrainer) -> None:
    for key, value in a.global_model.state_dict().items():
        torch.testing.assert_close(b.global_model.state_dict()[key], value, rtol=0, atol=0)


def test_no_codec_sends_exactly_what_fedfsnet_sent_before() -> None:
    before, before_bytes = _fit(_fsnet())
    none, none_bytes = _fit(_fsnet(synthetic_codec=None))
    identity, identity_bytes = _fit(_fsnet(synthetic_codec=Identity()))
    assert before_bytes.total == none_bytes.total == identity_bytes.total
    assert before_bytes.total["down_extras"] == D_PRIME_MESSAGES * NUM_SYNTHETIC * PIXELS * 4
    _assert_same_model(before, none)
    _assert_same_model(before, identity)
    for trainer in (before, none, identity):
        algorithm = trainer.algorithm
        assert isinstance(algorithm, FedFSNet) and algorithm.synthetic is not None
        message = algorithm.server_message(ROUNDS + 1, 0)
        assert set(message.extras) == {"synthetic"}
        assert torch.equal(message.extras["synthetic"], algorithm.synthetic)
        assert message.extras["synthetic"].data_ptr() == algorithm.synthetic.data_ptr()
    assert before.algorithm.settings["synthetic_codec"] is None


@pytest.mark.parametrize(
    ("codec", "parts", "image_bytes"),
    [
        (Float16(), {"data"}, NUM_SYNTHETIC * PIXELS * 2),
        (UInt8(), {"q", "lo", "scale"}, NUM_SYNTHETIC * (PIXELS + 8)),
        (UInt8(per_row=False), {"q", "lo", "scale"}, NUM_SYNTHETIC * PIXELS + 8),
    ],
)
def test_codec_cuts_the_synthetic_downlink_bytes_exactly(
    codec: Codec, parts: set[str], image_bytes: int
) -> None:
    _, plain_bytes = _fit(_fsnet())
    coded, coded_bytes = _fit(_fsnet(synthetic_codec=codec))
    float32 = NUM_SYNTHETIC * PIXELS * 4
    assert plain_bytes.total["down_extras"] == D_PRIME_MESSAGES * float32
    assert coded_bytes.total["down_extras"] == D_PRIME_MESSAGES * image_bytes
    # Only D' changes: the weights, beta and the clients' statistics cost what they did.
    for key in ("down_tensors", "down_scalars", "up_tensors", "up_extras", "up_scalars"):
        assert coded_bytes.total[key] == plain_bytes.total[key], key
    ratio = float32 / image_bytes
    assert ratio == 2.0 if isinstance(codec, Float16) else 3.9 < ratio <= 4.0
    algorithm = coded.algorithm
    assert isinstance(algorithm, FedFSNet) and algorithm.synthetic is not None
    message = algorithm.server_message(ROUNDS + 1, 0)
    assert set(message.extras) == {f"synthetic/{part}" for part in parts}
    assert message.extras_nbytes == image_bytes
    assert coded.results["config"]["algorithm"]["synthetic_codec"] == repr(codec)


def test_client_regularizer_sees_the_servers_synthetic_samples_within_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: dict[int, torch.Tensor] = {}  # round -> the server's D' made at its end
    seen: list[tuple[int, torch.Tensor]] = []  # (round, D' the client's regularizer used)
    decoded: list[Message] = []  # the message of each decode
    losses: list[int] = []  # rounds of each training_loss call with D'
    on_round_end = FedFSNet.on_round_end
    received_synthetic = FedFSNet.received_synthetic
    training_loss = FedFSNet.training_loss
    client_synthetic = FedFSNet._client_synthetic

    def record_round_end(self: FedFSNet, round: int) -> None:
        on_round_end(self, round)
        assert self.synthetic is not None
        sent[round] = self.synthetic.detach().clone()

    def record_decode(self: FedFSNet, message: Message, device: Any = None) -> Any:
        out = received_synthetic(self, message, device)
        decoded.append(message)
        return out

    def record_loss(self: FedFSNet, ctx: ClientContext, *args: Any) -> Any:
        if "beta" in ctx.message.scalars:
            losses.append(ctx.round)
        return training_loss(self, ctx, *args)

    def record_synthetic(self: FedFSNet, ctx: ClientContext, module: Any) -> Any:
        out = client_synthetic(self, ctx, module)
        assert out is not None
        seen.append((ctx.round, out.detach().clone()))
        return out

    monkeypatch.setattr(FedFSNet, "on_round_end", record_round_end)
    monkeypatch.setattr(FedFSNet, "received_synthetic", record_decode)
    monkeypatch.setattr(FedFSNet, "training_loss", record_loss)
    monkeypatch.setattr(FedFSNet, "_client_synthetic", record_synthetic)
    codec = UInt8()
    _fit(_fsnet(synthetic_codec=codec))

    assert sorted(sent) == [1, 2, 3]
    assert {r for r, _ in seen} == {2, 3}
    # Decoded once per client run, while the loss runs at every batch (2 per client here).
    assert len(decoded) == D_PRIME_MESSAGES < len(losses) == len(seen)
    assert len({id(message) for message in decoded}) == D_PRIME_MESSAGES
    for round, images in seen:
        server = sent[round - 1]
        assert images.dtype == torch.float32
        assert images.shape == server.shape == (NUM_SYNTHETIC, 1, 28, 28)
        step = codec.encode(server)["scale"].reshape(-1, 1, 1, 1)
        assert bool(((images - server).abs() <= step / 2 + 1e-6).all())
        assert not torch.equal(images, server)  # lossy: the client got the codes, not D'


def test_received_synthetic_decodes_a_server_message() -> None:
    trainer, _ = _fit(_fsnet(synthetic_codec=Float16()))
    algorithm = trainer.algorithm
    assert isinstance(algorithm, FedFSNet) and algorithm.synthetic is not None
    half = algorithm.client_half()
    assert isinstance(half, FedFSNet)
    message = algorithm.server_message(ROUNDS + 1, 0)
    images = half.received_synthetic(message)
    assert images is not None and images.dtype == torch.float32
    torch.testing.assert_close(images, algorithm.synthetic.half().float(), rtol=0, atol=0)
    # Encoded once per D', not once per client.
    again = algorithm.server_message(ROUNDS + 1, 1)
    assert again.extras["synthetic/data"].data_ptr() == message.extras["synthetic/data"].data_ptr()
    assert half.received_synthetic(Message()) is None


def test_checkpoint_resume_with_a_codec_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    full, full_bytes = _fit(_fsnet(synthetic_codec=UInt8()))
    _fit(_fsnet(synthetic_codec=UInt8()), 2, output_dir=tmp_path, checkpoint_every=1)
    resumed, resumed_bytes = _fit(
        _fsnet(synthetic_codec=UInt8()), resume=tmp_path / "checkpoints" / "round_0002.ckpt"
    )
    _assert_same_model(full, resumed)
    # Round 3 only: one round of D' to each client, as in the uninterrupted run.
    assert resumed_bytes.round_bytes == full_bytes.round_bytes


def test_encoded_synthetic_needs_the_input_shape() -> None:
    message = Message(
        extras={f"synthetic/{k}": v for k, v in UInt8().encode(torch.rand(8, 4)).items()}
    )
    with pytest.raises(RuntimeError, match="input_shape"):
        _fsnet(synthetic_codec=UInt8()).received_synthetic(message)


@pytest.mark.parametrize("codec", ["uint8", UInt8, torch.float16, 8])
def test_a_synthetic_codec_that_is_not_a_codec_is_rejected_before_round_1(codec: object) -> None:
    with pytest.raises(ValueError, match=r"synthetic_codec must be a fedlightning\.codecs\.Codec"):
        _fsnet(synthetic_codec=codec)


def test_any_codec_is_accepted() -> None:
    assert isinstance(_fsnet(synthetic_codec=TopK(0.5)).synthetic_codec, TopK)
    assert isinstance(_fsnet().synthetic_codec, Identity)
    assert "synthetic_codec=UInt8(per_row=True)" in repr(_fsnet(synthetic_codec=UInt8()))
