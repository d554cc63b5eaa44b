"""FedMorph: clients train a morphed sub-network; the server distils it back into the masks.

One round (Algorithm 1 of seed 004): the server cuts the sub-network its soft masks keep
(``v >= 0``) and broadcasts it; clients train it (eq. 3); the server averages their updates
into the mapped part of its full network (the paper's training trick 2); every
``distill_every`` rounds it distils the aggregated sub-network into (full weights, masks) on
unlabeled data, minimising the Jensen-Shannon divergence plus ``lam`` times the relaxed
parameter (or FLOP) count (eq. 5 and the missing eq. 7), then morphs the next sub-network.

References:
    Z. Wang et al., "FedMorph: Communication Efficient Federated Learning via Morphing
    Neural Network" (seed 004), eq. (4)-(6), Algorithm 1, section 5.1 ("Training Tricks")
    and appendix B.2; T. Li et al., "Federated Optimization in Heterogeneous Networks",
    MLSys 2020 (FedMorphProx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from typing_extensions import override

from fedlightning.algorithms.fedprox import FedProx
from fedlightning.algorithms.subnetwork import SubNetworkAlgorithm
from fedlightning.codecs import Codec
from fedlightning.models.follow import to_module
from fedlightning.models.masked.base import MaskedClassifier
from fedlightning.models.masked.functional import js_divergence
from fedlightning.models.masked.morph import (
    Kept,
    cut,
    kept_from_masks,
    relaxed_size,
    shift_masks_to_keep,
)

if TYPE_CHECKING:
    from fedlightning.datamodules import FederatedDataModule
    from fedlightning.round import ServerContext

__all__ = ["DISTILL_MASKS", "FedMorph", "FedMorphProx", "distill", "recalibrate_batchnorm"]

_STREAM_DISTILL = 47
_STREAM_SUBSET = 53
DISTILL_MASKS = ("noisy", "straight_through")


def distill(
    student: MaskedClassifier,
    teacher: nn.Module,
    inputs: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    lam: float,
    regularizer: str = "params",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    generator: torch.Generator | None = None,
    recalibrate_bn: bool = False,
    masks: str = "noisy",
    mask_lr: float | None = None,
) -> dict[str, float]:
    """Distil ``teacher`` into the masked ``student``'s weights and mask logits (eq. 7).

    Minimises ``JS(student(x) || teacher(x)) + lam * relaxed_size(student)`` over the
    unlabeled ``inputs`` with SGD. With ``masks="noisy"`` (the paper) the student's masks are
    eq. (6)'s noisy ones while it trains, which at tau -> 0 is dropout training without
    rescaling (the paper's Theorem 1); with ``masks="straight_through"`` the student is
    exactly the sub-network its masks keep, and the mask logits learn through a sigmoid
    surrogate gradient. Mask logits get no weight decay.

    The distillation runs where the student lives: ``inputs`` are moved to its device and
    floating dtype, and the teacher must be there too (:func:`~fedlightning.models.masked.cut`
    puts it there). Batch order and mask noise come from ``generator`` (a CPU generator
    gives the same draws on every device); there is no autocast: with a mixed-precision
    trainer the student's parameters, and so the distillation, are float32.

    Args:
        student: The server's masked network (trained in place).
        teacher: The aggregated sub-network (evaluation mode, frozen), on the student's
            device and in its dtype.
        inputs: Unlabeled images ``(N, C, H, W)``.
        epochs: Passes over ``inputs``, >= 1.
        batch_size: Images per step, >= 1.
        lr: SGD learning rate, > 0.
        lam: Weight of the relaxed size, >= 0.
        regularizer: ``"params"`` or ``"flops"``.
        momentum: SGD momentum.
        weight_decay: SGD weight decay on the weights.
        generator: Randomness of the batch order and of the mask noise.
        recalibrate_bn: Afterwards, recompute the BatchNorm running statistics on ``inputs``
            with the deterministic masks (what the next sub-network will see) instead of
            keeping those accumulated under noisy masks. Not in the paper.
        masks: ``"noisy"`` (eq. 6) or ``"straight_through"`` (hard masks ``1[v >= 0]``
            forward, the gradient of ``sigmoid(v)`` back; not in the paper).
        mask_lr: Learning rate of the mask logits, > 0; default ``lr``.

    Returns:
        ``distill_js`` (mean JS over the last epoch), ``distill_size`` (relaxed size at the
        end) and ``distill_steps``.

    Raises:
        ValueError: For a setting outside what is allowed.

    References:
        Seed 004, eq. (4)-(6); NOTES.md for eq. (7).
    """
    if not student.masked:
        raise ValueError("distill needs a masked student (masked=True)")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got lr={lr!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got lam={lam!r}")
    if masks not in DISTILL_MASKS:
        raise ValueError(f"masks must be one of {DISTILL_MASKS}, got masks={masks!r}")
    if mask_lr is not None and not mask_lr > 0:
        raise ValueError(f"mask_lr must be None or > 0, got mask_lr={mask_lr!r}")
    if inputs.ndim != 4 or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs must be a non-empty (N, C, H, W) tensor, got {tuple(inputs.shape)}"
        )
    inputs = to_module(inputs, student)
    optimizer = torch.optim.SGD(
        [
            {"params": student.weight_parameters(), "weight_decay": weight_decay},
            {
                "params": list(student.mask_logits.parameters()),
                "weight_decay": 0.0,
                "lr": lr if mask_lr is None else mask_lr,
            },
        ],
        lr=lr,
        momentum=momentum,
    )
    teacher.eval()
    student.train()
    student.noise_generator = generator
    saved_masks, student.train_masks = student.train_masks, masks
    steps = 0
    js_sum, js_count = 0.0, 0
    try:
        for _ in range(epochs):
            js_sum, js_count = 0.0, 0
            order = torch.randperm(inputs.shape[0], generator=generator).to(inputs.device)
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[order[start : start + batch_size]]
                with torch.no_grad():
                    target = teacher(x)
                js = js_divergence(student(x), target)
                loss = js + lam * relaxed_size(student, regularizer).to(js.dtype)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                js_sum += float(js.detach()) * x.shape[0]
                js_count += x.shape[0]
                steps += 1
    finally:
        student.noise_generator = None
        student.train_masks = saved_masks
    if recalibrate_bn:
        recalibrate_batchnorm(student, inputs, batch_size)
    student.eval()
    return {
        "distill_js": js_sum / max(js_count, 1),
        "distill_size": float(relaxed_size(student, regularizer).detach()),
        "distill_steps": float(steps),
    }


def recalibrate_batchnorm(model: MaskedClassifier, inputs: Tensor, batch_size: int) -> None:
    """Recompute every BatchNorm's running statistics on ``inputs``, masks deterministic.

    The statistics become the plain average over the batches (``momentum=None``).

    Args:
        model: The masked network (its running statistics are replaced in place).
        inputs: Images ``(N, C, H, W)``; moved to the model's device and floating dtype.
        batch_size: Images per forward pass.
    """
    inputs = to_module(inputs, model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    saved_masks, model.train_masks = model.train_masks, "deterministic"
    try:
        with torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                model(inputs[start : start + batch_size])
    finally:
        model.train_masks = saved_masks
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


class FedMorph(SubNetworkAlgorithm):
    """FedMorph: morph a smaller sub-network each round by distillation with soft masks.

    The global model must be a masked network (e.g.
    :class:`~fedlightning.models.masked.MaskedResNet8`); its mask logits decide the
    sub-network every client trains. Defaults are the paper's for ResNet8 / MNIST (appendix
    B.2, table 3): distil every 10 rounds for 2 epochs, lr 0.01, batch 50, ``lam`` 1.6e-6 on
    the parameter count, on the test images without labels.

    Args:
        distill_data: Unlabeled images to distil on; default: the datamodule's test images,
            as in the paper ("the knowledge distillation dataset as the test dataset without
            label information").
        distill_samples: Use a seeded random subset of this many distillation images.
        distill_every: Distil every this many rounds (training trick 1), >= 1.
        distill_epochs: Epochs per distillation, >= 1.
        distill_lr: Distillation SGD learning rate.
        distill_batch_size: Distillation batch size.
        lam: Weight of the relaxed size (``lambda`` of eq. 5), >= 0.
        regularizer: ``"params"`` or ``"flops"``.
        momentum: Distillation SGD momentum.
        weight_decay: Distillation SGD weight decay.
        recalibrate_bn: After each distillation, recompute the BatchNorm statistics with the
            deterministic masks (see :func:`distill`); off by default, as in the paper.
        distill_masks: The student's masks while distilling: ``"noisy"`` (eq. 6, the
            paper) or ``"straight_through"`` (the exact sub-network forward, a sigmoid
            gradient for the logits; see :func:`distill`).
        mask_lr: Distillation learning rate of the mask logits; default ``distill_lr``.
        init_keep_ratio: Before the first round, shift every group's initial mask logits
            so that exactly this share of its channels is kept
            (:func:`~fedlightning.models.masked.morph.shift_masks_to_keep`); default: keep
            what the logits' random initialisation keeps.
        uplink: Codec for client updates, e.g. ``TopK(0.1)``.
        downlink: Codec for the sub-network weights.

    Raises:
        ValueError: For a setting outside what is allowed; the message names it.

    Placement: the distillation images are moved once, in :meth:`setup`, to the global
    model's device and floating dtype, and the teacher is cut there, so distillation runs
    where the trainer put the model (float32 under mixed precision, without autocast;
    bfloat16, optimizer included, under ``precision="bf16-true"``). Batch order and mask
    noise come from a CPU generator, so a GPU run draws what a CPU run draws.

    Example:
        >>> from fedlightning.codecs import TopK
        >>> algorithm = FedMorph(uplink=TopK(0.1), distill_every=10, lam=1.6e-6)

    References:
        Seed 004, Algorithm 1, eq. (4)-(7), section 5.1 and appendix B.2.
    """

    server_attributes: ClassVar[tuple[str, ...]] = ("distill_data", "_inputs", "layer_history")

    def __init__(
        self,
        *,
        distill_data: Tensor | None = None,
        distill_samples: int | None = None,
        distill_every: int = 10,
        distill_epochs: int = 2,
        distill_lr: float = 0.01,
        distill_batch_size: int = 50,
        lam: float = 1.6e-6,
        regularizer: str = "params",
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        recalibrate_bn: bool = False,
        distill_masks: str = "noisy",
        mask_lr: float | None = None,
        init_keep_ratio: float | None = None,
        uplink: Codec | None = None,
        downlink: Codec | None = None,
    ) -> None:
        for name, value in (
            ("distill_every", distill_every),
            ("distill_epochs", distill_epochs),
            ("distill_batch_size", distill_batch_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if distill_samples is not None and (
            not isinstance(distill_samples, int) or distill_samples < 1
        ):
            raise ValueError(
                f"distill_samples must be None or an integer >= 1, got "
                f"distill_samples={distill_samples!r}"
            )
        if not distill_lr > 0:
            raise ValueError(f"distill_lr must be > 0, got distill_lr={distill_lr!r}")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got lam={lam!r}")
        if regularizer not in ("params", "flops"):
            raise ValueError(
                f"regularizer must be 'params' or 'flops', got regularizer={regularizer!r}"
            )
        if distill_masks not in DISTILL_MASKS:
            raise ValueError(
                f"distill_masks must be one of {DISTILL_MASKS}, got distill_masks={distill_masks!r}"
            )
        if mask_lr is not None and not mask_lr > 0:
            raise ValueError(f"mask_lr must be None or > 0, got mask_lr={mask_lr!r}")
        if init_keep_ratio is not None and not 0.0 < init_keep_ratio <= 1.0:
            raise ValueError(
                "init_keep_ratio must be None or in (0, 1], got "
                f"init_keep_ratio={init_keep_ratio!r}"
            )
        if distill_data is not None and (distill_data.ndim != 4 or distill_data.shape[0] == 0):
            raise ValueError(
                "distill_data must be a non-empty (N, C, H, W) tensor, got shape "
                f"{tuple(distill_data.shape)}"
            )
        super().__init__(uplink=uplink, downlink=downlink)
        self.distill_data = distill_data
        self.distill_samples = distill_samples
        self.distill_every = distill_every
        self.distill_epochs = distill_epochs
        self.distill_lr = float(distill_lr)
        self.distill_batch_size = distill_batch_size
        self.lam = float(lam)
        self.regularizer = regularizer
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.recalibrate_bn = bool(recalibrate_bn)
        self.distill_masks = distill_masks
        self.mask_lr = None if mask_lr is None else float(mask_lr)
        self.init_keep_ratio = None if init_keep_ratio is None else float(init_keep_ratio)
        self.layer_history: list[dict[str, float]] = []
        self._inputs: Tensor | None = None

    @override
    def setup(
        self, server: ServerContext, model: LightningModule, datamodule: FederatedDataModule
    ) -> None:
        super().setup(server, model, datamodule)
        inputs = self.distill_data
        if inputs is None:
            inputs = torch.cat([batch[0] for batch in datamodule.test_loader()])
        if self.distill_samples is not None and self.distill_samples < inputs.shape[0]:
            gen = torch.Generator().manual_seed(server.seed_for(0, _STREAM_SUBSET))
            subset = torch.randperm(inputs.shape[0], generator=gen)[: self.distill_samples]
            inputs = inputs[subset.to(inputs.device)]
        # Server-side data follows the global model (already placed by the trainer): its
        # device and floating dtype, so distillation works on a GPU and in float64.
        self._inputs = to_module(inputs, model)
        if not self.server.resuming:  # a resumed run's masks and history come from its checkpoint
            if self.init_keep_ratio is not None:
                shift_masks_to_keep(self.model, self.init_keep_ratio)
            self._record_layers(0)

    @property
    def distill_inputs(self) -> Tensor:
        """The unlabeled images distillation runs on, where the global model is (after setup)."""
        if self._inputs is None:
            raise RuntimeError(f"{type(self).__name__} is not set up: call trainer.fit first")
        return self._inputs

    @override
    def kept(self, round: int, client: int) -> Kept:
        return kept_from_masks(self.model)

    def layer_ratios(self) -> dict[str, float]:
        """Share of the server network's channels the masks keep per group (Figure 3)."""
        return {
            g: float(idx.numel()) / self.model.widths[g]
            for g, idx in kept_from_masks(self.model).items()
        }

    def _record_layers(self, round: int) -> None:
        self.layer_history.append({"round": float(round), **self.layer_ratios()})

    @override
    def on_round_end(self, round: int) -> None:
        """Every ``distill_every`` rounds: distil the aggregated sub-network, re-morph."""
        if round % self.distill_every != 0:
            return
        teacher = cut(self.model, self.kept_for(round, -1))
        gen = torch.Generator().manual_seed(self.server.seed_for(round, _STREAM_DISTILL))
        metrics = distill(
            self.model,
            teacher,
            self.distill_inputs,
            epochs=self.distill_epochs,
            batch_size=self.distill_batch_size,
            lr=self.distill_lr,
            lam=self.lam,
            regularizer=self.regularizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            generator=gen,
            recalibrate_bn=self.recalibrate_bn,
            masks=self.distill_masks,
            mask_lr=self.mask_lr,
        )
        self._record_layers(round)
        self.server.log(metrics)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "layer_history": [dict(h) for h in self.layer_history]}

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.layer_history = [dict(h) for h in state.get("layer_history", [])]


class FedMorphProx(FedMorph):
    """FedMorph whose clients add FedProx's proximal term ``mu / 2 * ||w - w_received||^2``.

    Args:
        mu: Proximal coefficient, >= 0 (paper: 1e-2 for CIFAR-10).
        **kwargs: :class:`FedMorph`'s arguments.

    Raises:
        ValueError: If ``mu`` is negative.

    References:
        Seed 004, section 5.5; T. Li et al., "Federated Optimization in Heterogeneous
        Networks", MLSys 2020.
    """

    def __init__(self, mu: float = 0.01, **kwargs: Any) -> None:
        if not mu >= 0:
            raise ValueError(f"FedMorphProx mu must be >= 0, got mu={mu!r}")
        super().__init__(**kwargs)
        self.mu = float(mu)

    training_loss = FedProx.training_loss
