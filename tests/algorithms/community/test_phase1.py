import numpy as np
import pytest
import torch

from fedlightning.algorithms.community import (
    AutoencoderDetector,
    Detector,
    GroupIdentification,
    inlier_ratio_matrix,
    sampling_tolerance,
)
from fedlightning.models.autoencoders import ConvAutoencoder5


def _client_data(dm):
    return [dm.client_data(c)[0] for c in dm.client_ids]


def test_ratio_matrix_equals_the_naive_double_loop(two_class_data, brightness_detector):
    data = _client_data(two_class_data)
    detectors = [brightness_detector().fit(x) for x in data]
    naive = np.array([[float(d.inlier_mask(x).float().mean()) for x in data] for d in detectors])
    np.testing.assert_allclose(inlier_ratio_matrix(detectors, data), naive)
    with pytest.raises(ValueError, match="has 0 samples"):
        inlier_ratio_matrix(detectors, [*data[:-1], data[0][:0]])


def test_phase1_finds_the_true_groups_and_every_exchange_is_a_message(
    two_class_data, brightness_detector
):
    sent = []
    phase1 = GroupIdentification(brightness_detector(), tolerance=0.1)
    assert isinstance(phase1.detector, Detector)
    result = phase1.run(
        _client_data(two_class_data), dispatch=lambda c, d, m: sent.append((c, d, m.nbytes))
    )
    n = 6
    assert result.communities == [[0, 1, 2], [3, 4, 5]]
    assert result.candidates == [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3
    # models: 8 bytes (two float32 bounds) to each of n - 1 peers; bits: one byte per pair;
    # candidate lists (3 int16 ids) from the n - 1 non-leaders; communities (3 ids) back.
    assert result.bytes == {
        "models": n * (n - 1) * 8,
        "bits": n * (n - 1),
        "candidates": (n - 1) * 3 * 2,
        "communities": (n - 1) * 3 * 2,
        "total": n * (n - 1) * 9 + 60,
    }
    assert len(sent) == 2 * n * (n - 1) + 2 * (n - 1)
    assert sum(b for _, _, b in sent) == result.bytes["total"]
    assert [d for _, d, _ in sent].count("down") == n - 1  # communities from the leader
    assert result.mean_candidates == 3.0
    assert result.modularity == pytest.approx(0.5)


def test_phase1_with_tolerance_z_gives_each_client_its_sampling_tolerance(
    two_class_data, brightness_detector
):
    data = _client_data(two_class_data)
    result = GroupIdentification(brightness_detector(), tolerance_z=2.0).run(data)
    expected = sampling_tolerance(np.diag(result.ratios), [len(x) for x in data], 2.0)
    np.testing.assert_allclose(result.tolerances, expected)
    assert result.communities == [[0, 1, 2], [3, 4, 5]]
    # The fixed tolerance is ignored when tolerance_z is given, and recorded when it is not.
    assert GroupIdentification(brightness_detector(), tolerance=0.1).run(data).tolerances == [
        0.1
    ] * len(data)
    with pytest.raises(ValueError, match="tolerance_z must be a number > 0, got tolerance_z=-1"):
        GroupIdentification(tolerance_z=-1)


def test_phase1_result_survives_a_checkpoint(two_class_data, brightness_detector, tmp_path):
    # A resumed run reports Phase I from its checkpoint: the result must come back whole from
    # a weights_only file, its graph rebuilt from the candidate lists.
    import networkx as nx

    from fedlightning.algorithms.community import Phase1Result
    from fedlightning.checkpoint import load_checkpoint, save_checkpoint

    result = GroupIdentification(brightness_detector(), tolerance=0.1).run(
        _client_data(two_class_data), seed=2
    )
    path = save_checkpoint(tmp_path / "p1.ckpt", {"phase1": result.state_dict()})
    back = Phase1Result.from_state_dict(load_checkpoint(path)["phase1"])
    names = ("communities", "candidates", "modularity", "leader", "model_bytes", "bytes")
    for name in (*names, "tolerances"):
        assert getattr(back, name) == getattr(result, name), name
    assert back.seconds == result.seconds and back.mean_candidates == result.mean_candidates
    np.testing.assert_array_equal(back.ratios, result.ratios)
    assert back.ratios.dtype == result.ratios.dtype
    assert nx.utils.graphs_equal(back.graph, result.graph)


def test_autoencoder_detector_sends_weights_and_its_threshold(two_class_data):
    detector = AutoencoderDetector(ConvAutoencoder5(), epochs=1, outlier_fraction=0.1)
    result = GroupIdentification(detector, method="leiden").run(
        _client_data(two_class_data), seed=3
    )
    assert result.model_bytes == [4 * 3_217 + 4] * 6
    assert result.bytes["models"] == 6 * 5 * (4 * 3_217 + 4)
    # A detector flags about d of its own training data.
    own = np.diag(result.ratios)
    assert np.all(np.abs(own - 0.9) < 0.03)
    again = GroupIdentification(detector, method="leiden").run(_client_data(two_class_data), seed=3)
    np.testing.assert_array_equal(again.ratios, result.ratios)  # seeded


def test_autoencoder_detector_round_trip_and_errors():
    x = torch.rand(40, 1, 8, 8)
    det = AutoencoderDetector(ConvAutoencoder5(), epochs=1).fit(x, seed=0)
    peer = det.from_message(det.to_message())
    assert peer.threshold == det.threshold
    torch.testing.assert_close(peer.anomaly_score(x), det.anomaly_score(x))
    assert float(det.inlier_mask(x).float().mean()) == pytest.approx(0.9, abs=0.03)
    with pytest.raises(ValueError, match="epochs"):
        AutoencoderDetector(epochs=0)
    with pytest.raises(ValueError, match="outlier_fraction"):
        AutoencoderDetector(outlier_fraction=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        GroupIdentification(tolerance=1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        GroupIdentification(method="kmeans")


def test_ocsvm_is_a_phase1_detector_whose_bytes_are_its_support_vectors(two_class_data):
    from fedlightning.models.ocsvm import OneClassSVMDetector

    assert isinstance(OneClassSVMDetector(), Detector)
    result = GroupIdentification(OneClassSVMDetector(nu=0.1), tolerance=0.2).run(
        _client_data(two_class_data)
    )
    sizes = result.model_bytes
    # 8-bit support vectors (64 pixels) + float32 coefficient each + offset and width.
    assert all((b - 8) % (64 + 4) == 0 and b > 8 for b in sizes)
    assert result.bytes["models"] == 5 * sum(sizes)
    assert sorted(c for g in result.communities for c in g) == list(range(6))
