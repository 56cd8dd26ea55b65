r"""Kappa schedules of the mixture paths of Discrete Flow Matching.

A kappa schedule :math:`\kappa_t` is the probability that a token of the mixture path
(Gat et al., 2024, Sec. 2.2) has already jumped from its source value to its data
value at time t: :math:`\kappa_0 = 0`, :math:`\kappa_1 = 1`, non-decreasing. Time runs
from :math:`t = 0` (source) to :math:`t = 1` (data), as in the continuous core.

Every schedule is a frozen dataclass. Calling it on times returns
:class:`KappaCoefficients` ``(kappa, d_kappa, complement)`` with the analytic
derivative and the complement :math:`1 - \kappa_t` computed in a form that does not
cancel near t = 1 (``-expm1(n log t)``, ``sin`` of the complementary angle), so the
jump coefficient :math:`\dot\kappa_t / (1 - \kappa_t)` (:meth:`KappaSchedule.jump`) is
accurate right up to t = 1, where it is infinite for every schedule with
:math:`\kappa_1 = 1` (the integral of the coefficient over [0, 1) is
:math:`-\log(1 - \kappa_t) \to \infty`): the functions return the ``inf`` the
arithmetic gives there.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from .. import validation
from ..typing import Array

__all__ = ["CATALOGUE", "Cosine", "KappaCoefficients", "KappaSchedule", "Linear", "Polynomial"]


class KappaCoefficients(NamedTuple):
    r"""A kappa schedule at times ``t``: :math:`\kappa_t`, :math:`\dot\kappa_t`, :math:`1-\kappa_t`.

    Each field has the namespace, dtype and shape of the times.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> fd.Linear()(np.array([0.25])).complement.tolist()
    [0.75]
    """

    kappa: Array
    d_kappa: Array
    complement: Array


class KappaSchedule:
    r"""Base class: ``schedule(t) -> KappaCoefficients(kappa, d_kappa, complement)``.

    Subclasses implement ``_coefficients(xp, t)`` with standard Array API functions.
    ``t`` may be a Python real number (evaluated in NumPy float64) or a floating array
    of any shape; host values must lie in [0, 1].

    Examples
    --------
    A new schedule needs kappa, its exact derivative and the complement:

    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> class Square(fd.KappaSchedule):
    ...     def _coefficients(self, xp, t):
    ...         return fd.KappaCoefficients(t * t, 2.0 * t, (1.0 - t) * (1.0 + t))
    >>> Square()(np.array([0.5])).kappa.tolist()
    [0.25]
    """

    def __call__(self, t: Array | float) -> KappaCoefficients:
        if isinstance(t, bool):
            raise TypeError(f"`t` must be a real number or an array, got {validation.describe(t)}")
        if isinstance(t, numbers.Real):
            t = np.asarray(validation.real_number("t", t), dtype=np.float64)
        xp = validation.namespace(t=t)
        validation.check_float(xp, "t", t)
        if array_api_compat.is_numpy_array(t):
            validation.check_host_times("t", np.asarray(t), 0.0, 1.0)
        return self._coefficients(xp, t)

    def jump(self, t: Array | float) -> Array:
        r"""The jump coefficient :math:`\dot\kappa_t / (1 - \kappa_t)` of the conditional rate.

        Finite on [0, 1); ``inf`` at t = 1 (as the arithmetic gives, ``d_kappa / 0``).

        Examples
        --------
        >>> import numpy as np
        >>> from flowspec import discrete as fd
        >>> fd.Linear().jump(np.array([0.0, 0.5])).tolist()
        [1.0, 2.0]
        """
        c = self(t)
        xp = array_api_compat.array_namespace(c.kappa)
        return _divide(xp, c.d_kappa, c.complement)

    def _coefficients(self, xp: Any, t: Array) -> KappaCoefficients:  # pragma: no cover
        raise NotImplementedError


def _divide(xp: Any, num: Array, den: Array) -> Array:
    """``num / den`` with ``num / 0 = +-inf`` and ``0 / 0 = nan`` (no NumPy warning)."""
    zero = den == 0.0
    safe = xp.where(zero, xp.ones_like(den), den)
    inf = xp.full_like(num, math.inf)
    limit = xp.where(num > 0.0, inf, xp.where(num < 0.0, -inf, xp.full_like(num, math.nan)))
    return xp.where(zero, limit, num / safe)


@dataclass(frozen=True)
class Linear(KappaSchedule):
    r"""The linear schedule :math:`\kappa_t = t` (flow_matching's ``CondOTScheduler``).

    :math:`\dot\kappa_t = 1`, :math:`1 - \kappa_t = 1 - t` (exact for t >= 1/2), so the
    jump coefficient is :math:`1 / (1 - t)`.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> fd.Linear()(np.array([0.3])).d_kappa.tolist()
    [1.0]
    """

    def _coefficients(self, xp: Any, t: Array) -> KappaCoefficients:
        return KappaCoefficients(kappa=t, d_kappa=xp.ones_like(t), complement=1.0 - t)


@dataclass(frozen=True)
class Polynomial(KappaSchedule):
    r"""The polynomial schedule :math:`\kappa_t = t^n` (``PolynomialConvexScheduler(n)``).

    :math:`\dot\kappa_t = n t^{n-1}`, :math:`1 - \kappa_t = -\operatorname{expm1}(n \log t)`
    (no cancellation near t = 1), jump coefficient :math:`n t^{n-1} / (1 - t^n)`.

    Parameters
    ----------
    n : float
        The exponent, > 0. For n < 1, :math:`\dot\kappa_0 = \infty`.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> c = fd.Polynomial(2)(np.array([0.5]))
    >>> c.kappa.tolist(), c.d_kappa.tolist(), c.complement.tolist()
    ([0.25], [1.0], [0.75])
    """

    n: float = 1.0

    def __post_init__(self) -> None:
        n = validation.real_number("n", self.n)
        if not n > 0.0:
            raise ValueError(f"`n` must be > 0, got {n!r}")
        object.__setattr__(self, "n", n)

    def _coefficients(self, xp: Any, t: Array) -> KappaCoefficients:
        n = self.n
        kappa = t**n
        if n == 1.0:
            d_kappa = xp.ones_like(t)
        else:
            d_kappa = n * t ** (n - 1.0)
        # 1 - t^n = -expm1(n log t); log(0) = -inf gives -expm1(-inf) = 1 at t = 0
        zero = t == 0.0
        log_t = xp.log(xp.where(zero, xp.ones_like(t), t))
        complement = xp.where(zero, xp.ones_like(t), -xp.expm1(n * log_t))
        return KappaCoefficients(kappa=kappa, d_kappa=d_kappa, complement=complement)


@dataclass(frozen=True)
class Cosine(KappaSchedule):
    r"""The cosine schedule :math:`\kappa_t = 1 - \cos(\pi t / 2)`.

    :math:`\dot\kappa_t = \tfrac{\pi}{2}\sin(\pi t / 2)`, :math:`1 - \kappa_t =
    \sin(\pi (1 - t) / 2)` (the complementary angle, accurate near t = 1), jump
    coefficient :math:`\tfrac{\pi}{2}\tan(\pi t / 2)`.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec import discrete as fd
    >>> c = fd.Cosine()(np.array([0.0, 1.0]))
    >>> c.kappa.tolist(), c.complement.tolist()
    ([0.0, 1.0], [1.0, 0.0])
    """

    def _coefficients(self, xp: Any, t: Array) -> KappaCoefficients:
        half_pi = math.pi / 2.0
        complement = xp.sin(half_pi * (1.0 - t))
        # kappa = 1 - cos(pi t / 2) = 2 sin^2(pi t / 4) for t < 1/2
        # (no cancellation near t = 0); 1 - complement for t >= 1/2 (exactly 1 at t = 1)
        s = xp.sin((math.pi / 4.0) * t)
        kappa = xp.where(t < 0.5, 2.0 * s * s, 1.0 - complement)
        return KappaCoefficients(
            kappa=kappa, d_kappa=half_pi * xp.sin(half_pi * t), complement=complement
        )


#: The kappa schedules under contract: one instance of each schedule class. The
#: conformance tests of the discrete part iterate over this tuple; a new kappa schedule
#: joins the contract by being added here (as :data:`flowspec.schedules.CATALOGUE` for
#: the Gaussian schedules).
CATALOGUE: tuple[KappaSchedule, ...] = (Linear(), Polynomial(2.0), Cosine())
