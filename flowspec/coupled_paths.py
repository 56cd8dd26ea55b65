r"""The coupled Gaussian conditional path: conditioning on a pair z = (x0, x1).

The paper conditions its path on the data point :math:`x_1` alone, with :math:`x_0` as
the noise of the conditional flow (Sec. 4). Tong et al. (2024) condition on a *pair*
:math:`z = (x_0, x_1)` drawn from a coupling :math:`\pi(x_0, x_1)` and add a noise of
scale :math:`\gamma_t`:

.. math::
    p_t(x \mid z) = \mathcal N(x \mid \mu_t, \gamma_t^2 I), \qquad
    \mu_t = \alpha_t x_1 + \sigma_t x_0, \qquad
    x_t = \mu_t + \gamma_t \varepsilon, \quad \varepsilon \sim \mathcal N(0, I),

with :math:`(\alpha_t, \sigma_t)` any flowspec schedule. The conditional field that
generates it (Theorem 3 applied to the Gaussian :math:`\mathcal N(\mu_t, \gamma_t^2 I)`) is

.. math::
    u_t(x \mid z) = \dot\mu_t + \frac{\dot\gamma_t}{\gamma_t}(x - \mu_t),
    \qquad \dot\mu_t = \dot\alpha_t x_1 + \dot\sigma_t x_0,

and at :math:`x = x_t` it equals the noise-form target
:math:`\dot\mu_t + \dot\gamma_t \varepsilon`, which has no division. The marginal field
of eq. 8 with z in place of :math:`x_1` generates the marginal path (Guide, Thm 3).

Special cases: ``NoNoise()`` with any schedule is the paper's path conditioned on
:math:`x_1` with :math:`x_0` as its noise (:math:`x_t = \psi_t(x_0 \mid x_1)`, the same
sample and target as :class:`~flowspec.GaussianPath`); ``CondOT()`` with
``ConstantNoise(s)`` is torchcfm's I-CFM and OT-CFM path; with
``BrownianBridgeNoise(s)`` its SB-CFM path; ``Cosine()`` with ``ConstantNoise(s)`` its
"VP" (trigonometric) path.

Shapes as in ``flowspec.paths``: arrays (B, *event), ``t`` a number, 0-d, (B,) or
(B, 1, ..., 1), per-sample scalars (B,).

References
----------
Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and
generalizing flow-based generative models with minibatch optimal transport", TMLR 2024
(arXiv:2302.00482).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import formulas, validation
from .paths import GaussianPath
from .schedules import Coefficients, Schedule
from .typing import Array, Namespace

__all__ = [
    "BrownianBridgeNoise",
    "ConstantNoise",
    "CoupledPath",
    "NoNoise",
    "NoiseCoefficients",
    "NoiseScale",
    "NoisySchedule",
]


class NoiseCoefficients(NamedTuple):
    r"""The noise scale :math:`\gamma_t`, its derivative and their ratio.

    ``ratio`` is :math:`\dot\gamma_t / \gamma_t` written in a form that is finite
    wherever the ratio is (0 for a noise scale that is identically zero); ``None``
    means "compute ``d_gamma / gamma``".
    """

    gamma: Array | float
    d_gamma: Array | float
    ratio: Array | float | None = None


class NoiseScale:
    r"""Base class: ``noise(t) -> NoiseCoefficients(gamma, d_gamma, ratio)``.

    A subclass implements ``coefficients(xp, t)`` with Array API functions only (as a
    :class:`~flowspec.schedules.Schedule` does); a coefficient that does not depend on
    t may be a Python float. Return ``ratio=None`` to have
    :math:`\dot\gamma_t/\gamma_t` computed by division, or give it in a form without the
    0/0 of :math:`\gamma_t = 0`.

    Examples
    --------
    A noise scale that vanishes at both ends, :math:`\gamma_t = t(1 - t)`:

    >>> import numpy as np
    >>> from flowspec.coupled_paths import NoiseScale, NoiseCoefficients
    >>> class Parabola(NoiseScale):
    ...     def coefficients(self, xp, t):
    ...         return NoiseCoefficients(t * (1.0 - t), 1.0 - 2.0 * t)
    >>> Parabola()(np.array([0.5])).gamma.tolist()
    [0.25]
    """

    #: Times in [0, 1] where d_gamma is infinite (the target is infinite there).
    divergent_at: tuple[float, ...] = ()

    def __call__(self, t: Array | float) -> NoiseCoefficients:
        if isinstance(t, bool):
            raise TypeError(f"`t` must be a real number or an array, got {validation.describe(t)}")
        if isinstance(t, (int, float)):
            t = np.asarray(validation.real_number("t", t), dtype=np.float64)
        xp = validation.namespace(t=t)
        validation.check_float(xp, "t", t)
        if array_api_compat.is_numpy_array(t):
            validation.check_host_times("t", t, 0.0, 1.0)
        return self.arrays(xp, t)

    def coefficients(self, xp: Any, t: Array) -> NoiseCoefficients:  # pragma: no cover
        r"""The noise coefficients at an already validated time array ``t`` of namespace ``xp``.

        The one method a subclass implements: :math:`\gamma_t`, :math:`\dot\gamma_t` and
        optionally their ratio, each an array of t's shape or a Python float when
        constant in t. Nothing is validated here; :meth:`__call__` is the validated entry.

        Examples
        --------
        >>> import numpy as np
        >>> from flowspec.coupled_paths import ConstantNoise
        >>> ConstantNoise(0.1).coefficients(np, np.array([[0.5]])).gamma
        0.1
        """
        raise NotImplementedError

    def complete(self, xp: Any, t: Array) -> NoiseCoefficients:
        """:meth:`coefficients` with the ratio filled in (``d_gamma / gamma`` if not given).

        Examples
        --------
        >>> import numpy as np
        >>> from flowspec.coupled_paths import NoiseScale, NoiseCoefficients
        >>> class Linear(NoiseScale):
        ...     def coefficients(self, xp, t):
        ...         return NoiseCoefficients(t, 1.0)
        >>> Linear().complete(np, np.array([0.5])).ratio.tolist()
        [2.0]
        """
        c = self.coefficients(xp, t)
        ratio = c.d_gamma / c.gamma if c.ratio is None else c.ratio
        return NoiseCoefficients(c.gamma, c.d_gamma, ratio)

    def arrays(self, xp: Any, t: Array) -> NoiseCoefficients:
        """:meth:`complete` with every constant broadcast to an array like ``t``.

        Examples
        --------
        >>> import numpy as np
        >>> from flowspec.coupled_paths import NoNoise
        >>> NoNoise().arrays(np, np.array([0.5, 0.7])).gamma.tolist()
        [0.0, 0.0]
        """
        return NoiseCoefficients(
            *(xp.full_like(t, v) if isinstance(v, float) else v for v in self.complete(xp, t))
        )


def _nonneg(obj: Any, name: str, value: Any) -> None:
    v = validation.real_number(name, value)
    if v < 0.0:
        raise ValueError(f"`{name}` must be >= 0, got {v!r}")
    object.__setattr__(obj, name, v)


@dataclass(frozen=True)
class NoNoise(NoiseScale):
    r""":math:`\gamma_t = 0`: the pair's straight (or scheduled) interpolant, no extra noise.

    The field is :math:`u_t(x \mid z) = \dot\mu_t` for every x (the ratio is 0, not
    0/0); the density is a point mass, so ``log_prob`` and ``score`` are singular.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.coupled_paths import NoNoise
    >>> NoNoise()(np.array([0.3])).ratio.tolist()
    [0.0]
    """

    def coefficients(self, xp: Any, t: Array) -> NoiseCoefficients:
        return NoiseCoefficients(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ConstantNoise(NoiseScale):
    r""":math:`\gamma_t = s`, constant: torchcfm's I-CFM / OT-CFM noise (its ``sigma``).

    :math:`\dot\gamma_t = 0`, so the field is :math:`\dot\mu_t` for every x, finite on
    all of [0, 1] (also for s = 0).

    Parameters
    ----------
    sigma : float
        The noise scale s >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.coupled_paths import ConstantNoise
    >>> c = ConstantNoise(0.1)(np.array([0.0, 1.0]))
    >>> c.gamma.tolist(), c.d_gamma.tolist()
    ([0.1, 0.1], [0.0, 0.0])
    """

    sigma: float = 0.0

    def __post_init__(self) -> None:
        _nonneg(self, "sigma", self.sigma)

    def coefficients(self, xp: Any, t: Array) -> NoiseCoefficients:
        return NoiseCoefficients(self.sigma, 0.0, 0.0)


@dataclass(frozen=True)
class BrownianBridgeNoise(NoiseScale):
    r""":math:`\gamma_t = s\sqrt{t(1 - t)}`: the Brownian bridge of SB-CFM.

    .. math::
        \dot\gamma_t = \frac{s(1 - 2t)}{2\sqrt{t(1 - t)}}, \qquad
        \frac{\dot\gamma_t}{\gamma_t} = \frac{1 - 2t}{2t(1 - t)}.

    The conditional path of the Schrödinger bridge between :math:`\delta_{x_0}` and
    :math:`\delta_{x_1}` for the reference Brownian motion :math:`s W_t`. At t = 0 and
    t = 1, :math:`\gamma_t = 0` while :math:`\dot\gamma_t = \pm\infty`: the noise-form
    target :math:`\dot\mu_t + \dot\gamma_t\varepsilon` diverges there like
    :math:`t^{-1/2}` (``divergent_at = (0, 1)``), and these functions return what the
    arithmetic gives (``inf``; ``nan`` where :math:`\varepsilon = 0`). Inside (0, 1)
    every coefficient is finite; no epsilon is added.

    Parameters
    ----------
    sigma : float
        The diffusion scale s > 0.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.coupled_paths import BrownianBridgeNoise
    >>> c = BrownianBridgeNoise(2.0)(np.array([0.5]))
    >>> c.gamma.tolist(), c.d_gamma.tolist(), c.ratio.tolist()
    ([1.0], [0.0], [0.0])
    """

    sigma: float = 1.0
    divergent_at = (0.0, 1.0)

    def __post_init__(self) -> None:
        v = validation.real_number("sigma", self.sigma)
        if not v > 0.0:
            raise ValueError(f"`sigma` must be > 0, got {v!r}")
        object.__setattr__(self, "sigma", v)

    def coefficients(self, xp: Any, t: Array) -> NoiseCoefficients:
        one_minus = 1.0 - t
        prod = t * one_minus
        root = xp.sqrt(prod)
        # 1 - 2t as (1 - t) - t: exact where the subtraction is, no cancellation near 1/2
        slope = one_minus - t
        return NoiseCoefficients(
            self.sigma * root, self.sigma * slope / (2.0 * root), slope / (2.0 * prod)
        )


@dataclass(frozen=True)
class NoisySchedule(Schedule):
    r"""The schedule :math:`(\alpha_t, \sqrt{\sigma_t^2 + \gamma_t^2})` of an independent coupling.

    With :math:`x_0 \sim \mathcal N(0, I)` independent of :math:`x_1` (the independent
    coupling with a Gaussian source) and :math:`\varepsilon \sim \mathcal N(0, I)`,
    :math:`\sigma_t x_0 + \gamma_t \varepsilon` is one Gaussian noise of scale
    :math:`\tilde\sigma_t = \sqrt{\sigma_t^2 + \gamma_t^2}`, so the coupled path
    conditioned on :math:`x_1` alone is the paper's :math:`\mathcal N(\alpha_t x_1,
    \tilde\sigma_t^2 I)`, and the marginal field of the coupled path is that of
    ``GaussianPath(NoisySchedule(schedule, noise))`` (its Theorem 3 field is the
    conditional expectation of :math:`\dot\mu_t + \dot\gamma_t\varepsilon` given
    :math:`x_t` and :math:`x_1`, since
    :math:`E[\sigma_t \dot\sigma_t x_0 + \gamma_t\dot\gamma_t\varepsilon \mid n] =
    \tilde\sigma_t\dot{\tilde\sigma}_t\, n/\tilde\sigma_t^2` for
    :math:`n = \sigma_t x_0 + \gamma_t\varepsilon`). Its derivative is
    :math:`\dot{\tilde\sigma}_t = (\sigma_t\dot\sigma_t + \gamma_t\dot\gamma_t)/\tilde\sigma_t`.

    Parameters
    ----------
    schedule : Schedule
    noise : NoiseScale

    Examples
    --------
    >>> import numpy as np, flowspec as fs
    >>> from flowspec.coupled_paths import ConstantNoise, NoisySchedule
    >>> NoisySchedule(fs.CondOT(), ConstantNoise(0.75))(np.array([0.0])).sigma.tolist()
    [1.25]
    """

    schedule: Schedule
    noise: NoiseScale

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"`schedule` must be a flowspec Schedule, got {validation.describe(self.schedule)}"
            )
        if not isinstance(self.noise, NoiseScale):
            raise TypeError(f"`noise` must be a NoiseScale, got {validation.describe(self.noise)}")

    @property
    def divergent_at(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple(sorted(set(self.schedule.divergent_at) | set(self.noise.divergent_at)))

    def coefficients(self, xp: Any, t: Array) -> Coefficients:
        c = self.schedule.arrays(xp, t)
        n = self.noise.arrays(xp, t)
        sigma = xp.sqrt(c.sigma * c.sigma + n.gamma * n.gamma)
        d_sigma = (c.sigma * c.d_sigma + n.gamma * n.d_gamma) / sigma
        return Coefficients(c.alpha, sigma, c.d_alpha, d_sigma)


def _centred(n: NoiseCoefficients) -> Coefficients:
    r""":math:`\mathcal N(\mu_t, \gamma_t^2 I)` as the paper's path about the centre ``x1 = mu_t``.

    With alpha = 1 and sigma = gamma, :mod:`flowspec.formulas`' density and score of
    eq. 10 are those of the coupled path (the centre's own motion is added by the caller).
    """
    return Coefficients(1.0, n.gamma, 0.0, n.d_gamma)


def _ratio_form(n: NoiseCoefficients) -> Coefficients:
    r"""Coefficients whose ``d_sigma / sigma`` is the noise scale's finite ratio :math:`\dot\gamma_t/\gamma_t`.

    Theorem 3's field and its divergence (eq. 15) depend on sigma only through that
    ratio; with sigma = 1 and d_sigma = ratio the formulas never form the 0/0 of a
    vanishing noise scale (NoNoise, ConstantNoise(0)).
    """
    return Coefficients(1.0, 1.0, 0.0, n.ratio)


@dataclass(frozen=True)
class CoupledPath:
    r"""The Gaussian path :math:`\mathcal N(\alpha_t x_1 + \sigma_t x_0, \gamma_t^2 I)` conditioned on a pair.

    Parameters
    ----------
    schedule : Schedule
        The interpolant :math:`\mu_t = \alpha_t x_1 + \sigma_t x_0`; ``CondOT()`` gives
        the straight line :math:`t x_1 + (1 - t) x_0`.
    noise : NoiseScale
        :math:`\gamma_t`: :class:`NoNoise`, :class:`ConstantNoise`,
        :class:`BrownianBridgeNoise` or a user's subclass of :class:`NoiseScale`.

    Examples
    --------
    torchcfm's SB-CFM training pair at t = 1/2:

    >>> import numpy as np, flowspec as fs
    >>> from flowspec.coupled_paths import CoupledPath, BrownianBridgeNoise
    >>> path = CoupledPath(fs.CondOT(), BrownianBridgeNoise(1.0))
    >>> x0, x1, eps = np.array([[0.0]]), np.array([[2.0]]), np.array([[1.0]])
    >>> x_t, u = path.sample_and_target(x0, x1, eps, 0.5)
    >>> x_t.tolist(), u.tolist()
    ([[1.5]], [[2.0]])
    """

    schedule: Schedule
    noise: NoiseScale

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"`schedule` must be a flowspec Schedule (e.g. fs.CondOT()), got "
                f"{validation.describe(self.schedule)}"
            )
        if not isinstance(self.noise, NoiseScale):
            raise TypeError(
                f"`noise` must be a NoiseScale (NoNoise(), ConstantNoise(s), "
                f"BrownianBridgeNoise(s) or a subclass), got {validation.describe(self.noise)}"
            )

    @property
    def mean_path(self) -> GaussianPath:
        r"""The paper's path of the schedule: its sample is :math:`\mu_t`, its target :math:`\dot\mu_t`."""
        return GaussianPath(self.schedule)

    def prepare(
        self, x_name: str, x: Array, x0: Array, x1: Array, t: Any
    ) -> tuple[Namespace, Coefficients, NoiseCoefficients]:
        r"""Validate a call and evaluate the schedule and the noise scale at t: ``(xp, c, n)``.

        ``x`` (named ``x_name``: the noise ``eps`` or the point ``x``), ``x0`` and ``x1``
        must be floating arrays of one namespace, dtype and shape (B, *event); ``t`` is
        reshaped to (B, 1, ..., 1) against ``x0``. ``c`` are the schedule's coefficients
        (eq. 11, 13) and ``n`` the noise scale's, ratio included, as arrays of shape
        (B, 1, ..., 1) or Python floats.

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
        >>> p = CoupledPath(fs.CondOT(), ConstantNoise(0.1))
        >>> xp, c, n = p.prepare("eps", np.zeros((2, 1)), np.zeros((2, 1)), np.ones((2, 1)), 0.5)
        >>> c.alpha.tolist(), n.gamma
        ([[0.5], [0.5]], 0.1)
        """
        xp, tt = validation.conditional_inputs({"x0": x0, "x1": x1, x_name: x}, t)
        return xp, self.schedule.coefficients(xp, tt), self.noise.complete(xp, tt)

    def sample(self, x0: Array, x1: Array, eps: Array, t: Array | float) -> Array:
        r"""A point of the conditional path, :math:`x_t = \alpha_t x_1 + \sigma_t x_0 + \gamma_t\varepsilon`.

        The conditional flow of eq. 11 plus the noise :math:`\gamma_t\varepsilon`.

        Parameters
        ----------
        x0, x1 : array, shape (B, *event)
            The pair z, drawn from a coupling (:mod:`flowspec.couplings`).
        eps : array, shape (B, *event)
            Standard normal noise (ignored in value when :math:`\gamma_t = 0`).
        t : float or array, shape () or (B,) or (B, 1, ..., 1)

        Returns
        -------
        array, shape (B, *event)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
        >>> p = CoupledPath(fs.CondOT(), ConstantNoise(0.5))
        >>> p.sample(np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)), 0.5).tolist()
        [[1.0]]
        """
        return self.sample_and_target(x0, x1, eps, t)[0]

    def target(self, x0: Array, x1: Array, eps: Array, t: Array | float) -> Array:
        r"""The regression target in noise form, :math:`\dot\alpha_t x_1 + \dot\sigma_t x_0 + \dot\gamma_t\varepsilon`.

        :math:`\frac{d}{dt} x_t` for fixed :math:`(x_0, x_1, \varepsilon)` (eq. 13 plus
        :math:`\dot\gamma_t\varepsilon`); equal to
        :meth:`velocity` at :math:`x = x_t`. No division: finite wherever the
        coefficients are (for :class:`BrownianBridgeNoise`, on (0, 1); at t = 0 and 1
        :math:`\dot\gamma_t` is infinite).

        Returns
        -------
        array, shape (B, *event)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
        >>> p = CoupledPath(fs.CondOT(), ConstantNoise(0.5))
        >>> p.target(np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)), 1.0).tolist()
        [[1.0]]
        """
        return self.sample_and_target(x0, x1, eps, t)[1]

    def sample_and_target(
        self, x0: Array, x1: Array, eps: Array, t: Array | float
    ) -> tuple[Array, Array]:
        r"""``(sample(x0, x1, eps, t), target(x0, x1, eps, t))`` in one call: one training step.

        The mean and its derivative are :class:`~flowspec.GaussianPath`'s sample and
        target (eq. 11 and eq. 13); the noise adds :math:`\gamma_t\varepsilon` and
        :math:`\dot\gamma_t\varepsilon`.

        Returns
        -------
        x_t, target : array, shape (B, *event)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, NoNoise
        >>> x_t, u = CoupledPath(fs.CondOT(), NoNoise()).sample_and_target(
        ...     np.array([[1.0]]), np.array([[3.0]]), np.zeros((1, 1)), 0.25)
        >>> x_t.tolist(), u.tolist()
        ([[1.5]], [[2.0]])
        """
        _, c, n = self.prepare("eps", eps, x0, x1, t)
        return (
            formulas.sample(c, x0, x1) + n.gamma * eps,
            formulas.target(c, x0, x1) + n.d_gamma * eps,
        )

    def velocity(self, x: Array, x0: Array, x1: Array, t: Array | float) -> Array:
        r"""The conditional field in x-form, :math:`u_t(x \mid z) = \dot\mu_t + (\dot\gamma_t/\gamma_t)(x - \mu_t)`.

        Theorem 3 (eq. 15) for the Gaussian :math:`\mathcal N(\mu_t, \gamma_t^2 I)` with
        a moving centre. The ratio comes from the noise scale in its finite form: 0 for
        :class:`NoNoise` and :class:`ConstantNoise` (the field is :math:`\dot\mu_t`),
        :math:`(1-2t)/(2t(1-t))` for :class:`BrownianBridgeNoise`. Singular only where
        :math:`\gamma_t = 0` with :math:`\dot\gamma_t \ne 0` (the bridge at t = 0 and 1):
        there it returns what the arithmetic gives.

        Parameters
        ----------
        x, x0, x1 : array, shape (B, *event)
        t : float or array, shape () or (B,) or (B, 1, ..., 1)

        Returns
        -------
        array, shape (B, *event)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, BrownianBridgeNoise
        >>> p = CoupledPath(fs.CondOT(), BrownianBridgeNoise(1.0))
        >>> p.velocity(np.array([[1.0]]), np.zeros((1, 1)), np.ones((1, 1)), 0.25).tolist()
        [[2.0]]
        """
        _, c, n = self.prepare("x", x, x0, x1, t)
        mu = formulas.sample(c, x0, x1)
        return formulas.target(c, x0, x1) + formulas.velocity(_ratio_form(n), x, mu)

    def log_prob(self, x: Array, x0: Array, x1: Array, t: Array | float) -> Array:
        r"""The log-density of :math:`\mathcal N(x \mid \mu_t, \gamma_t^2 I)` (eq. 10 with this mean and scale).

        Singular where :math:`\gamma_t = 0` (a point mass).

        Returns
        -------
        array, shape (B,)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
        >>> lp = CoupledPath(fs.CondOT(), ConstantNoise(1.0)).log_prob(
        ...     np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), 0.5)
        >>> bool(np.isclose(lp[0], -0.5 * np.log(2 * np.pi)))
        True
        """
        xp, c, n = self.prepare("x", x, x0, x1, t)
        return formulas.log_prob(_centred(n), x, formulas.sample(c, x0, x1), xp=xp)

    def score(self, x: Array, x0: Array, x1: Array, t: Array | float) -> Array:
        r"""The conditional score :math:`\nabla_x \log p_t(x \mid z) = -(x - \mu_t)/\gamma_t^2`.

        The gradient of :meth:`log_prob` (the Gaussian of eq. 10 with mean
        :math:`\mu_t` and scale :math:`\gamma_t`). Singular where :math:`\gamma_t = 0`.

        Returns
        -------
        array, shape (B, *event)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, ConstantNoise
        >>> CoupledPath(fs.CondOT(), ConstantNoise(0.5)).score(
        ...     np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), 0.5).tolist()
        [[-4.0]]
        """
        _, c, n = self.prepare("x", x, x0, x1, t)
        return formulas.score(_centred(n), x, formulas.sample(c, x0, x1))

    def divergence(self, x: Array, x0: Array, x1: Array, t: Array | float) -> Array:
        r"""The divergence :math:`\nabla_x \cdot u_t(x \mid z) = d\,\dot\gamma_t/\gamma_t` (d event entries).

        The field of :meth:`velocity` (eq. 15) is affine in x with Jacobian
        :math:`(\dot\gamma_t/\gamma_t) I`; the ratio in its finite form.

        Returns
        -------
        array, shape (B,)

        Examples
        --------
        >>> import numpy as np, flowspec as fs
        >>> from flowspec.coupled_paths import CoupledPath, BrownianBridgeNoise
        >>> p = CoupledPath(fs.CondOT(), BrownianBridgeNoise(1.0))
        >>> p.divergence(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), 0.25).tolist()
        [2.6666666666666665]
        """
        xp, _, n = self.prepare("x", x, x0, x1, t)
        return formulas.divergence(_ratio_form(n), x, xp=xp)
