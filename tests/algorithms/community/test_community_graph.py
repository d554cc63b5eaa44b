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
    sampling_tolerance,
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


def test_each_client_can_use_its_own_tolerance():
    # Client 0's own ratio is 0.5; detector 1 sees its data at 0.54 (8% off), detector 2 at
    # 0.51 (2% off). With t_0 = 0.1 client 0 accepts both, with t_0 = 0.05 only detector 2.
    r = np.array([[0.5, 0.9, 0.9], [0.54, 0.9, 0.9], [0.51, 0.9, 0.9]])
    assert accepts(r, [0.1, 0.06, 0.06])[0].tolist() == [True, True, True]
    assert accepts(r, [0.05, 0.06, 0.06])[0].tolist() == [True, False, True]
    assert candidate_lists(r, np.array([0.05, 0.06, 0.06]))[0] == [0, 2]
    with pytest.raises(ValueError, match=r"one per client \(3\)"):
        accepts(r, [0.1, 0.1])
    with pytest.raises(ValueError, match=r"tolerance\[1\]=0.0"):
        accepts(r, [0.1, 0.0, 0.1])


def test_sampling_tolerance_is_the_relative_standard_error_of_the_gap():
    # sqrt(2 p (1 - p) / n) / p: p = 0.9, n = 450 gives 0.02 / 0.9; p = 0.5, n = 200 gives 0.1.
    t = sampling_tolerance([0.9, 0.5], [450, 200])
    np.testing.assert_allclose(t, [0.02 / 0.9, 0.1])
    np.testing.assert_allclose(sampling_tolerance([0.9, 0.5], [450, 200], z=2.0), 2 * t)
    # Seed 000's clients: 666 samples, a threshold at their own 90th percentile.
    assert sampling_tolerance([599 / 666], [666])[0] == pytest.approx(0.01833, abs=1e-5)


def test_sampling_tolerance_matches_the_spread_of_same_distribution_clients():
    # Clients drawing from one distribution, each detector thresholded at its own 90th
    # percentile: the relative gaps R[j, i] / R[i, i] - 1 have the standard deviation the
    # rule predicts (threshold noise of j plus binomial noise of i's share), not half of it.
    rng = np.random.default_rng(0)
    n, clients = 400, 60
    data = rng.standard_normal((clients, n))
    thresholds = np.quantile(data, 0.9, axis=1)
    ratios = (data[None, :, :] <= thresholds[:, None, None]).mean(axis=2)  # R[j, i]
    self_ratios = np.diag(ratios)
    gaps = (ratios.T / self_ratios[:, None] - 1)[~np.eye(clients, dtype=bool)]
    predicted = sampling_tolerance(self_ratios, [n] * clients).mean()
    assert gaps.std() == pytest.approx(predicted, rel=0.15)


def test_sampling_tolerance_rejects_what_it_cannot_use():
    with pytest.raises(ValueError, match="z must be a finite number > 0, got z=0"):
        sampling_tolerance([0.9], [100], z=0)
    with pytest.raises(ValueError, match=r"client 1 .* R\[1, 1\]=1.0"):
        sampling_tolerance([0.9, 1.0], [100, 100])
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        sampling_tolerance([0.9], [0])
    with pytest.raises(ValueError, match="one entry per client, got 2 and 1"):
        sampling_tolerance([0.9, 0.8], [100])


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
