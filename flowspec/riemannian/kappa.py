r"""The schedule :math:`\kappa_t` of a geodesic conditional path, taken from a flowspec schedule.

Chen and Lipman (2024, Sec. 3.2) build the conditional flow from a scheduler
:math:`\kappa(t)`, monotonically decreasing with :math:`\kappa(0) = 1` and
:math:`\kappa(1) = 0`, through :math:`d(x_t, x_1) = \kappa(t)\, d(x_0, x_1)`. For the
geodesic premetric the flow is :math:`x_t = \exp_{x_1}(\kappa_t \log_{x_1} x_0)`.

flowspec takes :math:`\kappa_t = \sigma_t` of one of its schedules. In Euclidean space
the geodesic path is then :math:`x_t = (1 - \sigma_t) x_1 + \sigma_t x_0`: for the
schedules with :math:`\alpha_t + \sigma_t = 1` (``CondOT(sigma_min=0)``,
``Polynomial(n)``) it *is* the Gaussian path of that schedule, so the same schedule
object means the same path on the flat manifold and its geodesic generalisation on a
curved one. (Not :math:`1 - \sigma_t`: that would start the path at the data.)
Any schedule with :math:`\sigma_0 = 1` and :math:`\sigma_1 = 0` is accepted
(``Cosine`` and ``LinearVP`` too; there :math:`\alpha_t` is simply not used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import validation as _xp
from ..schedules import Schedule

__all__ = ["check_kappa_schedule", "kappa"]

Array = Any


def check_kappa_schedule(schedule: Any) -> Schedule:
    r"""``schedule`` must be a flowspec Schedule with :math:`\sigma_0 = 1` and :math:`\sigma_1 = 0`.

    The endpoints are evaluated in float64 on the host and compared within the
    rounding of the schedule's own formula (4 ulps of 1): ``Cosine`` gives
    :math:`\sigma_1 = \cos(\pi/2) \approx 6 \cdot 10^{-17}`.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"`schedule` must be a flowspec Schedule whose sigma_t serves as kappa_t "
            f"(e.g. fs.CondOT()), got {_xp.describe(schedule)}"
        )
    ends = schedule(np.array([0.0, 1.0])).sigma
    tol = 4.0 * np.finfo(np.float64).eps
    if not (abs(ends[0] - 1.0) <= tol and abs(ends[1]) <= tol):
        raise ValueError(
            f"`schedule` must have sigma_0 = 1 and sigma_1 = 0 to serve as kappa_t "
            f"(the path must start at x0 and end at x1), got sigma_0 = {ends[0]!r} and "
            f"sigma_1 = {ends[1]!r} for {schedule!r}"
        )
    return schedule


def kappa(schedule: Schedule, t: Array) -> tuple[Array, Array]:
    r"""``(kappa_t, d kappa_t / dt) = (sigma_t, d sigma_t / dt)`` of ``schedule`` at times ``t``.

    ``t`` is an array (already validated by the caller); the results have its shape.
    """
    c = schedule(t)
    return c.sigma, c.d_sigma
