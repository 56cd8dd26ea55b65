r"""Euclidean space :math:`\mathbb R^n` as a Riemannian manifold (the Flow Matching of Lipman et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import validation as _xp
from .base import LOG_2PI, Manifold, batch_dot, check_dim, per_sample

__all__ = ["Euclidean"]

Array = Any


@dataclass(frozen=True)
class Euclidean(Manifold):
    r"""The flat space :math:`\mathbb R^n`: points and tangent vectors of shape (B, n).

    ``exp_x(u) = x + u``, ``log_x(y) = y - x``, ``d(x, y) = |y - x|``; no cut locus.
    The source is the standard normal N(0, I), from caller-drawn normals. With
    ``kappa_t = sigma_t`` of ``fs.CondOT()`` the geodesic path is the paper's OT path
    with sigma_min = 0.

    Parameters
    ----------
    dim : int
        n >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import Euclidean
    >>> Euclidean(2).logmap(np.zeros((1, 2)), np.array([[3.0, 4.0]])).tolist()
    [[3.0, 4.0]]
    """

    dim: int

    def __post_init__(self) -> None:
        check_dim("dim", self.dim, 1)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.dim,)

    @property
    def source_draws(self) -> tuple[str, tuple[int, ...]]:  # type: ignore[override]
        return ("normal", (self.dim,))

    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:
        return x + u

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:
        return y - x

    def _projx(self, xp: Any, x: Array) -> Array:
        return xp.asarray(x, copy=True)

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:
        return xp.asarray(u, copy=True)

    def _geodesic(self, xp: Any, x: Array, u: Array, s: Array) -> tuple[Array, Array]:
        return x + s * u, xp.asarray(u, copy=True)

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:
        return xp.asarray(w, copy=True)

    def _violation(self, xp: Any, x: Array) -> Array:
        return xp.zeros((int(x.shape[0]),), dtype=x.dtype, device=_xp.device(x))

    def _source_sample(self, xp: Any, draws: Array) -> Array:
        return xp.asarray(draws, copy=True)

    def _source_log_prob(self, xp: Any, x: Array) -> Array:
        return -0.5 * batch_dot(xp, x, x) - 0.5 * self.dim * LOG_2PI

    def _conditional_log_prob(self, xp: Any, x: Array, x1: Array, kappa: Array) -> Array:
        # x_t = (1 - kappa) x1 + kappa x0, x0 ~ N(0, I): N((1 - kappa) x1, kappa^2 I)
        r = x - per_sample(xp, 1.0 - kappa, x) * x1
        return (
            -0.5 * batch_dot(xp, r, r) / (kappa * kappa)
            - self.dim * xp.log(kappa)
            - 0.5 * self.dim * LOG_2PI
        )
