r"""Hyperbolic space :math:`H^n` in the Lorentz (hyperboloid) model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import validation as _xp
from .base import LOG_2PI, Manifold, batch_dot, check_dim, per_sample, sinhc

__all__ = ["Hyperbolic"]

Array = Any


def _lorentz(xp: Any, u: Array, v: Array) -> Array:
    r"""Minkowski product :math:`\langle u, v \rangle_L = -u_0 v_0 + \sum_{i>0} u_i v_i`, (B,)."""
    return batch_dot(xp, u[:, 1:], v[:, 1:]) - u[:, 0] * v[:, 0]


@dataclass(frozen=True)
class Hyperbolic(Manifold):
    r"""Hyperbolic space :math:`H^n = \{x \in \mathbb R^{n+1}: \langle x, x\rangle_L = -1, x_0 > 0\}`.

    Points and tangent vectors have shape (B, n + 1); the metric is the Minkowski
    product :math:`\langle u, v\rangle_L = -u_0 v_0 + \sum_i u_i v_i` restricted to
    tangent vectors (where it is positive definite). Curvature -1.

    Numerics: the textbook ``arccosh(-<x, y>_L)`` cancels for nearly equal points
    (``-<x, y>_L - 1`` is a difference of numbers near 1). Here
    ``d(x, y) = 2 asinh(sqrt(<x - y, x - y>_L) / 2)``, which follows from
    :math:`\langle x - y, x - y\rangle_L = 2(\cosh d - 1) = 4\sinh^2(d/2)` on the
    hyperboloid; the chord ``x - y`` is computed first, so nearly equal points keep
    their relative accuracy. The logarithm is ``(d / sinh d) P_x(y - x)`` with the
    tangent projection :math:`P_x(v) = v + \langle x, v\rangle_L x` (exactly
    :math:`P_x(y)`, as :math:`P_x(x) = 0`), again on the short chord. The Minkowski
    products themselves lose accuracy for points far from the origin (entries of size
    :math:`e^r` whose products cancel to O(1)): the stated accuracy (a few ulps times
    :math:`\cosh^2 r`) is for points at distance r from the origin
    :math:`o = (1, 0, \ldots, 0)`, and ``exp`` overflows for ``|u|`` beyond the
    exponent range (about 88 in float32).

    No cut locus: :math:`H^n` is simply connected with negative curvature, so ``log``
    is defined everywhere and unique.

    The source is the wrapped normal at o: :math:`x_0 = \exp_o((0, z))` with z a
    standard normal of shape (B, n) (Nagano et al., ICML 2019); its log-density with
    respect to the Riemannian volume is
    :math:`\log \mathcal N(z) - (n - 1)\log(\sinh r / r)`, r = |z|.

    Parameters
    ----------
    dim : int
        The intrinsic dimension n >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import Hyperbolic
    >>> h = Hyperbolic(2)
    >>> o = np.array([[1.0, 0.0, 0.0]])
    >>> x = h.expmap(o, np.array([[0.0, 2.0, 0.0]]))
    >>> bool(np.isclose(h.dist(o, x)[0], 2.0))
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
        return ("normal", (self.dim,))

    def _inner(self, xp: Any, x: Array, u: Array, v: Array) -> Array:
        return _lorentz(xp, u, v)

    def _norm(self, xp: Any, x: Array, u: Array) -> Array:
        # tangent vectors are spacelike; rounding may leave a tiny negative square
        sq = _lorentz(xp, u, u)
        return xp.sqrt(xp.maximum(sq, xp.zeros_like(sq)))

    def _dist(self, xp: Any, x: Array, y: Array) -> Array:
        d = x - y
        sq = _lorentz(xp, d, d)
        return 2.0 * xp.asinh(0.5 * xp.sqrt(xp.maximum(sq, xp.zeros_like(sq))))

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:
        w = self._proju(xp, x, y - x)
        d = self._dist(xp, x, y)
        return per_sample(xp, 1.0 / sinhc(xp, d), x) * w

    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:
        n = self._norm(xp, x, u)
        return per_sample(xp, xp.cosh(n), x) * x + per_sample(xp, sinhc(xp, n), x) * u

    def _projx(self, xp: Any, x: Array) -> Array:
        space = x[:, 1:]
        x0 = xp.sqrt(1.0 + batch_dot(xp, space, space))
        return xp.concat([xp.reshape(x0, (-1, 1)), space], axis=1)

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:
        return u + per_sample(xp, _lorentz(xp, x, u), x) * x

    def _geodesic(self, xp: Any, x: Array, u: Array, s: Array) -> tuple[Array, Array]:
        n = per_sample(xp, self._norm(xp, x, u), x)
        a = s * n
        point = xp.cosh(a) * x + (s * sinhc(xp, a)) * u
        velocity = (n * xp.sinh(a)) * x + xp.cosh(a) * u
        return point, velocity

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:
        # from y = exp_x(u) to x: w + <x, w>_L / (1 - <x, y>_L) (x + y), 1 - <x, y>_L = 1 + cosh|u|
        y = self._expmap(xp, x, u)
        c = _lorentz(xp, x, w) / (1.0 + xp.cosh(self._norm(xp, x, u)))
        return w + per_sample(xp, c, x) * (x + y)

    def _violation(self, xp: Any, x: Array) -> Array:
        # |<x, x>_L + 1| relative to the size of the entries, and x0 > 0
        sq = _lorentz(xp, x, x)
        scale = batch_dot(xp, x, x)
        bad_sheet = xp.where(x[:, 0] > 0, xp.zeros_like(sq), xp.ones_like(sq))
        return xp.abs(sq + 1.0) / scale + bad_sheet

    def _origin(self, xp: Any, like: Array) -> Array:
        b = int(like.shape[0])
        o = xp.zeros((b, self.dim + 1), dtype=like.dtype, device=_xp.device(like))
        one = xp.ones((b, 1), dtype=like.dtype, device=_xp.device(like))
        return xp.concat([one, o[:, 1:]], axis=1)

    def _source_sample(self, xp: Any, draws: Array) -> Array:
        b = int(draws.shape[0])
        zero = xp.zeros((b, 1), dtype=draws.dtype, device=_xp.device(draws))
        u = xp.concat([zero, draws], axis=1)
        return self._expmap(xp, self._origin(xp, draws), u)

    def _source_log_prob(self, xp: Any, x: Array) -> Array:
        space = x[:, 1:]
        r = xp.asinh(xp.sqrt(batch_dot(xp, space, space)))  # d(o, x), no cancellation
        return -0.5 * r * r - 0.5 * self.dim * LOG_2PI - (self.dim - 1) * xp.log(sinhc(xp, r))
