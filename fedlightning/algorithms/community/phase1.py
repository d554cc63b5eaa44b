"""Phase I of seed 000 (group identification), with every exchange as a real message.

1. Every client fits a local detector on its own data.
2. Every client sends its detector to every other client: ``n (n - 1)`` model messages.
3. Every client scores its own data with every detector it holds. Computationally this is
   one pass of each received detector over all clients' data, split per client, so the
   ``n x n`` inlier-ratio matrix costs ``n`` batched passes, not ``n^2`` loader loops.
4. Client ``i`` tells client ``j`` whether ``j``'s detector saw ``i``'s data the way ``i``'s
   own does: one association bit per ordered pair, ``n (n - 1)`` messages of one byte (the
   smallest unit a message can carry; eq. 1 counts one bit).
5. Every client except the leader (the lowest id) sends its candidate list (int16 ids) to
   the leader, which builds the graph, detects communities and sends every other client the
   members of its community (int16 ids).

Every message goes through ``dispatch(client, direction, message)`` so a
:class:`~fedlightning.callbacks.CommCost` callback counts it: peer-to-peer messages and
candidate lists are counted ``"up"`` on the sender; community lists ``"down"`` on the
receiver, the leader acting as the server.

References:
    M. Nardi, L. Valerio, A. Passarella, seed 000, Sec. 3.1.1 and 3.2.1, eq. (1).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from fedlightning.algorithms.community.detectors import AutoencoderDetector, Detector
from fedlightning.algorithms.community.graph import (
    COMMUNITY_METHODS,
    _check_tolerance,
    accepts,
    detect_communities,
    graph_modularity,
    sampling_tolerance,
    similarity_graph,
)
from fedlightning.callbacks.base import Direction
from fedlightning.messages import Message

__all__ = ["GroupIdentification", "Phase1Result", "inlier_ratio_matrix"]

log = logging.getLogger(__name__)

Dispatch = Callable[[int, Direction, Message], None]
ID_DTYPE = torch.int16


def inlier_ratio_matrix(detectors: Sequence[Detector], data: Sequence[Tensor]) -> NDArray[Any]:
    """``R[j, i]``: share of client ``i``'s samples that detector ``j`` calls inliers.

    Each detector scores the concatenation of all clients' data once; the per-client shares
    come from one segment sum, so the cost is ``n`` batched passes.

    Args:
        detectors: One fitted detector per client.
        data: One sample tensor per client (same sample shape, each non-empty).

    Returns:
        Float64 matrix of shape ``(len(detectors), len(data))``.

    Raises:
        ValueError: If a client has no data.
    """
    sizes = [len(x) for x in data]
    if any(s == 0 for s in sizes):
        raise ValueError(f"every client needs data; client {sizes.index(0)} has 0 samples")
    everything = torch.cat(list(data))
    owner = torch.repeat_interleave(torch.arange(len(data)), torch.tensor(sizes))
    counts = torch.tensor(sizes, dtype=torch.float64)
    out = np.empty((len(detectors), len(data)))
    for j, detector in enumerate(detectors):
        mask = detector.inlier_mask(everything).to("cpu", torch.float64)
        per_client = torch.zeros(len(data), dtype=torch.float64).index_add_(0, owner, mask)
        out[j] = (per_client / counts).numpy()
    return out


@dataclass
class Phase1Result:
    """What Phase I produced and what it cost.

    Attributes:
        communities: Sorted lists of client ids, ordered by smallest member.
        candidates: Each client's candidate list (mutual rule, itself included).
        ratios: ``R[j, i]`` inlier ratios.
        graph: The client graph (networkx).
        modularity: Modularity of ``communities`` on the graph (``nan`` without edges).
        leader: The client that built the graph.
        model_bytes: Size of each client's model message.
        bytes: Measured bytes per exchange: ``models``, ``bits``, ``candidates``,
            ``communities`` and ``total``.
        seconds: Wall time of the whole phase.
        tolerances: The tolerance each client used in step 4 (empty in results saved
            before it was recorded).
    """

    communities: list[list[int]]
    candidates: list[list[int]]
    ratios: NDArray[Any]
    graph: nx.Graph
    modularity: float
    leader: int
    model_bytes: list[int]
    bytes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tolerances: list[float] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        """The result as plain values and tensors, for a checkpoint.

        ``torch.load(weights_only=True)`` loads it back; the graph is not stored: it is a
        function of the candidate lists and :meth:`from_state_dict` rebuilds it.
        """
        return {
            "communities": [list(g) for g in self.communities],
            "candidates": [list(c) for c in self.candidates],
            "ratios": torch.as_tensor(np.asarray(self.ratios)),
            "modularity": float(self.modularity),
            "leader": int(self.leader),
            "model_bytes": [int(b) for b in self.model_bytes],
            "bytes": {k: int(v) for k, v in self.bytes.items()},
            "seconds": float(self.seconds),
            "tolerances": [float(t) for t in self.tolerances],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Phase1Result:
        """The result :meth:`state_dict` saved, with its graph rebuilt."""
        candidates = [[int(c) for c in listed] for listed in state["candidates"]]
        return cls(
            communities=[[int(c) for c in g] for g in state["communities"]],
            candidates=candidates,
            ratios=state["ratios"].numpy(),
            graph=similarity_graph(candidates),
            modularity=float(state["modularity"]),
            leader=int(state["leader"]),
            model_bytes=[int(b) for b in state["model_bytes"]],
            bytes={k: int(v) for k, v in state["bytes"].items()},
            seconds=float(state["seconds"]),
            tolerances=[float(t) for t in state.get("tolerances", [])],
        )

    @property
    def mean_candidates(self) -> float:
        """Mean candidate-list size over the clients that send one (``G_m`` of eq. 1)."""
        sizes = [len(c) for k, c in enumerate(self.candidates) if k != self.leader]
        return float(np.mean(sizes)) if sizes else 0.0


class GroupIdentification:
    """Phase I of seed 000: local detectors, pairwise scoring, client graph, communities.

    Subclass and override :meth:`fit_detectors`, :meth:`score` or :meth:`detect` to change
    one step.

    Args:
        detector: Prototype detector, copied per client (default
            :class:`AutoencoderDetector` with seed 000's 5-layer conv autoencoder).
        tolerance: Relative tolerance ``t`` of the similarity rule, in (0, 1).
        method: Community detection: ``"fastgreedy"`` (reference), ``"leiden"``,
            ``"louvain"`` or ``"greedy_modularity"``.
        tolerance_z: If given, ``tolerance`` is not used: each client ``i`` takes
            ``tolerance_z`` standard errors of the sampling noise of its inlier share,
            ``sampling_tolerance(R[i, i], n_i, tolerance_z)``, computed from its own data
            alone (label-free, no extra message).

    Raises:
        ValueError: On a tolerance outside (0, 1), ``tolerance_z <= 0`` or an unknown
            method.

    Example:
        >>> phase1 = GroupIdentification(tolerance=0.06, method="leiden")
        >>> by_noise = GroupIdentification(tolerance_z=1.0, method="leiden")

    References:
        Seed 000, Sec. 3.1.1 and 3.2.1.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        *,
        tolerance: float = 0.06,
        method: str = "fastgreedy",
        tolerance_z: float | None = None,
    ) -> None:
        _check_tolerance(tolerance)
        if tolerance_z is not None and (
            not isinstance(tolerance_z, (int, float)) or not 0 < tolerance_z < math.inf
        ):
            raise ValueError(f"tolerance_z must be a number > 0, got tolerance_z={tolerance_z!r}")
        if method not in COMMUNITY_METHODS:
            raise ValueError(
                f"method must be one of {list(COMMUNITY_METHODS)}, got method={method!r}"
            )
        self.detector: Detector = detector if detector is not None else AutoencoderDetector()
        self.tolerance = float(tolerance)
        self.method = method
        self.tolerance_z = None if tolerance_z is None else float(tolerance_z)

    def tolerances(self, ratios: NDArray[Any], sizes: Sequence[int]) -> NDArray[np.float64]:
        """Step 4's tolerance of every client: ``tolerance``, or the sampling rule's."""
        if self.tolerance_z is None:
            return np.full(len(sizes), self.tolerance)
        return sampling_tolerance(np.diag(ratios), sizes, self.tolerance_z)

    def fit_detectors(self, data: Sequence[Tensor], seeds: Sequence[int]) -> list[Detector]:
        """Step 1: fit one copy of the prototype per client."""
        return [
            copy.deepcopy(self.detector).fit(x, seed=s) for x, s in zip(data, seeds, strict=True)
        ]

    def score(self, detectors: Sequence[Detector], data: Sequence[Tensor]) -> NDArray[Any]:
        """Step 3: the inlier-ratio matrix ``R[j, i]``."""
        return inlier_ratio_matrix(detectors, data)

    def detect(self, graph: nx.Graph, seed: int) -> list[list[int]]:
        """Step 5: communities of the client graph."""
        return detect_communities(graph, self.method, seed=seed)

    def run(
        self,
        data: Sequence[Tensor],
        *,
        seed: int = 0,
        dispatch: Dispatch | None = None,
    ) -> Phase1Result:
        """Run Phase I over the clients' data.

        Args:
            data: One sample tensor per client; client ids are the positions.
            seed: Seed of the detectors (client ``k`` uses a seed derived from
                ``(seed, k)``) and of randomized community methods.
            dispatch: Called as ``dispatch(client, direction, message)`` for every message,
                e.g. ``lambda c, d, m: trainer.dispatch(0, c, d, m)``.

        Returns:
            The communities, the intermediate products and the measured bytes.

        Raises:
            ValueError: With no clients or a client without data.
        """
        start = time.perf_counter()
        n = len(data)
        if n < 1:
            raise ValueError("Phase I needs at least one client, got 0")
        send: Dispatch = dispatch if dispatch is not None else (lambda c, d, m: None)
        tally = {"models": 0, "bits": 0, "candidates": 0, "communities": 0}
        seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(n, np.uint32)]
        own = self.fit_detectors(data, seeds)

        # 2. Models to every peer; each receiver rebuilds the sender's detector from bytes.
        received: list[Detector] = []
        model_bytes: list[int] = []
        for j, detector in enumerate(own):
            message = detector.to_message()
            model_bytes.append(message.nbytes)
            for _receiver in range(n - 1):
                send(j, "up", message)
                tally["models"] += message.nbytes
            received.append(detector.from_message(message))

        # 3. Scores; 4. association bits, client i -> client j: A[i, j].
        ratios = self.score(received, data)
        tolerances = self.tolerances(ratios, [len(x) for x in data])
        mine = accepts(ratios, tolerances)
        theirs = np.zeros_like(mine)
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                bit = Message(extras={"accept": torch.tensor([bool(mine[i, j])])})
                send(i, "up", bit)
                tally["bits"] += bit.nbytes
                theirs[j, i] = bool(bit.extras["accept"][0])
        np.fill_diagonal(theirs, True)
        mutual = mine & theirs
        candidates = [np.flatnonzero(row).astype(int).tolist() for row in mutual]

        # 5. Candidate lists to the leader; communities back.
        leader = 0
        lists: list[list[int]] = []
        for i, listed in enumerate(candidates):
            if i == leader:
                lists.append(listed)
                continue
            message = Message(extras={"candidates": torch.tensor(listed, dtype=ID_DTYPE)})
            send(i, "up", message)
            tally["candidates"] += message.nbytes
            lists.append(message.extras["candidates"].tolist())
        graph = similarity_graph(lists)
        communities = self.detect(graph, seed)
        for group in communities:
            members = torch.tensor(group, dtype=ID_DTYPE)
            for i in group:
                if i == leader:
                    continue
                message = Message(extras={"community": members})
                send(i, "down", message)
                tally["communities"] += message.nbytes
        tally["total"] = sum(tally.values())
        modularity = graph_modularity(graph, communities)
        log.info(
            "Phase I: %d clients, %d communities, modularity %.3f, %.1f MB",
            n,
            len(communities),
            modularity,
            tally["total"] / 1e6,
        )
        return Phase1Result(
            communities=communities,
            candidates=lists,
            ratios=ratios,
            graph=graph,
            modularity=modularity,
            leader=leader,
            model_bytes=model_bytes,
            bytes=tally,
            seconds=time.perf_counter() - start,
            tolerances=tolerances.tolist(),
        )

    def __repr__(self) -> str:
        return (
            f"GroupIdentification(detector={self.detector!r}, tolerance={self.tolerance}, "
            f"method={self.method!r}, tolerance_z={self.tolerance_z})"
        )
