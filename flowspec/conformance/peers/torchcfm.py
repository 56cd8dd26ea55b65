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

torchcfm imports POT (``ot``) at import time; install both with
``pip install --no-deps torchcfm`` and ``pip install pot`` (see docs/conformance.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import schedules as fs_schedules
from ._torch import tensor

__all__ = ["TorchCFM", "adapters"]


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


def adapters() -> list[TorchCFM]:
    """The three flow matchers of the issue (TargetConditionalFlowMatcher also with sigma = 0.1)."""
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
    ]
