import pytest
import torch

from fedlightning.metrics.anomaly import adjusted_rand, auc_roc, auc_table, community_table


def test_auc_roc_of_perfect_reversed_and_tied_scores():
    labels = torch.tensor([0, 0, 1, 1])
    assert auc_roc(torch.tensor([0.1, 0.2, 0.8, 0.9]), labels) == pytest.approx(1.0)
    assert auc_roc(torch.tensor([0.9, 0.8, 0.2, 0.1]), labels) == pytest.approx(0.0)
    # one of the four (inlier, outlier) pairs is ordered wrongly
    assert auc_roc(torch.tensor([0.1, 0.85, 0.8, 0.9]), labels) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both inliers"):
        auc_roc(torch.rand(3), torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        auc_roc(torch.rand(3), torch.ones(2))


def test_auc_table_per_class_mean_and_std():
    table = auc_table([0.6, 0.8, 0.5, 0.5], [0, 0, 1, 1], num_classes=3)
    assert table["per_class"] == pytest.approx({"0": 0.7, "1": 0.5})
    assert table["per_class_std"] == pytest.approx({"0": 0.1, "1": 0.0})
    assert table["mean"] == pytest.approx(0.6)
    assert table["std"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="same length"):
        auc_table([0.5], [0, 1])


def test_community_table_and_adjusted_rand():
    classes = [0, 0, 1, 1, 2, 2]
    assert adjusted_rand([[0, 1], [2, 3], [4, 5]], classes) == pytest.approx(1.0)
    assert adjusted_rand([[0, 1, 2, 3], [4, 5]], classes) < 1.0
    table = community_table([[0, 1, 2], [3, 4, 5]], classes)
    assert table[0] == {"community": 0, "size": 3, "classes": {"0": 2, "1": 1}}
    with pytest.raises(ValueError, match="cover every client"):
        adjusted_rand([[0, 1]], classes)
