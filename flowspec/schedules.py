r"""Schedules :math:`\alpha_t, \sigma_t` of Gaussian conditional paths, with derivatives.

A schedule defines the conditional probability path of the paper (Lipman et al.,
2023, Sec. 4) :math:`p_t(x \mid x_1) = \mathcal N(x \mid \alpha_t x_1, \sigma_t^2 I)`,
i.e. :math:`\mu_t(x_1) = \alpha_t x_1` and :math:`\sigma_t(x_1) = \sigma_t`. Time runs
from :math:`t = 0` (noise) to :math:`t = 1` (data).

Every schedule is a frozen dataclass. Calling it on an array of times returns
:class:`Coefficients` ``(alpha, sigma, d_alpha, d_sigma)`` with the analytic time
derivatives, in the namespace, dtype and shape of ``t``. Formulas are written in the
forms that are exact at the endpoints and do not cancel near them (``expm1``,
``sqrt((1 - t)(1 + t))``, ``sin`` of the complementary angle).

Each class documents its *finite domain*: where on :math:`[0, 1]` every coefficient is
finite (:attr:`Schedule.divergent_at` lists the times where one is infinite) and where
:math:`\sigma_t = 0` so that the path degenerates to a point mass
(:attr:`Schedule.degenerate_at`). At those times the functions return what the
arithmetic gives (``inf``, ``-inf`` or ``nan``); nothing is clipped silently.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import validation
from .typing import Array

__all__ = [
    "CATALOGUE",
    "Coefficients",
    "CondOT",
    "Cosine",
    "LinearVP",
    "Polynomial",
    "Schedule",
    "VarianceExploding",
    "VariancePreserving",
    "bisect_snr_inverse",
]


class Coefficients(NamedTuple):
    r"""The coefficients of a Gaussian path at times ``t``.

    ``x_t = alpha * x1 + sigma * x0`` and ``d/dt x_t = d_alpha * x1 + d_sigma * x0``.
    Each field has the namespace, dtype and shape of the times the schedule was
    called on.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> alpha, sigma, d_alpha, d_sigma = fs.CondOT()(np.array([0.25]))
    >>> alpha.tolist(), sigma.tolist(), d_alpha.tolist(), d_sigma.tolist()
    ([0.25], [0.75], [1.0], [-1.0])
    """

    alpha: Array
    sigma: Array
    d_alpha: Array
    d_sigma: Array


class Schedule:
    r"""Base class: ``schedule(t) -> Coefficients(alpha, sigma, d_alpha, d_sigma)``.

    A schedule is its coefficients :math:`\alpha_t, \sigma_t` and their exact time
    derivatives: the Gaussian conditional path of the paper's Sec. 4 with
    :math:`\mu_t(x_1) = \alpha_t x_1` and :math:`\sigma_t(x_1) = \sigma_t` (eq. 10-11).
    Calling a schedule validates ``t`` (a Python real number, evaluated in NumPy
    float64, or a floating array of any shape; host values must lie in [0, 1]) and
    returns arrays of t's shape.

    A subclass implements :meth:`coefficients` only, with standard Array API functions.
    It is the unvalidated seam that the paths, the marginal and the backends call on a
    time they have already validated and reshaped; :meth:`arrays` is the same with every
    constant broadcast to an array.

    Examples
    --------
    A new schedule needs only its coefficients and their exact derivatives:

    >>> import numpy as np, flowspec as fs
    >>> class Quadratic(fs.Schedule):
    ...     def coefficients(self, xp, t):
    ...         return fs.Coefficients(t * t, 1.0 - t * t, 2.0 * t, -2.0 * t)
    >>> Quadratic()(np.array([0.5])).sigma.tolist()
    [0.75]
    """

    #: Times in [0, 1] where a coefficient is infinite (derivatives diverge).
    divergent_at: tuple[float, ...] = ()
    #: Times in [0, 1] where sigma_t = 0 (the path is a point mass; the x-form
    #: velocity, the score and the log-density are singular there).
    degenerate_at: tuple[float, ...] = ()
    #: Times in [0, 1] where alpha_t = 0 (the path carries no signal: x1 cannot be
    #: recovered from x, and every conversion that divides by alpha_t is singular).
    signal_free_at: tuple[float, ...] = ()

    def __call__(self, t: Array | float) -> Coefficients:
        if isinstance(t, bool):
            raise TypeError(f"`t` must be a real number or an array, got {validation.describe(t)}")
        if isinstance(t, numbers.Real):  # also NumPy scalars, Fraction: as the paths accept
            t = np.asarray(validation.real_number("t", t), dtype=np.float64)
        xp = validation.namespace(t=t)
        validation.check_float(xp, "t", t)
        if array_api_compat.is_numpy_array(t):
            validation.check_host_times("t", t, 0.0, 1.0)
        c = self.arrays(xp, t)
        # no output aliases the input (CondOT's alpha is t itself)
        return Coefficients(*(xp.asarray(v, copy=True) if v is t else v for v in c))

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        r"""The coefficients at an already validated time array ``t`` of namespace ``xp``.

        The one method a subclass implements (paper Sec. 4: :math:`\alpha_t`,
        :math:`\sigma_t` of eq. 10 and their derivatives, the coefficients of the target of eq. 14).
        Each field is an array of t's shape and dtype computed with standard Array API
        functions of ``xp`` only, or a Python float for a coefficient that is constant in
        t (``CondOT``'s derivatives, ``VarianceExploding``'s alpha): that spares the
        paths and the backends an array and a broadcast product. Nothing is validated
        here; :meth:`__call__` is the validated entry.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.CondOT().coefficients(np, np.array([[0.25]])).d_alpha
        1.0
        """
        raise NotImplementedError(f"{type(self).__name__} must implement coefficients(xp, t)")

    def arrays(self, xp: Any, t: Array) -> Coefficients:
        """:meth:`coefficients` with every constant broadcast to an array like ``t``.

        For consumers that need four arrays (reshapes, stacking, kernels); the
        coefficients of the conditional path of eq. 10-11 on an already validated ``t``.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.CondOT().arrays(np, np.array([[0.25], [0.5]])).d_alpha.tolist()
        [[1.0], [1.0]]
        """
        return Coefficients(
            *(xp.full_like(t, v) if isinstance(v, float) else v for v in self.coefficients(xp, t))
        )

    # -- signal-to-noise ratio --------------------------------------------------------
    def snr(self, t: Array | float) -> Array:
        r"""The signal-to-noise ratio :math:`\rho_t = \alpha_t / \sigma_t` of the path of Sec. 4.

        The scale-free time of a Gaussian path (Lipman et al., 2024, Sec. 4.8.2): two
        schedules with the same :math:`\rho` at two times have the same marginal up to
        a scale. ``inf`` where sigma_t = 0 (:attr:`degenerate_at`), 0 where alpha_t = 0
        (:attr:`signal_free_at`). Same ``t`` rule and output shape as calling the schedule.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.CondOT().snr(np.array([0.0, 0.5, 0.75])).tolist()
        [0.0, 1.0, 3.0]
        """
        c = self(t)
        return c.alpha / c.sigma

    def d_snr(self, t: Array | float) -> Array:
        r"""The time derivative :math:`\dot\rho_t = (\dot\alpha_t \sigma_t - \alpha_t \dot\sigma_t)/\sigma_t^2`.

        Evaluated from the analytic coefficients (Sec. 4 of the paper); the numerator
        is a sum of two non-negative terms for every built-in schedule
        (:math:`\dot\alpha_t \ge 0 \ge \dot\sigma_t`), so it does not cancel, and it is
        positive on (0, 1): the SNR is strictly increasing, which is what makes
        :meth:`snr_inverse` well defined. ``inf`` where sigma_t = 0.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.CondOT().d_snr(np.array([0.0, 0.5])).tolist()  # 1 / (1 - t)^2
        [1.0, 4.0]
        """
        c = self(t)
        return (c.d_alpha * c.sigma - c.alpha * c.d_sigma) / (c.sigma * c.sigma)

    def snr_inverse(self, snr: Array | float) -> Array:
        r"""The time :math:`t = \rho^{-1}(\text{snr})` at which the path has this SNR.

        Analytic for the built-in schedules; for a user's schedule the bracketed,
        vectorised bisection :func:`bisect_snr_inverse` (the SNR must be increasing,
        :meth:`d_snr` > 0). ``snr`` is a non-negative number or floating array of any
        shape (``inf`` allowed: the degenerate end). The result has the shape,
        namespace and dtype of ``snr`` and lies in [0, 1]: a ratio outside
        ``[snr(0), snr(1)]`` (by round-off, say) gives the nearer end. Used by the
        scale-time schedule change (Lipman et al., 2024, Sec. 4.8.2).

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.CondOT().snr_inverse(np.array([0.0, 1.0, 3.0, np.inf])).tolist()
        [0.0, 0.5, 0.75, 1.0]
        """
        if isinstance(snr, bool):
            raise TypeError(
                f"`snr` must be a real number or an array, got {validation.describe(snr)}"
            )
        if isinstance(snr, (int, float)):
            if math.isnan(snr) or snr < 0:
                raise ValueError(f"`snr` must be a non-negative ratio, got {snr!r}")
            snr = np.asarray(float(snr), dtype=np.float64)
        xp = validation.namespace(snr=snr)
        validation.check_float(xp, "snr", snr)
        if isinstance(snr, np.ndarray):
            if np.any(np.isnan(snr)) or np.any(snr < 0):
                raise ValueError(f"`snr` must hold non-negative ratios, got {snr!r}")
        t = self.time_at_snr(xp, snr)
        return xp.minimum(xp.maximum(t, xp.zeros_like(t)), xp.ones_like(t))

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        r"""The inverse of the SNR at an already validated array ``snr`` of namespace ``xp``.

        The hook a subclass overrides with a closed form (every built-in schedule does);
        the default is the bisection :func:`bisect_snr_inverse` (Lipman et al., 2024,
        Sec. 4.8.2). Nothing is validated or clipped here; :meth:`snr_inverse` is the
        validated entry.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> fs.Cosine().time_at_snr(np, np.array([1.0])).round(12).tolist()
        [0.5]
        """
        return _bisect(self, xp, snr)


#: Iterations of the bisection: about 10 geometric halvings of log t take the bracket
#: from [tiny, 1] to a factor of 2, then at most 53 arithmetic ones reach adjacent
#: float64 numbers (24 for float32); the rest is margin (a converged bracket stays put).
_BISECTION_STEPS = 80


def _bisect(schedule: Schedule, xp: Any, snr: Array) -> Array:
    tiny = float(xp.finfo(snr.dtype).smallest_normal)
    lo = xp.full_like(snr, tiny)
    hi = xp.ones_like(snr)
    for _ in range(_BISECTION_STEPS):
        geometric = hi > 2.0 * lo
        mid = xp.where(geometric, xp.sqrt(lo) * xp.sqrt(hi), lo + 0.5 * (hi - lo))
        c = schedule.arrays(xp, mid)
        below = c.alpha < snr * c.sigma  # snr(mid) < snr, without dividing by sigma
        lo = xp.where(below, mid, lo)
        hi = xp.where(below, hi, mid)
    c0 = schedule.arrays(xp, xp.zeros_like(snr))
    at_zero = c0.alpha >= snr * c0.sigma  # snr <= snr(0): the bracket's lower end
    return xp.where(at_zero, xp.zeros_like(snr), hi)


def bisect_snr_inverse(schedule: Schedule, snr: Array) -> Array:
    r"""The inverse of an increasing SNR :math:`\rho_t = \alpha_t/\sigma_t` by bisection (Lipman et al., 2024, Sec. 4.8.2).

    The default :meth:`Schedule.snr_inverse` of a user's schedule, and the numerical
    check of the built-in closed forms. Vectorised over ``snr`` (any shape) with a
    fixed number of Array API steps (no value is read: it traces under ``jax.jit``).
    The bracket [0, 1] is halved geometrically (in log t) while its ends differ by
    more than a factor of 2, then arithmetically, which reaches adjacent floating
    numbers everywhere in (0, 1], including t ~ 1e-300; the comparison
    :math:`\alpha_t < \rho\,\sigma_t` never divides. Returns the upper end of the final
    bracket: the smallest float t with :math:`\rho_t \ge` ``snr``, up to the rounding
    of the schedule's own coefficients. Requires :math:`\rho` increasing on [0, 1]
    (:meth:`Schedule.d_snr` > 0); a ratio outside ``[snr(0), snr(1)]`` gives 0 or 1.

    Parameters
    ----------
    schedule : Schedule
    snr : array
        Non-negative ratios (``inf`` allowed), floating.

    Returns
    -------
    array, like ``snr``

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> t = fs.schedules.bisect_snr_inverse(fs.Cosine(), np.array([0.0, 1.0, np.inf]))
    >>> np.round(t, 15).tolist()
    [0.0, 0.5, 1.0]
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"`schedule` must be a flowspec Schedule, got {validation.describe(schedule)}"
        )
    xp = validation.namespace(snr=snr)
    validation.check_float(xp, "snr", snr)
    return _bisect(schedule, xp, snr)


def _validated(
    obj: Any,
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = True,
) -> None:
    """Validate a constructor argument and store it as a float on a frozen dataclass."""
    v = validation.real_number(name, value)
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else repr(lo)
        hi_s = "inf" if hi is None else repr(hi)
        raise ValueError(f"`{name}` must lie in {left}{lo_s}, {hi_s}{right}, got {v!r}")
    object.__setattr__(obj, name, v)


@dataclass(frozen=True)
class CondOT(Schedule):
    r"""The optimal-transport conditional path (paper eq. 20).

    .. math:: \alpha_t = t, \qquad \sigma_t = 1 - (1 - \sigma_{\min}) t.

    Finite on all of [0, 1]. With ``sigma_min = 0`` the path degenerates at t = 1
    (sigma_1 = 0): the x-form field of eq. 21 is 0/0 there while the x0-form target
    of eq. 23, ``x1 - (1 - sigma_min) x0``, stays finite.

    Parameters
    ----------
    sigma_min : float
        Standard deviation at t = 1, in [0, 1).

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.CondOT(sigma_min=0.1)(np.array([0.0, 1.0]))
    >>> c.alpha.tolist(), c.sigma.round(12).tolist(), c.d_sigma.tolist()
    ([0.0, 1.0], [1.0, 0.1], [-0.9, -0.9])
    """

    sigma_min: float = 0.0

    def __post_init__(self) -> None:
        _validated(self, "sigma_min", self.sigma_min, lo=0.0, hi=1.0)

    @property
    def degenerate_at(self) -> tuple[float, ...]:  # type: ignore[override]
        return (1.0,) if self.sigma_min == 0.0 else ()

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        # (1 - t) is exact for t >= 1/2, so this form does not cancel near t = 1
        sigma = 1.0 - t if self.sigma_min == 0.0 else (1.0 - t) + self.sigma_min * t
        return Coefficients(alpha=t, sigma=sigma, d_alpha=1.0, d_sigma=self.sigma_min - 1.0)

    signal_free_at = (0.0,)

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho = t / (1 - k t), k = 1 - sigma_min  =>  t = rho / (1 + k rho); t = 1/k at inf
        k = 1.0 - self.sigma_min
        finite = xp.isfinite(snr)
        safe = xp.where(finite, snr, xp.zeros_like(snr))
        return xp.where(finite, safe / (1.0 + k * safe), xp.full_like(snr, 1.0 / k))


@dataclass(frozen=True)
class VariancePreserving(Schedule):
    r"""The variance-preserving diffusion path (paper eq. 18-19 and App. E).

    With :math:`s = 1 - t`, :math:`\beta(s) = \beta_{\min} + s (\beta_{\max} - \beta_{\min})`
    and :math:`T(s) = \int_0^s \beta = s \beta_{\min} + \tfrac{s^2}{2}(\beta_{\max} - \beta_{\min})`:

    .. math::
        \alpha_t = e^{-T(1-t)/2}, \quad \sigma_t = \sqrt{1 - e^{-T(1-t)}}, \quad
        \dot\alpha_t = \tfrac12 \beta(1-t)\, \alpha_t, \quad
        \dot\sigma_t = -\frac{\beta(1-t)\, \alpha_t^2}{2 \sigma_t}.

    sigma is computed as ``sqrt(-expm1(-T))``, accurate near t = 1. At t = 1,
    sigma = 0 and ``d_sigma = -inf``: the finite domain is [0, 1). At t = 0 the path
    is only approximately N(0, I) (alpha_0 = exp(-T(1)/2) ~ 6.6e-3 for the defaults).

    Parameters
    ----------
    beta_min : float
        The noise rate at diffusion time 0 (the data end, t = 1), > 0 (paper: 0.1).
    beta_max : float
        The noise rate at diffusion time 1 (the noise end, t = 0), > beta_min
        (paper: 20).

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> with np.errstate(divide="ignore"):  # d_sigma is -inf at t = 1, as documented
    ...     c = fs.VariancePreserving()(np.array([0.0, 1.0]))
    >>> np.round(c.alpha, 5).tolist(), c.sigma.tolist()[1], c.d_sigma.tolist()[1]
    ([0.00657, 1.0], 0.0, -inf)
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    divergent_at = (1.0,)
    degenerate_at = (1.0,)

    def __post_init__(self) -> None:
        _validated(self, "beta_min", self.beta_min, lo=0.0, lo_open=True, hi=None)
        _validated(self, "beta_max", self.beta_max, lo=None, hi=None)
        if not self.beta_max > self.beta_min:
            raise ValueError(
                f"`beta_max` must be greater than `beta_min`, got beta_min={self.beta_min!r}"
                f" and beta_max={self.beta_max!r}"
            )

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        s = 1.0 - t
        spread = self.beta_max - self.beta_min
        big_t = s * (self.beta_min + 0.5 * spread * s)
        beta = self.beta_min + spread * s
        alpha = xp.exp(-0.5 * big_t)
        sigma = xp.sqrt(-xp.expm1(-big_t))
        return Coefficients(
            alpha=alpha,
            sigma=sigma,
            d_alpha=0.5 * beta * alpha,
            d_sigma=-0.5 * beta * (alpha * alpha) / sigma,
        )

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho^2 = 1 / (e^T - 1)  =>  T = log1p(1 / rho^2) = log1p(rho^2) - 2 log rho;
        # then s = 1 - t solves s beta_min + s^2 (beta_max - beta_min)/2 = T, in the
        # form without cancellation: s = 2 T / (beta_min + sqrt(beta_min^2 + 2 T spread))
        big = snr > 1.0
        safe = xp.where(big, snr, xp.ones_like(snr))
        small = xp.where(big, xp.ones_like(snr), snr)
        big_t = xp.where(
            big, xp.log1p(1.0 / (safe * safe)), xp.log1p(small * small) - 2.0 * xp.log(small)
        )
        spread = self.beta_max - self.beta_min
        s = 2.0 * big_t / (self.beta_min + xp.sqrt(self.beta_min**2 + 2.0 * spread * big_t))
        return 1.0 - s


@dataclass(frozen=True)
class VarianceExploding(Schedule):
    r"""The variance-exploding diffusion path (paper eq. 16-17).

    .. math::
        \alpha_t = 1, \quad \sigma_t = s(1 - t), \quad
        s(r) = \sigma_{\min} (\sigma_{\max} / \sigma_{\min})^r, \quad
        \dot\sigma_t = -\log(\sigma_{\max}/\sigma_{\min})\, \sigma_t.

    Finite and non-degenerate on all of [0, 1] (sigma_1 = sigma_min > 0). The path
    starts from N(x1, sigma_max^2 I), not N(0, I): sample x0 with standard deviation
    one and it is scaled by sigma_max here.

    Parameters
    ----------
    sigma_min : float
        The noise level at the data end (t = 1), > 0.
    sigma_max : float
        The noise level at the noise end (t = 0), > sigma_min.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.VarianceExploding(sigma_min=0.5, sigma_max=8.0)(np.array([0.0, 0.5, 1.0]))
    >>> c.alpha.tolist(), np.round(c.sigma, 12).tolist()
    ([1.0, 1.0, 1.0], [8.0, 2.0, 0.5])
    """

    sigma_min: float = 0.01
    sigma_max: float = 80.0

    def __post_init__(self) -> None:
        _validated(self, "sigma_min", self.sigma_min, lo=0.0, lo_open=True, hi=None)
        _validated(self, "sigma_max", self.sigma_max, lo=None, hi=None)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(
                f"`sigma_max` must be greater than `sigma_min`, got sigma_min="
                f"{self.sigma_min!r} and sigma_max={self.sigma_max!r}"
            )

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        # logs of each bound, not of their ratio, and sigma as one exp: neither the ratio
        # nor an intermediate factor overflows (sigma_max / sigma_min may exceed 1e308)
        log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)
        sigma = xp.exp(math.log(self.sigma_min) + (1.0 - t) * log_ratio)
        return Coefficients(alpha=1.0, sigma=sigma, d_alpha=0.0, d_sigma=-log_ratio * sigma)

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho = 1 / (sigma_min e^{(1 - t) L})  =>  t = 1 + log(rho sigma_min) / L
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return 1.0 + (xp.log(snr) + math.log(self.sigma_min)) / log_ratio


@dataclass(frozen=True)
class Cosine(Schedule):
    r"""The trigonometric path: :math:`\alpha_t = \sin(\pi t / 2)`, :math:`\sigma_t = \cos(\pi t / 2)`.

    sigma is evaluated as :math:`\sin(\pi (1 - t)/2)` so that it is exactly 0 at t = 1
    and accurate near it; :math:`\dot\alpha_t = \tfrac{\pi}{2}\sigma_t` and
    :math:`\dot\sigma_t = -\tfrac{\pi}{2}\alpha_t`. Finite on [0, 1]; degenerate at t = 1.
    A Gaussian conditional path in the sense of the paper's Sec. 4 (the trigonometric
    interpolant of later work), not one of the paper's own examples.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.Cosine()(np.array([0.0, 1.0]))
    >>> c.alpha.tolist(), c.sigma.tolist(), c.d_alpha.round(12).tolist()
    ([0.0, 1.0], [1.0, 0.0], [1.570796326795, 0.0])
    """

    degenerate_at = (1.0,)
    signal_free_at = (0.0,)

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho = tan(pi t / 2)
        return xp.atan(snr) / (0.5 * math.pi)

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        half_pi = 0.5 * math.pi
        alpha = xp.sin(half_pi * t)
        sigma = xp.sin(half_pi * (1.0 - t))
        return Coefficients(
            alpha=alpha, sigma=sigma, d_alpha=half_pi * sigma, d_sigma=-half_pi * alpha
        )


@dataclass(frozen=True)
class Polynomial(Schedule):
    r"""The polynomial path: :math:`\alpha_t = t^n`, :math:`\sigma_t = 1 - t^n`.

    :math:`\dot\alpha_t = n t^{n-1} = -\dot\sigma_t`. sigma is computed as
    ``-expm1(n log t)``, accurate near t = 1. Degenerate at t = 1; for n < 1 the
    derivatives diverge at t = 0 (finite domain (0, 1]); for n >= 1 they are finite
    on [0, 1].

    Parameters
    ----------
    n : float
        The exponent, n > 0. ``Polynomial(1)`` is ``CondOT(0)``, the OT path of eq. 20
        with sigma_min = 0.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.Polynomial(n=2)(np.array([0.5]))
    >>> c.alpha.tolist(), c.sigma.tolist(), c.d_alpha.tolist(), c.d_sigma.tolist()
    ([0.25], [0.75], [1.0], [-1.0])
    """

    n: float = 1.0

    def __post_init__(self) -> None:
        _validated(self, "n", self.n, lo=0.0, lo_open=True, hi=None)

    @property
    def divergent_at(self) -> tuple[float, ...]:  # type: ignore[override]
        return (0.0,) if self.n < 1.0 else ()

    degenerate_at = (1.0,)

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        n = self.n
        positive = t > 0
        log_t = xp.log(xp.where(positive, t, xp.ones_like(t)))
        alpha = t**n
        sigma = xp.where(positive, 0.0 - xp.expm1(n * log_t), xp.ones_like(t))
        d_alpha = n * t ** (n - 1.0)
        return Coefficients(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=-d_alpha)

    signal_free_at = (0.0,)

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho = t^n / (1 - t^n)  =>  t^n = rho / (1 + rho) = 1 / (1 + 1/rho)
        finite = xp.isfinite(snr)
        safe = xp.where(finite, snr, xp.zeros_like(snr))
        return xp.where(finite, (safe / (1.0 + safe)) ** (1.0 / self.n), xp.ones_like(snr))


@dataclass(frozen=True)
class LinearVP(Schedule):
    r"""The linear variance-preserving path: :math:`\alpha_t = t`, :math:`\sigma_t = \sqrt{1 - t^2}`.

    sigma is computed as ``sqrt((1 - t)(1 + t))``; :math:`\dot\sigma_t = -t/\sigma_t`
    diverges at t = 1 (``-inf``), so the finite domain is [0, 1). A Gaussian
    conditional path in the sense of the paper's Sec. 4, with alpha_t^2 + sigma_t^2 = 1.

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> c = fs.LinearVP()(np.array([0.6]))
    >>> np.round(c.sigma, 12).tolist(), np.round(c.d_sigma, 12).tolist()
    ([0.8], [-0.75])
    """

    divergent_at = (1.0,)
    degenerate_at = (1.0,)

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        sigma = xp.sqrt((1.0 - t) * (1.0 + t))
        return Coefficients(alpha=t, sigma=sigma, d_alpha=1.0, d_sigma=-t / sigma)

    signal_free_at = (0.0,)

    def time_at_snr(self, xp: Any, snr: Array) -> Array:
        # rho = t / sqrt(1 - t^2)  =>  t = rho / hypot(1, rho); 1 at rho = inf
        finite = xp.isfinite(snr)
        safe = xp.where(finite, snr, xp.zeros_like(snr))
        return xp.where(finite, safe / xp.hypot(xp.ones_like(safe), safe), xp.ones_like(snr))


#: The schedules under contract: one instance of each schedule class, plus the
#: non-default parameters whose numerics differ (a non-degenerate CondOT, a Polynomial
#: whose derivatives diverge at t = 0). ``flowspec check``, the golden vectors, the
#: conformance kit's library adapters and the test suite all iterate over this tuple;
#: a new schedule joins the contract by being added here.
CATALOGUE: tuple[Schedule, ...] = (
    CondOT(),
    CondOT(sigma_min=1e-3),
    VariancePreserving(),
    VarianceExploding(),
    Cosine(),
    Polynomial(2.0),
    Polynomial(0.5),
    LinearVP(),
)
