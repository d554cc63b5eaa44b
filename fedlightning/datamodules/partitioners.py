"""Partitioners: pure maps from a label array to one index array per client.

Every partitioner is a frozen dataclass holding its settings; calling it with the labels and a
seed returns a list of disjoint ``int64`` index arrays, one per client. The result depends on
(labels, settings, seed) only: each call builds its own ``np.random.default_rng(seed)``.

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(10), 100)
    >>> parts = SortedShards(num_clients=10, shards_per_client=2)(labels, seed=0)
    >>> len(parts), sum(len(p) for p in parts)
    (10, 1000)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["IID", "Dirichlet", "InlierOutlier", "Partitioner", "SortedShards"]

IndexArray = NDArray[np.int64]


def _check_labels(labels: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and np.any(np.mod(arr, 1) != 0):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=False)
    if out.size and out.min() < 0:
        raise ValueError(f"labels must be >= 0, got a label {int(out.min())}")
    return out


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def _check_enough_samples(num_clients: int, num_samples: int) -> None:
    if num_clients > num_samples:
        raise ValueError(
            f"num_clients must be <= the number of samples ({num_samples}), "
            f"got num_clients={num_clients}"
        )


class Partitioner(ABC):
    """Base class: a pure function from (labels, seed) to per-client index arrays.

    Subclasses set ``num_clients`` and implement :meth:`__call__`.
    """

    num_clients: int

    @abstractmethod
    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[IndexArray]:
        """Split the samples among the clients.

        Args:
            labels: Integer class label of every sample, shape ``(N,)``.
            seed: Seed of the partition's own random generator.

        Returns:
            ``num_clients`` disjoint ``int64`` arrays of sample indices.
        """


@dataclass(frozen=True)
class IID(Partitioner):
    """Uniformly random split into ``num_clients`` parts whose sizes differ by at most one.

    Args:
        num_clients: Number of clients, >= 1.

    Raises:
        ValueError: If ``num_clients < 1`` or exceeds the number of samples.

    References:
        H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", AISTATS 2017 (the IID split).
    """

    num_clients: int

    def __post_init__(self) -> None:
        _check_positive_int("num_clients", self.num_clients)

    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[IndexArray]:
        y = _check_labels(labels)
        _check_enough_samples(self.num_clients, len(y))
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y)).astype(np.int64)
        return [np.sort(p) for p in np.array_split(perm, self.num_clients)]


@dataclass(frozen=True)
class Dirichlet(Partitioner):
    """Label-skewed split: each class is divided among clients with Dirichlet proportions.

    For every class, proportions ``q ~ Dir(alpha * 1_K)`` over the ``K`` clients are drawn and the
    (shuffled) samples of that class are cut at the cumulative proportions, as in flwr-datasets'
    ``DirichletPartitioner``. Small ``alpha`` concentrates each class on few clients; large
    ``alpha`` approaches an IID split. If some client ends up with fewer than ``min_size``
    samples the whole draw is repeated (same generator, so still a pure function of the seed), at
    most ``max_retries`` times.

    Args:
        num_clients: Number of clients, >= 1.
        alpha: Dirichlet concentration, > 0.
        min_size: Smallest number of samples every client must receive, >= 0.
        max_retries: Number of draws tried before giving up, >= 1.
        self_balancing: If true, a client that already holds more than ``N / num_clients``
            samples gets no share of the following classes (flwr-datasets' option).

    Raises:
        ValueError: On invalid settings, more clients than samples, or when no draw in
            ``max_retries`` satisfies ``min_size``.

    References:
        T.-M. H. Hsu, H. Qi, M. Brown, "Measuring the Effects of Non-Identical Data Distribution
        for Federated Visual Classification", arXiv:1909.06335, 2019; flwr-datasets
        ``partitioner/dirichlet_partitioner.py``.
    """

    num_clients: int
    alpha: float
    min_size: int = 10
    max_retries: int = 100
    self_balancing: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("num_clients", self.num_clients)
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)) or (
            self.alpha <= 0
        ):
            raise ValueError(f"alpha must be a finite number > 0, got alpha={self.alpha!r}")
        _check_positive_int("min_size", self.min_size, minimum=0)
        _check_positive_int("max_retries", self.max_retries)

    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[IndexArray]:
        y = _check_labels(labels)
        n = len(y)
        _check_enough_samples(self.num_clients, n)
        if self.min_size * self.num_clients > n:
            raise ValueError(
                f"min_size must be <= samples per client ({n} // {self.num_clients} = "
                f"{n // self.num_clients}), got min_size={self.min_size}"
            )
        rng = np.random.default_rng(seed)
        classes = np.unique(y)
        by_class = [np.flatnonzero(y == c) for c in classes]
        smallest = 0
        for _ in range(self.max_retries):
            parts: list[list[NDArray[np.int64]]] = [[] for _ in range(self.num_clients)]
            sizes = np.zeros(self.num_clients, dtype=np.int64)
            for idx in by_class:
                idx = rng.permutation(idx)
                q = rng.dirichlet(np.full(self.num_clients, float(self.alpha)))
                if self.self_balancing:
                    q = np.where(sizes < n / self.num_clients, q, 0.0)
                    total = q.sum()
                    q = q / total if total > 0 else np.full(self.num_clients, 1 / self.num_clients)
                cuts = (np.cumsum(q) * len(idx)).astype(np.int64)[:-1]
                for k, chunk in enumerate(np.split(idx, cuts)):
                    parts[k].append(chunk)
                    sizes[k] += len(chunk)
            smallest = int(sizes.min())
            if smallest >= self.min_size:
                return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        raise ValueError(
            f"Dirichlet(alpha={self.alpha}) could not give every one of {self.num_clients} clients "
            f"min_size={self.min_size} samples in max_retries={self.max_retries} draws "
            f"(last smallest client: {smallest}); lower min_size, raise alpha or max_retries"
        )


@dataclass(frozen=True)
class SortedShards(Partitioner):
    """Pathological non-IID split: sort by label, cut into shards, deal shards to clients.

    The samples are sorted by label (stable), cut into ``num_clients * shards_per_client``
    contiguous shards of (almost) equal size, and each client receives ``shards_per_client``
    shards chosen at random without replacement. With 60,000 samples, 100 clients and 2 shards
    each this is McMahan et al.'s split (200 shards of 300): most clients see two classes.

    Args:
        num_clients: Number of clients, >= 1.
        shards_per_client: Shards per client, >= 1.

    Raises:
        ValueError: On invalid settings or when there are more shards than samples.

    References:
        H. B. McMahan et al., "Communication-Efficient Learning of Deep Networks from
        Decentralized Data", AISTATS 2017, Sec. 3 (seed 003 uses the same split).
    """

    num_clients: int
    shards_per_client: int = 2

    def __post_init__(self) -> None:
        _check_positive_int("num_clients", self.num_clients)
        _check_positive_int("shards_per_client", self.shards_per_client)

    @property
    def num_shards(self) -> int:
        """Total number of shards, ``num_clients * shards_per_client``."""
        return self.num_clients * self.shards_per_client

    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[IndexArray]:
        y = _check_labels(labels)
        _check_enough_samples(self.num_clients, len(y))
        if self.num_shards > len(y):
            raise ValueError(
                f"num_clients * shards_per_client must be <= the number of samples ({len(y)}), "
                f"got {self.num_clients} * shards_per_client={self.shards_per_client} "
                f"= {self.num_shards} shards"
            )
        order = np.argsort(y, kind="stable").astype(np.int64)
        shards = np.array_split(order, self.num_shards)
        rng = np.random.default_rng(seed)
        deal = rng.permutation(self.num_shards).reshape(self.num_clients, self.shards_per_client)
        return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]


@dataclass(frozen=True)
class InlierOutlier(Partitioner):
    """Anomaly-detection split of seed 000: one inlier class per client plus a few outliers.

    Per class, a random ``1 - d`` of its samples (90% for ``d = 0.1``) form the inlier pool and
    the rest the outlier pool. Each class's inliers are cut into ``clients_per_class`` equal
    chunks; client ``c * clients_per_class + j`` gets chunk ``j`` of class ``c`` (``n_in``
    samples) plus ``floor(d * n_in / (1 - d))`` outliers drawn without replacement from what
    is left of the other classes' outlier pool, ``d = outlier_fraction``. No sample is used
    twice. With Fashion-MNIST's 60,000 training images, ``clients_per_class=9`` and ``d=0.1``
    this gives 90 clients of 600 inliers and 66 outliers. For the test protocol use
    ``clients_per_class=1`` on the test set (one test set per inlier class).

    The pool split is stratified per class so that every chunk has the same size; the notes
    of the authors' code say only "90% of the training set". The outlier demand then equals
    the pool (up to the floor), so when the random draw leaves a client only samples of its
    own class, earlier clients of other classes swap outliers with it; every draw stays
    random and no sample is used twice.

    Args:
        clients_per_class: Clients that share an inlier class (``p`` in the paper), >= 1.
        outlier_fraction: Fraction ``d`` of each client's data that are outliers, in [0, 1).
        num_classes: Number of classes; labels must lie in ``[0, num_classes)``.
        inlier_pool: Fraction of each class that goes to the inlier pool, in (0, 1]; default
            ``1 - outlier_fraction``.

    Raises:
        ValueError: On invalid settings, labels outside the classes, or too few outliers.

    References:
        M. Nardi, L. Valerio, A. Passarella, "Communication Costs Analysis of Unsupervised
        Federated Learning: an Anomaly Detection Scenario" (seed 000), Sec. 4; M. Nardi et al.,
        "Anomaly detection through unsupervised federated learning", arXiv:2209.04184, 2022.
    """

    clients_per_class: int = 9
    outlier_fraction: float = 0.1
    num_classes: int = 10
    inlier_pool: float | None = None
    num_clients: int = field(init=False)

    def __post_init__(self) -> None:
        _check_positive_int("clients_per_class", self.clients_per_class)
        _check_positive_int("num_classes", self.num_classes)
        d = self.outlier_fraction
        if not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(f"outlier_fraction must be in [0, 1), got outlier_fraction={d!r}")
        pool = self.inlier_pool
        if pool is not None and (not isinstance(pool, (int, float)) or not 0 < pool <= 1):
            raise ValueError(f"inlier_pool must be in (0, 1] or None, got inlier_pool={pool!r}")
        object.__setattr__(self, "num_clients", self.clients_per_class * self.num_classes)

    @property
    def inlier_share(self) -> float:
        """Fraction of each class in the inlier pool (``inlier_pool`` or ``1 - d``)."""
        return 1 - float(self.outlier_fraction) if self.inlier_pool is None else self.inlier_pool

    def inlier_classes(self) -> NDArray[np.int64]:
        """Inlier class of every client: ``client // clients_per_class``.

        Returns:
            Array of shape ``(num_clients,)``.
        """
        return np.arange(self.num_clients, dtype=np.int64) // self.clients_per_class

    def num_outliers(self, num_inliers: int) -> int:
        """Outliers given to a client with ``num_inliers`` inliers: ``floor(d n_in / (1 - d))``."""
        d = float(self.outlier_fraction)
        # The small epsilon keeps exact products such as 0.1 * 900 / 0.9 = 100 from flooring to 99.
        return math.floor(d * num_inliers / (1 - d) + 1e-9)

    def outlier_labels(self, labels: ArrayLike, parts: list[IndexArray]) -> list[NDArray[np.int64]]:
        """Anomaly labels of each client's samples: 0 = inlier, 1 = outlier.

        Args:
            labels: The class labels the partition was made from.
            parts: The partition returned by this partitioner.

        Returns:
            One 0/1 array per client, aligned with ``parts``.
        """
        y = np.asarray(labels)
        inlier = self.inlier_classes()
        return [(y[p] != inlier[k]).astype(np.int64) for k, p in enumerate(parts)]

    def __call__(self, labels: ArrayLike, seed: int = 0) -> list[IndexArray]:
        y = _check_labels(labels)
        _check_enough_samples(self.num_clients, len(y))
        if y.size and y.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={self.num_classes}), got a label {y.max()}"
            )
        rng = np.random.default_rng(seed)
        p = self.clients_per_class
        inlier_chunks: list[list[NDArray[np.int64]]] = []
        outlier_pool: list[NDArray[np.int64]] = []
        for c in range(self.num_classes):
            idx = rng.permutation(np.flatnonzero(y == c)).astype(np.int64)
            n_in = round(self.inlier_share * len(idx))
            if n_in < p:
                raise ValueError(
                    f"class {c} has {n_in} inliers, fewer than clients_per_class={p}; "
                    f"clients_per_class must be <= the inliers of every class"
                )
            inlier_chunks.append(np.array_split(idx[:n_in], p))
            outlier_pool.append(idx[n_in:])
        pool = np.concatenate(outlier_pool)
        pool_labels = y[pool]
        owner = np.full(len(pool), -1, dtype=np.int64)  # client holding each pool sample
        client_class = self.inlier_classes()
        for client in range(self.num_clients):
            c = int(client_class[client])
            k = self.num_outliers(len(inlier_chunks[c][client % p]))
            free = owner < 0
            candidates = np.flatnonzero(free & (pool_labels != c))
            own = np.flatnonzero(free & (pool_labels == c))
            if k <= len(candidates):
                owner[rng.choice(candidates, size=k, replace=False)] = client
                continue
            # Only samples of class c are left: the demand is as large as the pool by design
            # (d * 90% = 10% * (1 - d)). Swap: earlier clients of other classes hand over
            # samples that are not of class c and receive free class-c samples instead.
            short = k - len(candidates)
            donors = np.flatnonzero(
                (owner >= 0) & (pool_labels != c) & (client_class[np.maximum(owner, 0)] != c)
            )
            if short > min(len(own), len(donors)):
                raise ValueError(
                    f"outlier_fraction={self.outlier_fraction} needs {k} outliers for client "
                    f"{client} but only {len(candidates) + min(len(own), len(donors))} can be "
                    f"given from the outlier pool; lower outlier_fraction or inlier_pool"
                )
            owner[candidates] = client
            taken = rng.choice(donors, size=short, replace=False)
            given = rng.choice(own, size=short, replace=False)
            owner[given] = owner[taken]
            owner[taken] = client
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.num_clients + 1))
        parts: list[IndexArray] = []
        for client in range(self.num_clients):
            c = int(client_class[client])
            mine = pool[order[bounds[client] : bounds[client + 1]]]
            parts.append(np.sort(np.concatenate([inlier_chunks[c][client % p], mine])))
        return [part.astype(np.int64) for part in parts]
