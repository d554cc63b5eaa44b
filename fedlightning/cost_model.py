"""Closed-form communication cost of federated anomaly detection with client grouping.

Pure functions for the cost model of seed 000, all returning **bytes**:

* :func:`phase1_cost` -- eq. (1): every client exchanges its model with every other client,
  then the pairwise association bits, then the candidate groups go to one client and the
  community assignment comes back.
* :func:`phase2_cost` -- eq. (2): FedAvg inside each group with an external aggregator.
* :func:`phase2_cost_internal_aggregator` -- eq. (3): the same with a group member as
  aggregator (it does not upload its own update).
* :func:`centralized_cost` -- Sec. 3.3: every client uploads its raw data.

Table 4 of the paper is reproduced by these functions with **decimal megabytes,
1 MB = 10^6 bytes** (:data:`MB`); with 2^20 bytes per MB Phase 1 would be 122.2, not 128.2.
:func:`table4` returns the five entries.

References:
    M. Nardi, L. Valerio, A. Passarella, "Communication Costs Analysis of Unsupervised
    Federated Learning: an Anomaly Detection Scenario" (seed 000), Sec. 3.2-3.3, eq. (1)-(3),
    Sec. 4.3 and Table 4.

Example:
    >>> round(phase1_cost(90, model_bytes=model_bytes(4_000), num_classes=10) / MB, 1)
    128.2
    >>> phase2_cost([9] * 6 + [36], update_bytes=model_bytes(28_000), rounds=10) / MB
    201.6
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "MB",
    "MIB",
    "centralized_cost",
    "model_bytes",
    "phase1_cost",
    "phase2_cost",
    "phase2_cost_internal_aggregator",
    "table4",
]

MB = 10**6
"""Decimal megabyte: the unit that reproduces Table 4 of seed 000."""
MIB = 2**20
"""Binary mebibyte, for comparison."""


def _check_number(name: str, value: float, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value!r}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")


def model_bytes(num_params: int, bytes_per_param: float = 4) -> float:
    """Size of a model sent as a flat array: ``num_params * bytes_per_param``.

    Args:
        num_params: Number of parameters, >= 0.
        bytes_per_param: Bytes per parameter (4 for float32, as in Sec. 4.3).

    Returns:
        Size in bytes.

    Raises:
        ValueError: On negative or non-integer inputs.
    """
    _check_int("num_params", num_params, 0)
    _check_number("bytes_per_param", bytes_per_param)
    return num_params * bytes_per_param


def phase1_cost(
    num_clients: int,
    model_bytes: float,
    *,
    num_classes: int | None = None,
    group_size: float | None = None,
    association_bytes: float = 1 / 8,
    id_bytes: float = 2,
) -> float:
    """Eq. (1): cost of Phase I (all-to-all model exchange and community detection).

    ``P1 = n(n-1) S_m + n(n-1) S_r + 2 (n-1) G_m S_id`` with ``G_m = n / |C|`` in the ideal
    case the paper assumes (the average candidate-group size equals the true group size).

    Args:
        num_clients: ``n``, number of clients, >= 1.
        model_bytes: ``S_m``, size of one local model in bytes.
        num_classes: ``|C|``, number of data distributions; sets ``G_m = n / |C|``.
        group_size: ``G_m`` given directly (e.g. ``n`` for the worst case); exactly one of
            ``num_classes`` and ``group_size`` must be given.
        association_bytes: ``S_r``, one bit = 1/8 byte in the paper.
        id_bytes: ``S_id``, size of a client id (a 2-byte unsigned integer for 90 clients).

    Returns:
        Bytes sent in Phase I.

    Raises:
        ValueError: On invalid inputs or when both or neither of ``num_classes`` and
            ``group_size`` are given.

    References:
        Seed 000, Sec. 3.2, eq. (1).
    """
    _check_int("num_clients", num_clients, 1)
    _check_number("model_bytes", model_bytes)
    _check_number("association_bytes", association_bytes)
    _check_number("id_bytes", id_bytes)
    if (num_classes is None) == (group_size is None):
        raise ValueError(
            "exactly one of num_classes and group_size must be given, got "
            f"num_classes={num_classes!r}, group_size={group_size!r}"
        )
    if num_classes is not None:
        _check_int("num_classes", num_classes, 1)
        g_m = num_clients / num_classes
    else:
        assert group_size is not None
        _check_number("group_size", group_size)
        g_m = group_size
    pairs = num_clients * (num_clients - 1)
    return pairs * model_bytes + pairs * association_bytes + 2 * (num_clients - 1) * g_m * id_bytes


def phase2_cost(group_sizes: Sequence[int], update_bytes: float, rounds: int) -> float:
    """Eq. (2): cost of Phase II, FedAvg inside each group with an external aggregator.

    ``P2 = r * sum_i 2 |G_i| S_u``: per round every member uploads its update and receives the
    aggregated model.

    Args:
        group_sizes: ``|G_i|`` for every group (community), each >= 1.
        update_bytes: ``S_u``, size of one model update in bytes.
        rounds: ``r``, communication rounds per group, >= 0.

    Returns:
        Bytes sent in Phase II.

    Raises:
        ValueError: On invalid inputs.

    References:
        Seed 000, Sec. 3.2, eq. (2).
    """
    for i, g in enumerate(group_sizes):
        _check_int(f"group_sizes[{i}]", g, 1)
    _check_number("update_bytes", update_bytes)
    _check_int("rounds", rounds, 0)
    return rounds * sum(2 * g * update_bytes for g in group_sizes)


def phase2_cost_internal_aggregator(
    num_clients: int, num_groups: int, update_bytes: float, rounds: int
) -> float:
    """Eq. (3): Phase II when one member of each group aggregates.

    ``P2 = 2 r (n - k) S_u``: the aggregating member neither uploads nor downloads.

    Args:
        num_clients: ``n``, all clients over all groups, >= 1.
        num_groups: ``k``, number of groups, in [1, n].
        update_bytes: ``S_u``, size of one model update in bytes.
        rounds: ``r``, communication rounds, >= 0.

    Returns:
        Bytes sent in Phase II.

    Raises:
        ValueError: On invalid inputs.

    References:
        Seed 000, Sec. 3.2, eq. (3). The paper's text sums ``i = 0..k`` in eq. (2) but calls
        the number of groups ``k``; here ``k`` is the number of groups.
    """
    _check_int("num_clients", num_clients, 1)
    _check_int("num_groups", num_groups, 1)
    if num_groups > num_clients:
        raise ValueError(
            f"num_groups must be <= num_clients ({num_clients}), got num_groups={num_groups}"
        )
    _check_number("update_bytes", update_bytes)
    _check_int("rounds", rounds, 0)
    return 2 * rounds * (num_clients - num_groups) * update_bytes


def centralized_cost(dataset_sizes: Sequence[int] | int, sample_bytes: float = 28 * 28) -> float:
    """Sec. 3.3: every client uploads its whole dataset, ``sum_i |D_i| S_d``.

    Args:
        dataset_sizes: ``|D_i|`` per client, or the total number of samples.
        sample_bytes: ``S_d``, bytes per sample (784 for a 28x28 8-bit image).

    Returns:
        Bytes sent.

    Raises:
        ValueError: On invalid inputs.

    References:
        Seed 000, Sec. 3.3. With Fashion-MNIST's 60,000 x 784 bytes this is 47.04 MB, the
        figure of Sec. 4.3; Table 4 prints 45.04, which neither unit gives (47.04 MB is
        44.86 MiB), so we take it for a typo.
    """
    sizes = [dataset_sizes] if isinstance(dataset_sizes, int) else list(dataset_sizes)
    for i, s in enumerate(sizes):
        _check_int(f"dataset_sizes[{i}]", s, 0)
    _check_number("sample_bytes", sample_bytes)
    return sum(sizes) * sample_bytes


def table4(
    *,
    num_clients: int = 90,
    num_classes: int = 10,
    group_sizes: Sequence[int] = (9, 9, 9, 9, 9, 9, 36),
    rounds: int = 10,
    phase1_params: int = 4_000,
    phase2_params: int = 28_000,
    prior_phase2_params: int = 100_000,
    train_bytes: float = 47.04e6,
    ocsvm_fraction: float = 0.3,
) -> dict[str, float]:
    """Table 4 of seed 000 in MB (10^6 bytes), from the inputs stated in Sec. 4.3.

    Phase I of the prior work uses an OC-SVM whose size is ``0.3 |D_i|`` with
    ``|D_i| = 47.04 MB / 90``; its Phase II a flat autoencoder of about 100,000 parameters.

    Args:
        num_clients: ``n``.
        num_classes: ``|C|``.
        group_sizes: Communities found in Phase I (6 of 9 clients and 1 of 36).
        rounds: ``r``.
        phase1_params: Parameters of the 5-layer convolutional autoencoder.
        phase2_params: Parameters of the 7-layer convolutional autoencoder.
        prior_phase2_params: Parameters of the prior work's flat autoencoder.
        train_bytes: Size of the training set in bytes.
        ocsvm_fraction: OC-SVM size as a fraction of the local dataset.

    Returns:
        ``{"this_phase1", "this_phase2", "prior_phase1", "prior_phase2", "centralized"}`` in MB.
        The paper prints 128.2, 201.6, 1256.4, 720 and 45.04; the functions give 128.16,
        201.6, 1255.97, 720 and 47.04 (see :func:`centralized_cost` for the last one).

    References:
        Seed 000, Sec. 4.3, Table 4.
    """
    ocsvm_bytes = ocsvm_fraction * train_bytes / num_clients
    c = num_classes
    return {
        "this_phase1": phase1_cost(num_clients, model_bytes(phase1_params), num_classes=c) / MB,
        "this_phase2": phase2_cost(group_sizes, model_bytes(phase2_params), rounds) / MB,
        "prior_phase1": phase1_cost(num_clients, ocsvm_bytes, num_classes=c) / MB,
        "prior_phase2": phase2_cost(group_sizes, model_bytes(prior_phase2_params), rounds) / MB,
        "centralized": train_bytes / MB,
    }
