"""Adapters for ``torchcfm`` (atong01/conditional-flow-matching).

========================================================  ============================
torchcfm class                                            flowspec schedule
========================================================  ============================
``ConditionalFlowMatcher(sigma=0)`` (I-CFM)               ``CondOT(sigma_min=0.0)``
``TargetConditionalFlowMatcher(sigma=0)`` (Lipman FM)     ``CondOT(sigma_min=0.0)``
``TargetConditionalFlowMatcher(sigma=0.1)``               ``CondOT(sigma_min=0.1)``
``VariancePreservingConditionalFlowMatcher(sigma=0)``     ``Cosine()`` (its "VP" is the
                                                          trigonometric interpolant)
========================================================  ============================

``sample`` and ``target`` go through the public training call
``sample_location_and_conditional_flow(x0, x1, t)`` with the noise epsilon set to
``x0`` (torchcfm draws it internally; with sigma = 0 it does not enter). ``velocity``
is ``compute_conditional_flow(x0, x1, t, x)`` for ``TargetConditionalFlowMatcher``,
whose field is in x-form (eq. 21); the other two define the field from x0 and x1
only, so they have no velocity. torchcfm has no schedule object, log-density, loss
function or sampler of its own: those capabilities are reported missing.

Coupled paths and couplings (sigma > 0; the kit's ``coupled_*``, ``plan`` and
``pairs`` methods, see :mod:`flowspec.conformance.adapter`):

===============================================================  ==========================================
torchcfm class                                                   flowspec claim
===============================================================  ==========================================
``ConditionalFlowMatcher(sigma=0.1)`` (I-CFM)                    ``CondOT()``, ``ConstantNoise(0.1)``,
                                                                 independent
``ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)``       ``CondOT()``, ``ConstantNoise(0.1)``,
                                                                 exact OT
``SchrodingerBridgeConditionalFlowMatcher(sigma=1)``             ``CondOT()``, ``BrownianBridgeNoise(1)``,
(default ``ot_method="exact"``)                                  entropic, reg = 2 sigma^2
``SchrodingerBridgeConditionalFlowMatcher(sigma=1,               the same
ot_method="sinkhorn")``
``SchrodingerBridgeConditionalFlowMatcher(sigma=0.1,             ``BrownianBridgeNoise(0.1)``, entropic,
ot_method="sinkhorn")``                                          reg = 0.02
``VariancePreservingConditionalFlowMatcher(sigma=0.1)``          ``Cosine()``, ``ConstantNoise(0.1)``,
                                                                 independent
===============================================================  ==========================================

``coupled_sample``/``coupled_target`` call ``ConditionalFlowMatcher.sample_location_and_
conditional_flow`` (the base class's: the path without re-pairing) with the noise
set to ``eps``; ``coupled_velocity`` is ``compute_conditional_flow(x0, x1, t, x)``;
``plan`` is ``ot_sampler.get_map`` and ``pairs`` is ``ot_sampler.sample_plan``, what a
training step of these matchers does before the path.

torchcfm imports POT (``ot``) at import time; install both with
``pip install --no-deps torchcfm`` and ``pip install pot`` (see docs/conformance.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import schedules as fs_schedules
from ._torch import tensor

__all__ = ["TorchCFM", "TorchCFMCoupled", "adapters"]


class TorchCFM:
    """A torchcfm flow matcher as a conformance adapter."""

    def __init__(self, matcher: Any, schedule: fs_schedules.Schedule, label: str) -> None:
        self.matcher = matcher
        self.schedule = schedule
        self.name = f"torchcfm.{label}"
        if hasattr(type(matcher), "compute_conditional_flow") and type(matcher).__name__ == (
            "TargetConditionalFlowMatcher"
        ):
            self.velocity = self._velocity

    def _train_pair(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> tuple[Any, Any]:
        a0 = tensor(x0)
        # the noise of sample_xt is drawn inside; make it x0 for this call
        self.matcher.sample_noise_like = lambda x: a0
        try:
            _, xt, ut = self.matcher.sample_location_and_conditional_flow(
                a0, tensor(x1), t=tensor(t)
            )
        finally:
            del self.matcher.sample_noise_like
        return xt, ut

    def sample(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self._train_pair(x0, x1, t)[0]

    def target(self, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        return self._train_pair(x0, x1, t)[1]

    def _velocity(self, x: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        a = tensor(x)
        return self.matcher.compute_conditional_flow(a, tensor(x1), tensor(t), a)


class TorchCFMCoupled:
    """A torchcfm flow matcher with sigma > 0 (and its coupling) as a conformance adapter."""

    def __init__(
        self,
        matcher: Any,
        schedule: fs_schedules.Schedule,
        noise: Any,
        coupling: str,
        label: str,
        reg: float | None = None,
    ) -> None:
        self.matcher = matcher
        self.schedule = schedule
        self.noise = noise
        self.coupling = coupling
        if reg is not None:
            self.coupling_reg = reg
        self.name = f"torchcfm.{label}"
        if hasattr(matcher, "ot_sampler"):
            self.plan = self._plan
            self.pairs = self._pairs

    def _train_pair(
        self, x0: np.ndarray, x1: np.ndarray, eps: np.ndarray, t: np.ndarray
    ) -> tuple[Any, Any]:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        e = tensor(eps)
        self.matcher.sample_noise_like = lambda x: e
        try:
            _, xt, ut = ConditionalFlowMatcher.sample_location_and_conditional_flow(
                self.matcher, tensor(x0), tensor(x1), t=tensor(t)
            )
        finally:
            del self.matcher.sample_noise_like
        return xt, ut

    def coupled_sample(self, x0: np.ndarray, x1: np.ndarray, eps: np.ndarray, t: np.ndarray) -> Any:
        return self._train_pair(x0, x1, eps, t)[0]

    def coupled_target(self, x0: np.ndarray, x1: np.ndarray, eps: np.ndarray, t: np.ndarray) -> Any:
        return self._train_pair(x0, x1, eps, t)[1]

    def coupled_velocity(self, x: np.ndarray, x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> Any:
        from torchcfm.conditional_flow_matching import pad_t_like_x

        a = tensor(x)
        tt = pad_t_like_x(tensor(t), a)
        return self.matcher.compute_conditional_flow(tensor(x0), tensor(x1), tt, a)

    def _plan(self, x0: np.ndarray, x1: np.ndarray) -> Any:
        return self.matcher.ot_sampler.get_map(tensor(x0), tensor(x1))

    def _pairs(self, x0: np.ndarray, x1: np.ndarray) -> Any:
        return self.matcher.ot_sampler.sample_plan(tensor(x0), tensor(x1))


def coupled_adapters() -> list[TorchCFMCoupled]:
    """I-CFM, OT-CFM, SB-CFM (exact and Sinkhorn plans) and the trigonometric matcher, sigma > 0."""
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
        SchrodingerBridgeConditionalFlowMatcher,
        VariancePreservingConditionalFlowMatcher,
    )

    from ...coupled_paths import BrownianBridgeNoise, ConstantNoise

    ot = fs_schedules.CondOT(0.0)
    return [
        TorchCFMCoupled(
            ConditionalFlowMatcher(sigma=0.1),
            ot,
            ConstantNoise(0.1),
            "independent",
            "ConditionalFlowMatcher(sigma=0.1)",
        ),
        TorchCFMCoupled(
            ExactOptimalTransportConditionalFlowMatcher(sigma=0.1),
            ot,
            ConstantNoise(0.1),
            "exact",
            "ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)",
        ),
        TorchCFMCoupled(
            SchrodingerBridgeConditionalFlowMatcher(sigma=1.0),
            ot,
            BrownianBridgeNoise(1.0),
            "entropic",
            "SchrodingerBridgeConditionalFlowMatcher(sigma=1.0)",
            reg=2.0,
        ),
        TorchCFMCoupled(
            SchrodingerBridgeConditionalFlowMatcher(sigma=1.0, ot_method="sinkhorn"),
            ot,
            BrownianBridgeNoise(1.0),
            "entropic",
            "SchrodingerBridgeConditionalFlowMatcher(sigma=1.0, ot_method='sinkhorn')",
            reg=2.0,
        ),
        TorchCFMCoupled(
            SchrodingerBridgeConditionalFlowMatcher(sigma=0.1, ot_method="sinkhorn"),
            ot,
            BrownianBridgeNoise(0.1),
            "entropic",
            "SchrodingerBridgeConditionalFlowMatcher(sigma=0.1, ot_method='sinkhorn')",
            reg=0.02,
        ),
        TorchCFMCoupled(
            VariancePreservingConditionalFlowMatcher(sigma=0.1),
            fs_schedules.Cosine(),
            ConstantNoise(0.1),
            "independent",
            "VariancePreservingConditionalFlowMatcher(sigma=0.1)",
        ),
    ]


def adapters() -> list[Any]:
    """The sigma = 0 matchers (TargetConditionalFlowMatcher also with sigma = 0.1), then the coupled ones."""
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        TargetConditionalFlowMatcher,
        VariancePreservingConditionalFlowMatcher,
    )

    return [
        TorchCFM(
            ConditionalFlowMatcher(sigma=0.0),
            fs_schedules.CondOT(0.0),
            "ConditionalFlowMatcher(sigma=0)",
        ),
        TorchCFM(
            TargetConditionalFlowMatcher(sigma=0.0),
            fs_schedules.CondOT(0.0),
            "TargetConditionalFlowMatcher(sigma=0)",
        ),
        TorchCFM(
            TargetConditionalFlowMatcher(sigma=0.1),
            fs_schedules.CondOT(0.1),
            "TargetConditionalFlowMatcher(sigma=0.1)",
        ),
        TorchCFM(
            VariancePreservingConditionalFlowMatcher(sigma=0.0),
            fs_schedules.Cosine(),
            "VariancePreservingConditionalFlowMatcher(sigma=0)",
        ),
        *coupled_adapters(),
    ]
