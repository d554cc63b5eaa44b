import numpy as np
import pytest
import torch
from sklearn.svm import OneClassSVM

from fedlightning.messages import Message
from fedlightning.models.ocsvm import OneClassSVMDetector


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # 8-bit images scaled to [0, 1], as Fashion-MNIST.
    return torch.randint(0, 256, (n, 1, 6, 6), generator=g).float() / 255


def test_decision_function_from_tensors_equals_scikit_learn():
    x, y = _images(200, 0), _images(40, 1)
    det = OneClassSVMDetector(nu=0.1).fit(x)
    ref = OneClassSVM(kernel="rbf", nu=0.1, gamma="scale").fit(x.reshape(200, -1).double().numpy())
    expected = ref.decision_function(y.reshape(40, -1).double().numpy())
    np.testing.assert_allclose(det.decision_function(y).numpy(), expected, atol=1e-5)
    assert det.num_support_vectors == len(ref.support_vectors_)
    # nu bounds the share of training outliers from above and of support vectors from below.
    assert det.num_support_vectors >= 0.1 * 200
    inside = det.inlier_mask(y).numpy()
    sure = np.abs(expected) > 1e-5  # away from the boundary, predictions must agree
    np.testing.assert_array_equal(inside[sure], (expected >= 0)[sure])


@pytest.mark.parametrize(("bits", "sv_bytes"), [(8, 1), (32, 4)])
def test_wire_size_is_support_vectors_plus_coefficients(bits, sv_bytes):
    det = OneClassSVMDetector(support_vector_bits=bits).fit(_images(120, 2))
    k = det.num_support_vectors
    # support vectors (k x 36 pixels) + dual coefficients (float32) + offset and width.
    assert det.nbytes == k * 36 * sv_bytes + 4 * k + 8
    assert det.to_message().nbytes == det.nbytes


def test_message_round_trip_gives_the_same_decisions():
    x, y = _images(150, 3), _images(30, 4)
    det = OneClassSVMDetector().fit(x)
    peer = det.from_message(det.to_message())
    torch.testing.assert_close(peer.decision_function(y), det.decision_function(y))
    torch.testing.assert_close(peer.anomaly_score(y), -det.decision_function(y))


def test_bad_settings_and_unfitted_use():
    with pytest.raises(ValueError, match="nu must be in"):
        OneClassSVMDetector(nu=0.0)
    with pytest.raises(ValueError, match="gamma"):
        OneClassSVMDetector(gamma=-1.0)
    with pytest.raises(ValueError, match="support_vector_bits"):
        OneClassSVMDetector(support_vector_bits=16)
    with pytest.raises(RuntimeError, match="not fitted"):
        OneClassSVMDetector().to_message()
    with pytest.raises(ValueError, match="lacks"):
        OneClassSVMDetector().from_message(Message(extras={"dual_coef": torch.ones(3)}))
