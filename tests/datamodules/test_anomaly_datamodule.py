import pytest
import torch

from fedlightning.datamodules.anomaly import AnomalyDataModule


def _data(n_per_class: int, classes: int = 3):
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 1, 4, 4)
    return x, y


def test_clients_have_one_inlier_class_and_a_share_d_of_outliers():
    dm = AnomalyDataModule(
        _data(100), test=_data(50), clients_per_class=2, outlier_fraction=0.1, num_classes=3
    )
    dm.setup()
    assert dm.num_clients == 6
    assert dm.inlier_classes.tolist() == [0, 0, 1, 1, 2, 2]
    x, labels = dm.client_anomaly_data(3)
    assert len(x) == 45 + 5  # 90 inliers split in 2, floor(0.1 * 45 / 0.9) outliers
    assert int(labels.sum()) == 5
    assert (dm.client_data(3)[1][labels == 0] == 1).all()


def test_every_client_is_tested_on_its_inlier_class_test_set():
    dm = AnomalyDataModule(
        _data(100), test=_data(50), clients_per_class=2, outlier_fraction=0.1, num_classes=3
    )
    x, labels = dm.class_test_data(2)
    assert len(x) == 45 + 5 and int(labels.sum()) == 5
    xc, lc = dm.client_test_data(4)
    torch.testing.assert_close(xc, x)
    torch.testing.assert_close(lc, labels)
    with pytest.raises(ValueError, match="inlier_class must be in"):
        dm.class_test_data(3)


def test_bad_settings():
    with pytest.raises(ValueError, match="outlier_fraction"):
        AnomalyDataModule(_data(10), outlier_fraction=1.0, num_classes=3)
    with pytest.raises(ValueError, match="clients_per_class"):
        AnomalyDataModule(_data(10), clients_per_class=0, num_classes=3)
