import logging
import math

import networkx as nx
import numpy as np
import pytest

from fedlightning.algorithms.community import (
    accepts,
    candidate_lists,
    community_labels,
    detect_communities,
    graph_modularity,
    similarity_graph,
)

METHODS = ["fastgreedy", "leiden", "louvain", "greedy_modularity"]


def test_acceptance_uses_relative_tolerance_around_own_ratio():
    # R[j, i]: detector j on client i's data. Client 0's own ratio is 0.5.
    r = np.array(
        [
            [0.50, 0.9, 0.9],
            [0.529, 0.9, 0.9],  # within 0.5 * (1 +- 0.06) = [0.47, 0.53]
            [0.531, 0.9, 0.9],  # just outside
        ]
    )
    a = accepts(r, tolerance=0.06)
    assert a[0].tolist() == [True, True, False]
    assert a.diagonal().all()


def test_candidates_need_acceptance_in_both_directions():
    r = np.array(
        [
            [0.9, 0.2, 0.9],  # 0's detector rejects 1's data -> A[1, 0] False
            [0.9, 0.9, 0.9],  # 1's detector sees 0's data like 0 does -> A[0, 1] True
            [0.9, 0.9, 0.9],
        ]
    )
    lists = candidate_lists(r, tolerance=0.06)
    assert lists == [[0, 2], [1, 2], [0, 1, 2]]
    for i, li in enumerate(lists):  # symmetric relation, self always listed
        assert i in li
        assert all(i in lists[j] for j in li)


def test_graph_has_one_edge_per_pair_and_self_loops_for_loners():
    g = similarity_graph([[0, 1], [0, 1], [2]])
    assert sorted(g.edges()) == [(0, 1), (2, 2)]
    assert g.number_of_nodes() == 3
    with pytest.raises(ValueError, match="names client 5"):
        similarity_graph([[0, 5], [1]])


def _two_cliques() -> nx.Graph:
    lists = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    lists += [[3, 4, 5, 6, 7], [4, 5, 6, 7], [4, 5, 6, 7], [4, 5, 6, 7]]
    lists[3] = [0, 1, 2, 3, 4]
    return similarity_graph(lists)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_separates_two_cliques(method):
    communities = detect_communities(_two_cliques(), method, seed=0)
    assert communities == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert graph_modularity(_two_cliques(), communities) > 0.3


def test_fastgreedy_is_the_reference_and_deterministic():
    rng = np.random.default_rng(0)
    r = rng.uniform(0.6, 0.9, size=(30, 30))
    g = similarity_graph(candidate_lists(r, tolerance=0.1))
    first = detect_communities(g, "fastgreedy")
    assert detect_communities(g, "fastgreedy", seed=123) == first
    assert sorted(c for group in first for c in group) == list(range(30))


def test_edgeless_graph_falls_back_to_singletons(caplog):
    g = similarity_graph([[0], [1], [2]])
    with caplog.at_level(logging.WARNING):
        assert detect_communities(g, "fastgreedy") == [[0], [1], [2]]
    assert "no edges" in caplog.text
    assert math.isnan(graph_modularity(g, [[0], [1], [2]]))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="method must be one of"):
        detect_communities(_two_cliques(), "spectral")
    with pytest.raises(ValueError, match="tolerance must be in"):
        accepts(np.eye(2), tolerance=0.0)
    with pytest.raises(ValueError, match="tolerance must be in"):
        candidate_lists(np.eye(2), tolerance=1.0)
    with pytest.raises(ValueError, match="square"):
        accepts(np.ones((2, 3)))
    with pytest.raises(ValueError, match="inlier ratios"):
        accepts(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="missing"):
        community_labels([[0, 1]], 3)
    with pytest.raises(ValueError, match="repeated"):
        community_labels([[0, 1], [1, 2]], 3)
    assert community_labels([[2], [0, 1]], 3).tolist() == [1, 1, 0]
