"""Phase I of seed 000 as pure functions: similarity rule, client graph, communities.

Given the inlier-ratio matrix ``R`` (``R[j, i]``: share of client ``i``'s samples that
client ``j``'s detector calls inliers), client ``i`` accepts ``j`` when ``R[j, i]`` lies
within a relative tolerance ``t`` of its own reference ``R[i, i]``. ``i`` lists ``j`` only
when the test holds both ways, so the relation is symmetric; a client always lists itself.
One undirected, unweighted edge joins every listed pair; an isolated client keeps a
self-loop so it stays in the graph. Communities come from igraph's fast greedy modularity
(the reference implementation's choice, cut at maximum modularity), Leiden (leidenalg) or
networkx's Louvain / greedy modularity.

References:
    M. Nardi, L. Valerio, A. Passarella, seed 000, Sec. 3.1.1; M. Nardi et al., "Anomaly
    detection through unsupervised federated learning", arXiv:2209.04184 (the rule and the
    fast greedy choice, from the authors' reference implementation);
    A. Clauset, M. Newman, C. Moore, "Finding community structure in very large networks",
    Phys. Rev. E 70, 2004 (fast greedy); V. Traag et al., "From Louvain to Leiden", Sci. Rep.
    9, 2019; V. Blondel et al., "Fast unfolding of communities in large networks", 2008.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal, get_args

import networkx as nx
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CommunityMethod",
    "accepts",
    "candidate_lists",
    "community_labels",
    "detect_communities",
    "graph_modularity",
    "sampling_tolerance",
    "similarity_graph",
]

log = logging.getLogger(__name__)

CommunityMethod = Literal["fastgreedy", "leiden", "louvain", "greedy_modularity"]
COMMUNITY_METHODS: tuple[str, ...] = get_args(CommunityMethod)


def _check_tolerance(tolerance: float) -> None:
    if not isinstance(tolerance, (int, float)) or not 0.0 < float(tolerance) < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got tolerance={tolerance!r}")


def _tolerances(tolerance: float | ArrayLike, n: int) -> NDArray[np.float64]:
    """One tolerance per client: a scalar for all, or a length-``n`` sequence."""
    if isinstance(tolerance, (int, float, str, bytes)) or tolerance is None:
        _check_tolerance(tolerance)  # type: ignore[arg-type]
        return np.full(n, float(tolerance))
    t = np.asarray(tolerance, dtype=np.float64)
    if t.shape != (n,):
        raise ValueError(f"tolerance must be a number or one per client ({n}), got shape {t.shape}")
    bad = np.flatnonzero(~((t > 0.0) & (t < 1.0)))
    if bad.size:
        raise ValueError(
            f"tolerance must be in (0, 1) for every client, got tolerance[{int(bad[0])}]="
            f"{float(t[bad[0]])!r}"
        )
    return t


def sampling_tolerance(
    self_ratios: ArrayLike, sizes: ArrayLike, z: float = 1.0
) -> NDArray[np.float64]:
    """Each client's tolerance from the sampling noise of an inlier share (label-free).

    If clients ``i`` and ``j`` draw their data from one distribution, ``R[j, i]`` differs
    from ``R[i, i]`` only by sampling: a share measured on ``n`` samples has the binomial
    variance ``p (1 - p) / n``, and the threshold of ``j``'s detector, a quantile of ``j``'s
    own sample, adds about as much again. Client ``i``, knowing only its own ``p = R[i, i]``
    and size ``n_i``, takes both samples to be of its size, so the relative standard error
    of the gap is ``sqrt(2 p (1 - p) / n_i) / p``, and its tolerance is ``z`` of those. On
    seed 000's protocol (``n = 666``, ``p = 0.899``) that is 0.0183 for ``z = 1``; the
    reference's fixed ``t = 0.06`` is 3.3 of them.

    Args:
        self_ratios: ``R[i, i]`` of every client, in (0, 1).
        sizes: Every client's number of samples (>= 1).
        z: Standard errors the tolerance spans (> 0).

    Returns:
        Per-client tolerances, for :func:`accepts` and :func:`candidate_lists`.

    Raises:
        ValueError: On ``z <= 0``, a size below 1, mismatched lengths, or a client whose
            tolerance falls outside (0, 1) (its ``R[i, i]`` is 0 or 1, or its sample too
            small for the rule).

    Example:
        >>> sampling_tolerance([599 / 666], [666]).round(4).tolist()
        [0.0183]
    """
    if not isinstance(z, (int, float)) or not math.isfinite(z) or z <= 0:
        raise ValueError(f"z must be a finite number > 0, got z={z!r}")
    p = np.asarray(self_ratios, dtype=np.float64).reshape(-1)
    n = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if p.shape != n.shape:
        raise ValueError(
            f"self_ratios and sizes must have one entry per client, got {p.size} and {n.size}"
        )
    if (n < 1).any():
        raise ValueError(f"sizes must be >= 1, got sizes={n.astype(int).tolist()}")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = z * np.sqrt(2.0 * p * (1.0 - p) / n) / p
    bad = np.flatnonzero(~((t > 0.0) & (t < 1.0)))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"client {k} has no sampling tolerance in (0, 1): R[{k}, {k}]={float(p[k])!r} (must be "
            f"in (0, 1)), size {int(n[k])}, z={z}; use a fixed tolerance instead"
        )
    return t


def _check_ratios(ratios: ArrayLike) -> NDArray[np.float64]:
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ValueError(f"ratios must be a non-empty square matrix, got shape {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any() or (r > 1).any():
        raise ValueError("ratios must be inlier ratios in [0, 1] (finite)")
    return r


def accepts(ratios: ArrayLike, tolerance: float | ArrayLike = 0.06) -> NDArray[np.bool_]:
    """One-way acceptance: ``A[i, j]`` is True when ``j``'s model sees ``i``'s data as ``i``'s does.

    Args:
        ratios: ``R[j, i]``: inlier ratio of client ``j``'s detector on client ``i``'s data.
        tolerance: Relative tolerance ``t`` in (0, 1): ``R[j, i]`` must lie within
            ``[R[i, i] (1 - t), R[i, i] (1 + t)]``; or one ``t_i`` per client ``i`` (e.g.
            from :func:`sampling_tolerance`).

    Returns:
        Boolean matrix ``A`` of shape ``(n, n)`` with a True diagonal.

    Raises:
        ValueError: On a tolerance outside (0, 1) or a malformed matrix.
    """
    r = _check_ratios(ratios)
    t = _tolerances(tolerance, r.shape[0])[:, None]  # client i's own t_i
    ref = np.diag(r)[:, None]  # ref[i] = R[i, i]
    seen = r.T  # seen[i, j] = R[j, i]
    ok = (seen >= ref * (1 - t)) & (seen <= ref * (1 + t))
    np.fill_diagonal(ok, True)
    return ok


def candidate_lists(ratios: ArrayLike, tolerance: float | ArrayLike = 0.06) -> list[list[int]]:
    """Each client's candidate group under the mutual relative-tolerance rule.

    Args:
        ratios: ``R[j, i]``: inlier ratio of client ``j``'s detector on client ``i``'s data.
        tolerance: Relative tolerance in (0, 1) (the reference uses 0.06), or one per
            client.

    Returns:
        For each client ``i`` the sorted ids ``j`` with ``A[i, j] and A[j, i]``; ``i`` is
        always in its own list.

    Raises:
        ValueError: On a tolerance outside (0, 1) or a malformed matrix.

    Example:
        >>> candidate_lists([[0.9, 0.9, 0.2], [0.9, 0.9, 0.2], [0.3, 0.3, 0.9]])
        [[0, 1], [0, 1], [2]]
    """
    a = accepts(ratios, tolerance)
    mutual = a & a.T
    return [np.flatnonzero(row).astype(int).tolist() for row in mutual]


def similarity_graph(candidates: Sequence[Sequence[int]]) -> nx.Graph:
    """Undirected, unweighted client graph: an edge per listed pair, self-loops for loners.

    Args:
        candidates: Candidate list of every client (ids in ``[0, n)``).

    Returns:
        A graph with nodes ``0 .. n-1``.

    Raises:
        ValueError: If a list names a client outside ``[0, n)``.
    """
    n = len(candidates)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for i, listed in enumerate(candidates):
        for j in listed:
            if not 0 <= int(j) < n:
                raise ValueError(f"candidate list of client {i} names client {j}, not in [0, {n})")
            if int(j) != i:
                graph.add_edge(i, int(j))
    for node in range(n):
        if graph.degree(node) == 0:
            graph.add_edge(node, node)
    return graph


def _without_self_loops(graph: nx.Graph) -> nx.Graph:
    simple = nx.Graph(graph)
    simple.remove_edges_from(list(nx.selfloop_edges(simple)))
    return simple


def _canonical(groups: Sequence[Sequence[int]]) -> list[list[int]]:
    return sorted((sorted(int(v) for v in g) for g in groups if len(g)), key=lambda g: g[0])


def detect_communities(
    graph: nx.Graph, method: str = "fastgreedy", seed: int = 0
) -> list[list[int]]:
    """Split the client graph into communities.

    Self-loops only keep loners in the graph; they are ignored by the detection. A graph
    with no edge between distinct clients has no community structure: every client is then
    its own community (documented fallback, logged as a warning), so Phase II degenerates
    into local training.

    Args:
        graph: Graph from :func:`similarity_graph` (nodes ``0 .. n-1``).
        method: ``"fastgreedy"`` (igraph, the reference; deterministic), ``"leiden"``
            (leidenalg, modularity, seeded), ``"louvain"`` (networkx, seeded) or
            ``"greedy_modularity"`` (networkx's Clauset-Newman-Moore).
        seed: Seed of the randomized methods.

    Returns:
        Communities as sorted lists of client ids, ordered by their smallest member.

    Raises:
        ValueError: On an unknown method or an empty graph.
    """
    if method not in COMMUNITY_METHODS:
        raise ValueError(f"method must be one of {list(COMMUNITY_METHODS)}, got method={method!r}")
    n = graph.number_of_nodes()
    if n == 0:
        raise ValueError("graph has no nodes; Phase I needs at least one client")
    if sorted(graph.nodes) != list(range(n)):
        raise ValueError("graph nodes must be the client ids 0 .. n-1")
    simple = _without_self_loops(graph)
    if simple.number_of_edges() == 0:
        log.warning("client graph has no edges: every client is its own community")
        return [[i] for i in range(n)]
    if method == "louvain":
        return _canonical(nx.community.louvain_communities(simple, seed=seed))
    if method == "greedy_modularity":
        return _canonical(nx.community.greedy_modularity_communities(simple))
    import igraph as ig

    g = ig.Graph(n=n, edges=sorted(simple.edges()))
    if method == "fastgreedy":
        membership = g.community_fastgreedy().as_clustering().membership
    else:
        import leidenalg

        partition = leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, seed=seed)
        membership = list(partition.membership)
    groups: dict[int, list[int]] = {}
    for node, label in enumerate(membership):
        groups.setdefault(int(label), []).append(node)
    return _canonical(list(groups.values()))


def community_labels(communities: Sequence[Sequence[int]], num_clients: int) -> NDArray[np.int64]:
    """Community index of every client (the order of ``communities``).

    Raises:
        ValueError: If the communities do not cover ``0 .. num_clients-1`` exactly once.
    """
    labels = np.full(num_clients, -1, dtype=np.int64)
    for k, group in enumerate(communities):
        for client in group:
            if not 0 <= int(client) < num_clients or labels[int(client)] != -1:
                raise ValueError(
                    f"communities must cover clients 0..{num_clients - 1} once each; "
                    f"client {client} is out of range or repeated"
                )
            labels[int(client)] = k
    if (labels < 0).any():
        missing = np.flatnonzero(labels < 0)[:5].tolist()
        raise ValueError(f"communities must cover every client; missing e.g. {missing}")
    return labels


def graph_modularity(graph: nx.Graph, communities: Sequence[Sequence[int]]) -> float:
    """Newman modularity of ``communities`` on the graph without self-loops.

    Returns:
        The modularity, or ``nan`` when the graph has no edge between distinct clients.
    """
    simple = _without_self_loops(graph)
    if simple.number_of_edges() == 0:
        return math.nan
    return float(nx.community.modularity(simple, [set(c) for c in communities]))
