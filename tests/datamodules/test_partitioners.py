"""Properties of the partitioners: disjoint, sized as promised, pure functions of the seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlightning.datamodules import IID, Dirichlet, InlierOutlier, Partitioner, SortedShards

FAST = settings(max_examples=40, deadline=None)


@st.composite
def labels_and_clients(draw: st.DrawFn, min_per_client: int = 1) -> tuple[np.ndarray, int]:
    num_classes = draw(st.integers(1, 8))
    num_clients = draw(st.integers(1, 12))
    n = draw(st.integers(num_clients * min_per_client, 400))
    seed = draw(st.integers(0, 2**16))
    labels = np.random.default_rng(seed).integers(0, num_classes, size=n)
    return labels, num_clients


def assert_disjoint(parts: list[np.ndarray], n: int) -> np.ndarray:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates within a client
    used = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    assert len(np.unique(used)) == len(used), "a sample went to two clients"
    assert used.size == 0 or (used.min() >= 0 and used.max() < n)
    return used


@FAST
@given(data=labels_and_clients(), seed=st.integers(0, 2**31))
def test_iid_uses_every_sample_once_with_balanced_sizes(
    data: tuple[np.ndarray, int], seed: int
) -> None:
    labels, k = data
    parts = IID(k)(labels, seed)
    assert len(parts) == k
    used = assert_disjoint(parts, len(labels))
    assert len(used) == len(labels)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@FAST
@given(data=labels_and_clients(min_per_client=2), spc=st.integers(1, 3), seed=st.integers(0, 99))
def test_sorted_shards_uses_every_sample_once(
    data: tuple[np.ndarray, int], spc: int, seed: int
) -> None:
    labels, k = data
    if k * spc > len(labels):
        with pytest.raises(ValueError, match="shards_per_client"):
            SortedShards(k, spc)(labels, seed)
        return
    parts = SortedShards(k, spc)(labels, seed)
    used = assert_disjoint(parts, len(labels))
    assert len(used) == len(labels)
    shard = len(labels) // (k * spc)
    for p in parts:  # shards_per_client shards of floor or ceil(N / shards) samples
        assert spc * shard <= len(p) <= spc * (shard + 1)


@FAST
@given(
    num_classes=st.integers(2, 10),
    per_class_shards=st.integers(1, 4),
    spc=st.integers(1, 3),
    shard=st.integers(1, 8),
    seed=st.integers(0, 99),
)
def test_sorted_shards_gives_at_most_shards_per_client_classes(
    num_classes: int, per_class_shards: int, spc: int, shard: int, seed: int
) -> None:
    # Class sizes a multiple of the shard size: every shard holds exactly one class.
    labels = np.random.default_rng(seed).permutation(
        np.repeat(np.arange(num_classes), per_class_shards * shard)
    )
    num_shards = num_classes * per_class_shards
    if num_shards % spc:
        return
    parts = SortedShards(num_shards // spc, spc)(labels, seed)
    for p in parts:
        assert len(np.unique(labels[p])) <= spc
        assert len(p) == spc * shard


def test_sorted_shards_mcmahan_split() -> None:
    labels = np.repeat(np.arange(10), 6000)
    parts = SortedShards(100, 2)(labels, seed=0)
    assert all(len(p) == 600 for p in parts)
    classes = [len(np.unique(labels[p])) for p in parts]
    assert max(classes) <= 2 and np.mean(classes) > 1.5


@FAST
@given(
    data=labels_and_clients(min_per_client=3),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**16),
)
def test_dirichlet_disjoint_complete_and_min_size(
    data: tuple[np.ndarray, int], alpha: float, seed: int
) -> None:
    labels, k = data
    part = Dirichlet(k, alpha, min_size=1, max_retries=200)
    try:
        parts = part(labels, seed)
    except ValueError as err:  # allowed only as the documented retry failure
        assert "max_retries" in str(err)
        return
    used = assert_disjoint(parts, len(labels))
    assert len(used) == len(labels)
    assert min(len(p) for p in parts) >= 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: IID(7),
        lambda: Dirichlet(7, 0.5, min_size=5),
        lambda: SortedShards(7, 2),
        lambda: InlierOutlier(clients_per_class=2, outlier_fraction=0.1, num_classes=5),
    ],
)
def test_same_seed_same_partition_different_seed_differs(make: object) -> None:
    labels = np.repeat(np.arange(5), 200)
    part: Partitioner = make()  # type: ignore[operator]
    a, b, c = part(labels, 3), make()(labels, 3), part(labels, 4)  # type: ignore[operator]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert len(a) == part.num_clients


def _mean_max_class_share(alpha: float, seeds: range) -> float:
    labels = np.repeat(np.arange(10), 500)
    shares = []
    for s in seeds:
        for p in Dirichlet(20, alpha, min_size=0)(labels, s):
            if len(p):
                shares.append(np.bincount(labels[p], minlength=10).max() / len(p))
    return float(np.mean(shares))


def test_dirichlet_small_alpha_concentrates_large_alpha_is_near_uniform() -> None:
    small = _mean_max_class_share(0.01, range(5))
    medium = _mean_max_class_share(1.0, range(5))
    large = _mean_max_class_share(1000.0, range(5))
    assert small > 0.8  # a client holds mostly one class (measured 0.89)
    assert large < 0.15  # close to the uniform 0.1 (measured 0.105)
    assert small > medium > large


def test_dirichlet_class_proportions_follow_alpha() -> None:
    # Each class is split with q ~ Dir(alpha * 1_K): E[q_k] = 1/K, Var = (K-1)/(K^2 (K alpha + 1)).
    k, alpha = 10, 0.5
    labels = np.repeat(np.arange(20), 2000)
    fractions = []
    for s in range(5):
        parts = Dirichlet(k, alpha, min_size=0)(labels, s)
        counts = np.stack([np.bincount(labels[p], minlength=20) for p in parts])  # (K, C)
        fractions.append(counts / 2000)
    q = np.concatenate(fractions, axis=1)  # 100 draws of the K client shares of a class
    assert q.mean() == pytest.approx(1 / k, abs=1e-3)
    expected_var = (k - 1) / (k**2 * (k * alpha + 1))
    assert q.var() == pytest.approx(expected_var, rel=0.25)


def test_dirichlet_min_size_is_enforced_or_reported() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = Dirichlet(10, 0.3, min_size=20)(labels, seed=1)
    assert min(len(p) for p in parts) >= 20
    with pytest.raises(ValueError, match="max_retries=2"):
        Dirichlet(10, 0.01, min_size=90, max_retries=2)(labels, seed=0)


def test_inlier_outlier_seed000_split() -> None:
    labels = np.repeat(np.arange(10), 6000)
    part = InlierOutlier(clients_per_class=9, outlier_fraction=0.1)
    parts = part(labels, seed=0)
    assert part.num_clients == len(parts) == 90
    assert_disjoint(parts, len(labels))
    inlier = part.inlier_classes()
    assert inlier.tolist() == [c for c in range(10) for _ in range(9)]
    for k, p in enumerate(parts):
        counts = np.bincount(labels[p], minlength=10)
        assert counts[inlier[k]] == 600  # 5400 inliers of the class / 9 chunks
        assert counts.sum() - counts[inlier[k]] == 66  # floor(0.1 * 600 / 0.9)
        assert np.argmax(counts) == inlier[k]  # the inlier class is the mode
    flags = part.outlier_labels(labels, parts)
    assert [int(f.sum()) for f in flags] == [66] * 90
    # the outliers come from the 10% pool: at most 600 samples of each class are outliers
    outliers = np.concatenate([p[f == 1] for p, f in zip(parts, flags, strict=True)])
    assert np.bincount(labels[outliers], minlength=10).max() <= 600


def test_inlier_outlier_test_protocol_is_exact_when_the_pool_is_tight() -> None:
    labels = np.repeat(np.arange(10), 1000)  # demand (10 x 100) equals the outlier pool
    part = InlierOutlier(clients_per_class=1, outlier_fraction=0.1)
    for seed in range(5):
        parts = part(labels, seed)
        used = assert_disjoint(parts, len(labels))
        assert len(used) == 10_000
        for k, p in enumerate(parts):
            counts = np.bincount(labels[p], minlength=10)
            assert counts[k] == 900 and len(p) == 1000


@FAST
@given(
    p=st.integers(1, 4),
    d=st.sampled_from([0.0, 0.05, 0.1, 0.2]),
    per_class=st.integers(20, 80),
    seed=st.integers(0, 999),
)
def test_inlier_outlier_fractions(p: int, d: float, per_class: int, seed: int) -> None:
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(4), per_class))
    part = InlierOutlier(clients_per_class=p, outlier_fraction=d, num_classes=4)
    parts = part(labels, seed)
    assert_disjoint(parts, len(labels))
    n_in = round((1 - d) * per_class)  # the inlier pool is 1 - d of each class
    for k, (idx, flag) in enumerate(zip(parts, part.outlier_labels(labels, parts), strict=True)):
        inliers = len(idx) - int(flag.sum())
        assert n_in // p <= inliers <= -(-n_in // p)
        assert int(flag.sum()) == int(np.floor(d * inliers / (1 - d) + 1e-9))
        assert np.all(labels[idx][flag == 0] == part.inlier_classes()[k])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Dirichlet(10, 0), "alpha must be .*> 0, got alpha=0"),
        (lambda: Dirichlet(10, -1.0), "alpha"),
        (lambda: Dirichlet(10, float("nan")), "alpha"),
        (lambda: IID(0), "num_clients must be an integer >= 1, got num_clients=0"),
        (lambda: SortedShards(10, 0), "shards_per_client"),
        (lambda: InlierOutlier(outlier_fraction=1.0), r"outlier_fraction must be in \[0, 1\)"),
        (lambda: InlierOutlier(outlier_fraction=1.5), "outlier_fraction=1.5"),
        (lambda: InlierOutlier(outlier_fraction=-0.1), "outlier_fraction"),
        (lambda: InlierOutlier(clients_per_class=0), "clients_per_class"),
    ],
)
def test_bad_settings(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_bad_labels_and_sizes() -> None:
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="num_clients must be <= the number of samples"):
        IID(11)(labels, 0)
    with pytest.raises(ValueError, match="got 6 \\* shards_per_client=2 = 12 shards"):
        SortedShards(6, 2)(labels, 0)
    with pytest.raises(ValueError, match="num_clients must be <="):
        Dirichlet(11, 1.0, min_size=0)(labels, 0)
    with pytest.raises(ValueError, match="min_size"):
        Dirichlet(5, 1.0, min_size=3)(labels, 0)
    with pytest.raises(ValueError, match="1-D"):
        IID(2)(labels.reshape(2, 5), 0)
    with pytest.raises(ValueError, match=">= 0"):
        IID(2)(labels - 1, 0)
    with pytest.raises(ValueError, match="num_classes=2"):
        InlierOutlier(clients_per_class=1, num_classes=2)(np.arange(30) % 3, 0)
    with pytest.raises(ValueError, match="clients_per_class=9"):
        InlierOutlier(clients_per_class=9, num_classes=2)(np.arange(18) % 2, 0)
