r"""The unit sphere :math:`S^n \subset \mathbb R^{n+1}`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ... import validation as _xp
from .base import Manifold, batch_dot, check_dim, per_sample, sinc

__all__ = ["Sphere"]

Array = Any


def _area(n: int) -> float:
    r"""log of the area of :math:`S^n`: :math:`2\pi^{(n+1)/2} / \Gamma((n+1)/2)`."""
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1))


@dataclass(frozen=True)
class Sphere(Manifold):
    r"""The unit sphere :math:`S^n = \{x \in \mathbb R^{n+1} : |x| = 1\}` with the round metric.

    Points and tangent vectors have shape (B, n + 1); ``Sphere(2)`` is the 2-sphere
    of R^3. The metric is the Euclidean inner product of tangent vectors.

    Numerics (float32 and float64 alike):

    * ``dist(x, y) = atan2(|x| |w|, x . y)`` where ``w`` is the part of ``y - x``
      (when ``x . y >= 0``) or of ``y + x`` (otherwise) orthogonal to x: both equal
      the part of y orthogonal to x, :math:`|x||w| = |x \wedge y|`, and the one chosen
      is a short vector computed without cancellation. The angle between the two
      directions thus has a *relative* error of a few ulps for nearly equal points
      and an absolute error of a few ulps of pi for nearly antipodal ones, whether or
      not the inputs are exactly of norm 1 (an ``acos(x . y)`` loses half the digits
      near 0 and pi, and is NaN once rounding pushes ``x . y`` past 1).
    * ``log_x(y) = theta w / |w|``, from the same short vector. At y = x it is
      exactly 0.
    * ``exp_x(u) = cos|u| x + sinc|u| u`` with ``sinc`` exact at 0.

    Cut locus: the antipode y = -x, where every great circle through x is shortest.
    There ``w = 0`` and ``log`` returns what the arithmetic gives, NaN (pi times
    0/0). Nearly antipodal points have a well-defined ``log`` of length close to pi
    whose direction is ill-conditioned (it turns by about eps/|x + y| under a
    relative perturbation eps of the inputs): that is the problem, not the formula.

    The source is the uniform distribution (density ``1 / area(S^n)``), from
    caller-drawn standard normals of shape (B, n + 1), normalised.

    Parameters
    ----------
    dim : int
        The intrinsic dimension n >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import Sphere
    >>> s = Sphere(2)
    >>> x = np.array([[1.0, 0.0, 0.0]]); y = np.array([[0.0, 1.0, 0.0]])
    >>> bool(np.isclose(s.dist(x, y)[0], np.pi / 2))
    True
    """

    dim: int

    def __post_init__(self) -> None:
        check_dim("dim", self.dim, 1)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.dim + 1,)

    @property
    def source_draws(self) -> tuple[str, tuple[int, ...]]:  # type: ignore[override]
        return ("normal", (self.dim + 1,))

    def _parts(self, xp: Any, x: Array, y: Array) -> tuple[Array, Array, Array]:
        """theta, the tangential part w of y at x (|w| = sin theta for unit x), and |w|."""
        dot = batch_dot(xp, x, y)
        v = xp.where(per_sample(xp, dot >= 0, x), y - x, y + x)
        xx = batch_dot(xp, x, x)
        w = v - per_sample(xp, batch_dot(xp, x, v) / xx, x) * x
        nw = xp.sqrt(batch_dot(xp, w, w))
        theta = xp.atan2(xp.sqrt(xx) * nw, dot)
        return theta, w, nw

    def _dist(self, xp: Any, x: Array, y: Array) -> Array:
        return self._parts(xp, x, y)[0]

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:
        theta, w, nw = self._parts(xp, x, y)
        # y == x: w = 0 and theta = 0, the limit is 0 (guarded denominator); at the
        # antipode theta = pi and w = 0: pi / 0 * 0 = NaN, the arithmetic's answer
        same = (nw == 0) & (theta == 0)
        ratio = theta / xp.where(same, xp.ones_like(nw), nw)
        return per_sample(xp, ratio, x) * w

    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:
        n = xp.sqrt(batch_dot(xp, u, u))
        return per_sample(xp, xp.cos(n), x) * x + per_sample(xp, sinc(xp, n), x) * u

    def _projx(self, xp: Any, x: Array) -> Array:
        return x / per_sample(xp, xp.sqrt(batch_dot(xp, x, x)), x)

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:
        return u - per_sample(xp, batch_dot(xp, x, u), x) * x

    def _geodesic(self, xp: Any, x: Array, u: Array, s: Array) -> tuple[Array, Array]:
        # gamma(s) = cos(s n) x + s sinc(s n) u, gamma'(s) = -n sin(s n) x + cos(s n) u
        n = per_sample(xp, xp.sqrt(batch_dot(xp, u, u)), x)
        a = s * n
        point = xp.cos(a) * x + (s * sinc(xp, a)) * u
        velocity = -(n * xp.sin(a)) * x + xp.cos(a) * u
        return point, velocity

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:
        # from y = exp_x(u) to x: w - (x . w) / (1 + x . y) (x + y), 1 + x . y = 2 cos^2(|u|/2)
        y = self._expmap(xp, x, u)
        half = xp.cos(0.5 * xp.sqrt(batch_dot(xp, u, u)))
        c = batch_dot(xp, x, w) / (2.0 * half * half)
        return w - per_sample(xp, c, x) * (x + y)

    def _violation(self, xp: Any, x: Array) -> Array:
        return xp.abs(xp.sqrt(batch_dot(xp, x, x)) - 1.0)

    def _source_sample(self, xp: Any, draws: Array) -> Array:
        return self._projx(xp, draws)

    def _source_log_prob(self, xp: Any, x: Array) -> Array:
        return xp.full((int(x.shape[0]),), -_area(self.dim), dtype=x.dtype, device=_xp.device(x))

    def _conditional_log_prob(self, xp: Any, x: Array, x1: Array, kappa: Array) -> Array:
        # theta0 = d(x0, x1) has density area(S^(n-1)) sin^(n-1)(theta0) / area(S^n) on
        # [0, pi]; the path maps it to theta = kappa theta0 along the same direction, so
        # p_t(x | x1) = (sin(theta/kappa) / sin(theta))^(n-1) / (kappa area(S^n)) for
        # theta < kappa pi, and 0 beyond.
        theta = self._parts(xp, x, x1)[0]
        n = self.dim
        base = -_area(n) - xp.log(kappa)
        if n > 1:
            # sin(theta/kappa)/sin(theta) = (theta0 sinc(theta0)) / (theta sinc(theta)) with theta0 = theta/kappa
            theta0 = theta / kappa
            base = base + (n - 1) * (
                xp.log(sinc(xp, theta0)) - xp.log(sinc(xp, theta)) - xp.log(kappa)
            )
        inside = theta < kappa * math.pi
        return xp.where(inside, base, xp.full_like(base, -math.inf))
