r"""The flat torus :math:`T^n = (\mathbb R / 2\pi\mathbb Z)^n` in angle coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ... import validation as _xp
from .base import Manifold, check_dim

__all__ = ["FlatTorus"]

Array = Any
TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class FlatTorus(Manifold):
    r"""The flat torus: n angles, each in :math:`[0, 2\pi)`, with the flat metric.

    Points and tangent vectors have shape (B, n). ``exp_x(u) = (x + u) mod 2 pi``;
    ``log_x(y)`` is the coordinate difference wrapped into :math:`[-\pi, \pi]`,
    computed as :math:`\delta - 2\pi\,\mathrm{round}(\delta / 2\pi)` with
    :math:`\delta = y - x`: exact (no rounding at all) wherever
    :math:`|\delta| \le \pi`, so nearly equal angles lose nothing.

    Cut locus: the points with some coordinate difference of exactly :math:`\pm\pi`.
    There ``log`` returns :math:`\delta` itself in that coordinate (``round`` rounds
    half to even, so :math:`\pm\pi` stays :math:`\pm\pi`): one of the two shortest
    geodesics, chosen by the sign of :math:`y - x`.

    The source is uniform (density :math:`(2\pi)^{-n}`), from caller-drawn uniforms.

    Parameters
    ----------
    dim : int
        n >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import FlatTorus
    >>> FlatTorus(1).logmap(np.array([[0.1]]), np.array([[6.0]])).round(6).tolist()
    [[-0.383185]]
    """

    dim: int

    def __post_init__(self) -> None:
        check_dim("dim", self.dim, 1)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.dim,)

    @property
    def source_draws(self) -> tuple[str, tuple[int, ...]]:  # type: ignore[override]
        return ("uniform", (self.dim,))

    def _wrap(self, xp: Any, a: Array) -> Array:
        r = xp.remainder(a, TWO_PI)
        # a tiny negative angle rounds to 2 pi itself: that is the point 0
        return xp.where(r >= TWO_PI, xp.zeros_like(r), r)

    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:
        return self._wrap(xp, x + u)

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:
        d = y - x
        return d - TWO_PI * xp.round(d / TWO_PI)

    def _projx(self, xp: Any, x: Array) -> Array:
        return self._wrap(xp, x)

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:
        return xp.asarray(u, copy=True)

    def _geodesic(self, xp: Any, x: Array, u: Array, s: Array) -> tuple[Array, Array]:
        return self._wrap(xp, x + s * u), xp.asarray(u, copy=True)

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:
        return xp.asarray(w, copy=True)

    def _violation(self, xp: Any, x: Array) -> Array:
        # distance of each angle outside [0, 2 pi], largest over the coordinates
        below = xp.maximum(-x, xp.zeros_like(x))
        above = xp.maximum(x - TWO_PI, xp.zeros_like(x))
        return xp.max(below + above, axis=1)

    def _source_sample(self, xp: Any, draws: Array) -> Array:
        return self._wrap(xp, TWO_PI * draws)

    def _source_log_prob(self, xp: Any, x: Array) -> Array:
        return xp.full(
            (int(x.shape[0]),), -self.dim * math.log(TWO_PI), dtype=x.dtype, device=_xp.device(x)
        )

    def _conditional_log_prob(self, xp: Any, x: Array, x1: Array, kappa: Array) -> Array:
        # each wrapped difference x0 - x1 is uniform on [-pi, pi); it is scaled by kappa:
        # uniform on [-kappa pi, kappa pi], density 1/(2 pi kappa) per coordinate
        d = xp.abs(self._logmap(xp, x1, x))
        k = xp.reshape(kappa, (int(x.shape[0]), 1))
        inside = xp.all(d <= k * math.pi, axis=1)
        value = -self.dim * (math.log(TWO_PI) + xp.log(kappa))
        return xp.where(inside, value, xp.full_like(value, -math.inf))
