"""The prior work's Phase I detector: a one-class SVM whose size is its support vectors.

Training uses scikit-learn's :class:`~sklearn.svm.OneClassSVM` (RBF kernel, ``nu = 0.1``).
What a client sends to its peers is what is needed to evaluate the decision function
elsewhere: the support vectors, their dual coefficients, the offset and the kernel width.
The receiving side evaluates ``sum_k alpha_k exp(-gamma |x - sv_k|^2) + b`` in batch with
torch, so the message, not the fitted scikit-learn object, is the model.

Support vectors are training samples. For 8-bit images scaled to [0, 1] (Fashion-MNIST)
they travel losslessly as one byte per pixel (``support_vector_bits=8``, the default);
``support_vector_bits=32`` sends them as float32. The model's size is therefore
proportional to the local dataset, which is the dependence seed 000 removes by switching to
a small autoencoder (Table 1: "proportional to D_i").

References:
    B. Schölkopf et al., "Support vector method for novelty detection", NIPS 1999;
    M. Nardi et al., "Anomaly detection through unsupervised federated learning",
    arXiv:2209.04184 (the prior work); seed 000, Section 4.3 and Table 4.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from fedlightning.messages import Message

__all__ = ["OneClassSVMDetector"]

_GammaSpec = float | Literal["scale", "auto"]


class OneClassSVMDetector:
    """RBF one-class SVM that knows its size in bytes and can travel as a :class:`Message`.

    Args:
        nu: Upper bound on the share of training outliers and lower bound on the share of
            support vectors, in (0, 1]. Seed 000's prior work uses 0.1.
        gamma: RBF width: a positive float, ``"scale"`` (1 / (D * Var[x]), scikit-learn's
            default) or ``"auto"`` (1 / D).
        support_vector_bits: 8 to send support vectors as bytes (lossless for 8-bit images
            in [0, 1]) or 32 to send them as float32.

    Raises:
        ValueError: On a parameter outside the ranges above.

    Example:
        >>> import torch
        >>> det = OneClassSVMDetector(nu=0.1).fit(torch.rand(50, 1, 4, 4))
        >>> det.inlier_mask(torch.rand(3, 1, 4, 4)).shape
        torch.Size([3])
    """

    def __init__(
        self, *, nu: float = 0.1, gamma: _GammaSpec = "scale", support_vector_bits: int = 8
    ) -> None:
        if not 0.0 < nu <= 1.0:
            raise ValueError(f"nu must be in (0, 1], got nu={nu}")
        if isinstance(gamma, str):
            if gamma not in ("scale", "auto"):
                raise ValueError(f"gamma must be > 0, 'scale' or 'auto', got gamma={gamma!r}")
        elif not gamma > 0:
            raise ValueError(f"gamma must be > 0, 'scale' or 'auto', got gamma={gamma!r}")
        if support_vector_bits not in (8, 32):
            raise ValueError(
                "support_vector_bits must be 8 or 32, got "
                f"support_vector_bits={support_vector_bits}"
            )
        self.nu = float(nu)
        self.gamma = gamma
        self.support_vector_bits = int(support_vector_bits)
        self.support_vectors: Tensor | None = None
        self.dual_coef: Tensor | None = None
        self.intercept: float = 0.0
        self.gamma_value: float = 0.0
        self.sample_shape: tuple[int, ...] = ()

    # ------------------------------------------------------------------ training
    def fit(self, x: Tensor, seed: int = 0) -> OneClassSVMDetector:
        """Fit on unlabeled samples.

        Args:
            x: Samples of shape ``(N, ...)`` with values in [0, 1] when
                ``support_vector_bits=8``.
            seed: Unused (libsvm's solver is deterministic); accepted for the detector
                protocol.

        Returns:
            ``self``.

        Raises:
            ValueError: If ``x`` is empty.
        """
        from sklearn.svm import OneClassSVM

        if x.shape[0] < 1:
            raise ValueError("OneClassSVMDetector.fit needs at least one sample, got 0")
        flat = x.detach().cpu().reshape(x.shape[0], -1).to(torch.float64).numpy()
        svm = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma)
        svm.fit(flat)
        self.sample_shape = tuple(int(s) for s in x.shape[1:])
        self.gamma_value = float(svm._gamma)
        sv = torch.from_numpy(np.asarray(svm.support_vectors_, dtype=np.float32))
        self.support_vectors = self._quantize(sv)
        self.dual_coef = torch.from_numpy(np.asarray(svm.dual_coef_[0], dtype=np.float32))
        self.intercept = float(svm.intercept_[0])
        return self

    def _quantize(self, sv: Tensor) -> Tensor:
        if self.support_vector_bits == 32:
            return sv
        return (sv * 255.0).round().clamp(0, 255).to(torch.uint8)

    def _sv_float(self) -> Tensor:
        sv = self._fitted_sv()
        return sv.to(torch.float32) / 255.0 if sv.dtype == torch.uint8 else sv

    def _fitted_sv(self) -> Tensor:
        if self.support_vectors is None or self.dual_coef is None:
            raise RuntimeError("OneClassSVMDetector is not fitted: call fit() first")
        return self.support_vectors

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def decision_function(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """Signed distance to the boundary: ``>= 0`` inside (inlier), ``< 0`` outside.

        Args:
            x: Samples of shape ``(N, ...)``.
            batch_size: Samples per kernel block.

        Returns:
            Values of shape ``(N,)`` (float32).
        """
        sv = self._sv_float().to(torch.float64)
        coef = self.dual_coef.to(torch.float64)  # type: ignore[union-attr]
        out = []
        for chunk in x.detach().cpu().reshape(x.shape[0], -1).split(batch_size):
            d2 = torch.cdist(chunk.to(torch.float64), sv).square_()
            out.append(torch.exp(-self.gamma_value * d2) @ coef + self.intercept)
        return torch.cat(out).to(torch.float32) if out else torch.empty(0)

    def inlier_mask(self, x: Tensor) -> Tensor:
        """Whether each sample is classified as an inlier (decision function >= 0)."""
        return self.decision_function(x) >= 0

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Higher for more anomalous samples: minus the decision function."""
        return -self.decision_function(x)

    # ------------------------------------------------------------------ wire format
    @property
    def num_support_vectors(self) -> int:
        """Number of support vectors of the fitted model."""
        return int(self._fitted_sv().shape[0])

    def to_message(self) -> Message:
        """The model as sent to a peer: support vectors, dual coefficients, offset, width.

        Returns:
            A message whose ``nbytes`` is the model's size on the wire.
        """
        sv = self._fitted_sv()
        assert self.dual_coef is not None
        params = torch.tensor([self.intercept, self.gamma_value], dtype=torch.float32)
        return Message(
            extras={"support_vectors": sv, "dual_coef": self.dual_coef, "params": params}
        )

    @property
    def nbytes(self) -> int:
        """Size in bytes of :meth:`to_message`."""
        return self.to_message().nbytes

    def from_message(self, message: Message) -> OneClassSVMDetector:
        """Rebuild a peer's detector from its message (this detector's settings are kept).

        Args:
            message: What :meth:`to_message` produced.

        Returns:
            A new fitted detector.

        Raises:
            ValueError: If the message lacks a field.
        """
        missing = {"support_vectors", "dual_coef", "params"} - set(message.extras)
        if missing:
            raise ValueError(f"OC-SVM message lacks {sorted(missing)}")
        other = OneClassSVMDetector(
            nu=self.nu, gamma=self.gamma, support_vector_bits=self.support_vector_bits
        )
        other.support_vectors = message.extras["support_vectors"]
        other.dual_coef = message.extras["dual_coef"]
        other.intercept = float(message.extras["params"][0])
        other.gamma_value = float(message.extras["params"][1])
        return other

    def __repr__(self) -> str:
        return (
            f"OneClassSVMDetector(nu={self.nu}, gamma={self.gamma!r}, "
            f"support_vector_bits={self.support_vector_bits})"
        )
