"""Phase II of seed 000: FedAvg inside each community, several federations in one run."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override

from fedlightning.algorithms.base import Algorithm, Reply, load_tensors
from fedlightning.algorithms.community.graph import community_labels
from fedlightning.algorithms.community.phase1 import GroupIdentification, Phase1Result
from fedlightning.algorithms.functional import weighted_average
from fedlightning.codecs import Codec
from fedlightning.messages import Message
from fedlightning.models.follow import module_device

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import RoundPlan, ServerContext

__all__ = ["CommunityFedAvg"]

PHASE1_ROUND = 0


class CommunityFedAvg(Algorithm):
    """One FedAvg federation per community of clients, all driven by one trainer.

    The server keeps one model per community. Each client receives its community's model,
    trains it, and sends back its update; updates are averaged (weighted by sample count)
    within each community only. Communities are given (e.g. the true grouping: the *ideal*
    baseline of seed 000) or found by Phase I (:class:`GroupIdentification`) in
    :meth:`setup`, whose exchanges are dispatched through the trainer as round-0 messages so
    that :class:`~fedlightning.callbacks.CommCost` counts them.

    Args:
        communities: Client ids per community; every client exactly once.
        phase1: Phase I to run when ``communities`` is not given.
        epochs_per_round: Local epochs of each round, e.g. ``[1, 10, 10, ...]`` (the
            reference: 1 epoch in round 1, then 10). Round ``r`` uses entry
            ``min(r, len) - 1``; ``None`` keeps the trainer's ``local_epochs``.
        uplink: Codec of client updates.
        downlink: Codec of community models.

    Raises:
        ValueError: If neither or both of ``communities`` and ``phase1`` are given, or an
            epoch count is < 1.

    Placement: the community models start as copies of the placed global model, so they
    live on its device and in its floating dtype (``float64`` under ``precision="64-true"``),
    and :meth:`community_model` returns modules there; their ``anomaly_score`` takes CPU
    data. Phase I does not follow the trainer's accelerator and precision: its detectors
    are separate models, trained and exchanged on the CPU in float32 (their message bytes
    are float32 bytes).

    Example:
        >>> algo = CommunityFedAvg(phase1=GroupIdentification(method="fastgreedy"))
        >>> ideal = CommunityFedAvg(communities=[[0, 1, 2], [3, 4, 5]])

    References:
        M. Nardi, L. Valerio, A. Passarella, seed 000, Sec. 3.1.2 and eq. (2); H. B.
        McMahan et al., AISTATS 2017 (FedAvg).
    """

    server_attributes: ClassVar[tuple[str, ...]] = (
        "phase1",
        "phase1_result",
        "communities",
        "membership",
        "states",
    )

    def __init__(
        self,
        *,
        communities: Sequence[Sequence[int]] | None = None,
        phase1: GroupIdentification | None = None,
        epochs_per_round: Sequence[int] | None = None,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
    ) -> None:
        super().__init__(uplink=uplink, downlink=downlink)
        if (communities is None) == (phase1 is None):
            raise ValueError(
                "give exactly one of communities (a fixed grouping) or phase1 (to find one), "
                f"got communities={communities!r}, phase1={phase1!r}"
            )
        if epochs_per_round is not None:
            bad = [e for e in epochs_per_round if not isinstance(e, int) or e < 1]
            if bad or len(epochs_per_round) == 0:
                raise ValueError(
                    f"epochs_per_round must be integers >= 1, got "
                    f"epochs_per_round={list(epochs_per_round)}"
                )
        self.communities: list[list[int]] = (
            [sorted(int(c) for c in g) for g in communities] if communities is not None else []
        )
        self.phase1 = phase1
        self.phase1_result: Phase1Result | None = None
        self.epochs_per_round = list(epochs_per_round) if epochs_per_round else None
        self.membership: list[int] = []
        self.states: list[dict[str, Tensor]] = []

    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        """Run Phase I (unless the run resumes: the checkpoint holds the communities)."""
        super().setup(server, model, datamodule)
        if self.server.resuming and self.phase1 is not None:
            return  # load_state_dict restores the communities and their models
        if self.phase1 is not None:
            data = [datamodule.client_data(c)[0] for c in datamodule.client_ids]
            self.phase1_result = self.phase1.run(
                data,
                seed=server.seed_for(PHASE1_ROUND),
                dispatch=lambda c, d, m: server.dispatch(PHASE1_ROUND, c, d, m),
            )
            self.communities = self.phase1_result.communities
        self.membership = community_labels(self.communities, datamodule.num_clients).tolist()
        initial = self.global_state()
        self.states = [
            {k: v.detach().clone() for k, v in initial.items()} for _ in self.communities
        ]

    def community_of(self, client: int) -> int:
        """Index of ``client``'s community."""
        return self.membership[client]

    def community_model(self, index: int) -> LightningModule:
        """A copy of the global module carrying community ``index``'s weights."""
        module = copy.deepcopy(self.global_model)
        load_tensors(module, self.states[index])
        module.eval()
        return module

    @override
    def round_plan(self, round: int, plan: RoundPlan) -> RoundPlan:
        if self.epochs_per_round is None:
            return plan
        epochs = self.epochs_per_round[min(round, len(self.epochs_per_round)) - 1]
        return dataclasses.replace(plan, epochs=epochs)

    @override
    def server_message(self, round: int, client: int) -> Message:
        return Message.of_state(
            self.global_model, self.states[self.community_of(client)], codec=self.downlink
        )

    @override
    def aggregate(self, round: int, replies: list[Reply]) -> None:
        groups: dict[int, list[Reply]] = {}
        for reply in replies:
            groups.setdefault(self.community_of(reply.client), []).append(reply)
        for index, members in groups.items():
            mean = weighted_average(
                [r.message.decode() for r in members], [float(r.num_samples) for r in members]
            )
            self.apply_update(self.states[index], mean)

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"communities": self.communities, "states": self.states}
        if self.phase1_result is not None:  # a resumed run reports Phase I too
            state["phase1_result"] = self.phase1_result.state_dict()
        return state

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.communities = [list(g) for g in state["communities"]]
        if "phase1_result" in state:
            self.phase1_result = Phase1Result.from_state_dict(state["phase1_result"])
        # Checkpoints load on the CPU; the community models live where the global model is.
        device = module_device(self.global_model) if self._global_model is not None else None
        self.states = [
            {k: v.to(device) if device is not None else v for k, v in s.items()}
            for s in state["states"]
        ]
        self.membership = community_labels(
            self.communities, len(self.membership) or sum(len(g) for g in self.communities)
        ).tolist()
