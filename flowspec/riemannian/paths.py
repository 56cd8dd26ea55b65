r"""The geodesic conditional path of Riemannian Flow Matching and its conditional field.

Chen and Lipman (2024, Sec. 3.2 and 3.3): for a scheduler :math:`\kappa_t`
(``flowspec.riemannian.kappa``: :math:`\kappa_t = \sigma_t` of a flowspec schedule)
and the geodesic distance as premetric, the conditional flow is

.. math:: x_t = \psi_t(x_0 \mid x_1) = \exp_{x_1}\!\big(\kappa_t \log_{x_1} x_0\big),

with :math:`x_{t=0} = x_0` (source) and :math:`x_{t=1} = x_1` (data), as in flowspec.
Its time derivative along the geodesic, :math:`\dot x_t = \dot\kappa_t\, \gamma'(\kappa_t)`
for :math:`\gamma(s) = \exp_{x_1}(s \log_{x_1} x_0)`, is the regression target; the
same field in x-form (the premetric field of Sec. 3.2,
:math:`u_t(x \mid x_1) = \frac{d \log\kappa_t}{dt}\, d(x, x_1)
\frac{\nabla_x d(x, x_1)}{\lVert\nabla_x d(x, x_1)\rVert_g^2}`, with
:math:`\nabla_x d(x, x_1) = -\log_x(x_1)/d(x, x_1)` for the geodesic distance) is

.. math:: u_t(x \mid x_1) = -\frac{\dot\kappa_t}{\kappa_t} \log_x(x_1).

The RCFM loss (Sec. 3.1) regresses a model on the target with the manifold's norm,
:math:`\lVert v_t(x_t) - u_t(x_t \mid x_1)\rVert_g^2`.

References
----------
Chen, R. T. Q. and Lipman, Y., "Flow Matching on General Geometries", ICLR 2024
(arXiv:2302.03660).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .. import validation as _xp
from ..schedules import CondOT, Schedule
from .kappa import check_kappa_schedule, kappa
from .manifolds.base import Manifold

__all__ = ["GeodesicPath", "riemannian_cfm_loss"]

Array = Any
_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class GeodesicPath:
    r"""The geodesic conditional path :math:`x_t = \exp_{x_1}(\kappa_t \log_{x_1} x_0)` on a manifold.

    Parameters
    ----------
    manifold : Manifold
        :class:`~flowspec.riemannian.Euclidean`, :class:`~flowspec.riemannian.Sphere`,
        :class:`~flowspec.riemannian.FlatTorus`,
        :class:`~flowspec.riemannian.Hyperbolic` or :class:`~flowspec.riemannian.SO3`.
    schedule : Schedule
        Its :math:`\sigma_t` is :math:`\kappa_t` (default ``fs.CondOT()``:
        :math:`\kappa_t = 1 - t`, the paper's choice).

    Notes
    -----
    ``x0`` and ``x1`` are batch-first points of the manifold; ``t`` is a number, a 0-d
    array, or has shape (B,) or (B, 1, ..., 1). When x0 is on the cut locus of x1
    (the antipode on the sphere, a rotation by pi on SO(3), a difference of pi on the
    torus) the path follows the geodesic that ``manifold.logmap`` returns there.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import GeodesicPath, Sphere
    >>> path = GeodesicPath(Sphere(2))
    >>> x0 = np.array([[1.0, 0.0, 0.0]]); x1 = np.array([[0.0, 0.0, 1.0]])
    >>> x_t = path.sample(x0, x1, 0.5)
    >>> bool(np.allclose(x_t, [[np.sqrt(0.5), 0.0, np.sqrt(0.5)]]))
    True
    """

    manifold: Manifold
    schedule: Schedule = field(default_factory=CondOT)

    def __post_init__(self) -> None:
        if not isinstance(self.manifold, Manifold):
            raise TypeError(
                f"`manifold` must be a flowspec.riemannian manifold (e.g. Sphere(2)), got "
                f"{_xp.describe(self.manifold)}"
            )
        check_kappa_schedule(self.schedule)

    def _prepare(
        self, a_name: str, a: Array, b_name: str, b: Array, t: Any
    ) -> tuple[Any, Array, Array]:
        xp = self.manifold._check(**{a_name: a, b_name: b})
        _xp.namespace(**{a_name: a, "t": t})
        tt = _xp.time_array(xp, t, a, x_name=a_name)
        k, dk = kappa(self.schedule, tt)
        return xp, k, dk

    def sample(self, x0: Array, x1: Array, t: Array | float) -> Array:
        r""":math:`x_t = \exp_{x_1}(\kappa_t \log_{x_1} x_0)`, shape (B, *event_shape).

        Parameters
        ----------
        x0 : array
            Source points (t = 0).
        x1 : array
            Data points (t = 1).
        t : float or array, shape () or (B,) or (B, 1, ..., 1)
            Times in [0, 1].
        """
        xp, k, _ = self._prepare("x0", x0, "x1", x1, t)
        m = self.manifold
        return m._geodesic(xp, x1, m._logmap(xp, x1, x0), k)[0]

    def target(self, x0: Array, x1: Array, t: Array | float) -> Array:
        r"""The regression target :math:`\dot x_t = \dot\kappa_t\, \gamma'(\kappa_t)`, tangent at :math:`x_t`.

        :math:`\gamma(s) = \exp_{x_1}(s \log_{x_1} x_0)` and its velocity come from the
        manifold's closed forms (:meth:`Manifold.geodesic`): no division by
        :math:`\kappa_t`, finite at t = 1 wherever :math:`\dot\kappa_1` is.
        """
        return self.sample_and_target(x0, x1, t)[1]

    def sample_and_target(self, x0: Array, x1: Array, t: Array | float) -> tuple[Array, Array]:
        r"""``(sample(x0, x1, t), target(x0, x1, t))`` with one logarithm, for training loops."""
        xp, k, dk = self._prepare("x0", x0, "x1", x1, t)
        m = self.manifold
        point, velocity = m._geodesic(xp, x1, m._logmap(xp, x1, x0), k)
        return point, dk * velocity

    def velocity(self, x: Array, x1: Array, t: Array | float) -> Array:
        r"""The conditional field in x-form, :math:`u_t(x \mid x_1) = -(\dot\kappa_t/\kappa_t) \log_x(x_1)`.

        The premetric field of Chen and Lipman (2024, Sec. 3.2) for the geodesic
        distance. Tangent at x; equals :meth:`target` at ``x = sample(x0, x1, t)``.
        Singular where :math:`\kappa_t = 0` (t = 1): it returns what the arithmetic
        gives there.
        """
        xp, k, dk = self._prepare("x", x, "x1", x1, t)
        m = self.manifold
        return (-(dk / k)) * m._logmap(xp, x, x1)

    def log_prob(self, x: Array, x1: Array, t: Array | float) -> Array:
        r""":math:`\log p_t(x \mid x_1)`, the source pushed forward by :math:`\psi_t(\cdot \mid x_1)`, shape (B,).

        Closed forms (with respect to the Riemannian volume) for the uniform source
        on :class:`Sphere`, :class:`FlatTorus` and :class:`SO3` and the standard normal
        on :class:`Euclidean`; -inf outside the support
        (:math:`d(x, x_1) \ge \kappa_t \pi` on the sphere). :class:`Hyperbolic` has
        none (NotImplementedError): its wrapped normal source is not centred at x1.
        """
        xp, k, _ = self._prepare("x", x, "x1", x1, t)
        return self.manifold._conditional_log_prob(xp, x, x1, xp.reshape(k, (int(x.shape[0]),)))


def riemannian_cfm_loss(
    manifold: Manifold,
    x: Array,
    v: Array,
    u: Array,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Array:
    r"""The Riemannian CFM loss :math:`\lVert v - u\rVert_{g_x}^2` per sample, reduced (Chen and Lipman 2024, Sec. 3.1).

    Parameters
    ----------
    manifold : Manifold
    x : array, shape (B, *event_shape)
        The points x_t where the model and the target are tangent.
    v, u : array, shape (B, *event_shape)
        Model output and regression target (:meth:`GeodesicPath.target`).
    reduction : {"mean", "sum", "none"}
        Over the batch, as :func:`flowspec.cfm_loss`.

    Returns
    -------
    array, shape () for "mean" and "sum", (B,) for "none"

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import SO3, riemannian_cfm_loss
    >>> x = np.eye(3)[None]; v = np.array([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    >>> float(riemannian_cfm_loss(SO3(), x, v, np.zeros_like(v)))  # |omega|^2 = 1
    1.0
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {_xp.describe(manifold)}"
        )
    xp = manifold._check(x=x, v=v, u=u)
    d = v - u
    per_sample = manifold._inner(xp, x, d, d)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return xp.sum(per_sample)
    return xp.mean(per_sample)
