r"""The rotation group SO(3) with its bi-invariant metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ... import validation as _xp
from .base import Manifold, batch_dot, sinc

__all__ = ["SO3"]

Array = Any


def _mT(xp: Any, a: Array) -> Array:
    return xp.permute_dims(a, (0, 2, 1))


def _vee(xp: Any, a: Array) -> Array:
    """The axis vector of the skew part of 3 x 3 matrices, shape (B, 3)."""
    return 0.5 * xp.stack(
        [a[:, 2, 1] - a[:, 1, 2], a[:, 0, 2] - a[:, 2, 0], a[:, 1, 0] - a[:, 0, 1]], axis=1
    )


def _hat(xp: Any, w: Array) -> Array:
    """The skew matrices of axis vectors, shape (B, 3, 3)."""
    z = xp.zeros_like(w[:, 0])
    rows = [
        xp.stack([z, -w[:, 2], w[:, 1]], axis=1),
        xp.stack([w[:, 2], z, -w[:, 0]], axis=1),
        xp.stack([-w[:, 1], w[:, 0], z], axis=1),
    ]
    return xp.stack(rows, axis=1)


def _eye(xp: Any, like: Array) -> Array:
    e = xp.eye(3, dtype=like.dtype, device=_xp.device(like))
    return xp.broadcast_to(e, (int(like.shape[0]), 3, 3))


def _rodrigues(xp: Any, w: Array) -> Array:
    r"""exp(hat w) = I + sinc(t) K + (1/2) sinc^2(t/2) K^2, t = |w|, division-free at 0."""
    t = xp.sqrt(xp.sum(w * w, axis=1))
    k = _hat(xp, w)
    a = xp.reshape(sinc(xp, t), (-1, 1, 1))
    h = sinc(xp, 0.5 * t)
    b = xp.reshape(0.5 * h * h, (-1, 1, 1))
    return _eye(xp, w) + a * k + b * (k @ k)


@dataclass(frozen=True)
class SO3(Manifold):
    r"""Rotations of R^3 as 3 x 3 orthogonal matrices of determinant 1.

    Points have shape (B, 3, 3); a tangent vector at R is :math:`R\,\hat\omega` with
    :math:`\hat\omega` skew-symmetric (body angular velocity :math:`\omega`). The
    metric is :math:`g(U, V) = \tfrac12 \mathrm{tr}(U^\top V)`, so that
    :math:`|R\hat\omega| = |\omega|` and ``dist`` is the rotation angle of
    :math:`R^\top S` in :math:`[0, \pi]`.

    Numerics: with :math:`E = R^\top (S - R) = R^\top S - I` (the short difference,
    computed first), the angle is
    :math:`\theta = \mathrm{atan2}(|\mathrm{vee}(E)|, 1 + \mathrm{tr}(E)/2)`, accurate
    to a few ulps of pi in absolute terms for nearly equal and nearly opposite
    rotations (``acos((tr - 1)/2)`` loses half the digits at both ends). ``log`` uses
    :math:`\theta/\sin\theta\,\mathrm{vee}(E)` for :math:`\theta \le \pi/2`; beyond,
    where the skew part fades, the axis comes from the symmetric part
    :math:`\tfrac12(Q + Q^\top) - \cos\theta\, I = (1 - \cos\theta) n n^\top` (its column of
    largest diagonal entry), signed to agree with ``vee(E)``.

    Cut locus: the rotations by exactly pi relative to R (``vee(E) = 0``). There
    ``log`` returns one of the two shortest geodesics, :math:`\pm\pi n`, with the sign
    that makes the component of n of largest magnitude positive.

    The source is the uniform (Haar) distribution, density :math:`1/(8\pi^2)` for this
    metric, from caller-drawn standard normals of shape (B, 4): the unit quaternion
    ``z / |z|`` is uniform on S^3, and its rotation is Haar-distributed.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import SO3
    >>> r = SO3()
    >>> R = np.eye(3)[None]
    >>> S = r.expmap(R, np.array([[[0.0, -0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]]))
    >>> bool(np.isclose(r.dist(R, S)[0], 0.5))
    True
    """

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (3, 3)

    @property
    def source_draws(self) -> tuple[str, tuple[int, ...]]:  # type: ignore[override]
        return ("normal", (4,))

    def _inner(self, xp: Any, x: Array, u: Array, v: Array) -> Array:
        return 0.5 * batch_dot(xp, u, v)

    def _angle_parts(self, xp: Any, x: Array, y: Array) -> tuple[Array, Array, Array, Array]:
        e = _mT(xp, x) @ (y - x)
        v = _vee(xp, e)
        s = xp.sqrt(xp.sum(v * v, axis=1))
        c = 1.0 + 0.5 * (e[:, 0, 0] + e[:, 1, 1] + e[:, 2, 2])
        return e, v, s, c

    def _dist(self, xp: Any, x: Array, y: Array) -> Array:
        _, _, s, c = self._angle_parts(xp, x, y)
        return xp.atan2(s, c)

    def _axis_angle(self, xp: Any, x: Array, y: Array) -> Array:
        """The rotation vector omega of R^T S, |omega| = theta in [0, pi], shape (B, 3)."""
        e, v, s, c = self._angle_parts(xp, x, y)
        theta = xp.atan2(s, c)
        # small and medium angles: omega = theta / sin(theta) vee(E)
        small = c >= 0
        omega_small = (
            xp.reshape(1.0 / sinc(xp, xp.where(small, theta, xp.zeros_like(theta))), (-1, 1)) * v
        )
        # large angles: axis from the symmetric part (1 - c) n n^T
        q = e + _eye(xp, e)
        sym = 0.5 * (q + _mT(xp, q)) - xp.reshape(c, (-1, 1, 1)) * _eye(xp, e)
        diag = xp.stack([sym[:, 0, 0], sym[:, 1, 1], sym[:, 2, 2]], axis=1)
        pick = xp.argmax(diag, axis=1)
        onehot = xp.astype(
            xp.reshape(pick, (-1, 1)) == xp.reshape(xp.arange(3, device=_xp.device(x)), (1, 3)),
            x.dtype,
        )
        col = xp.sum(sym * xp.reshape(onehot, (-1, 1, 3)), axis=2)  # sym[:, :, pick]
        norm = xp.sqrt(xp.sum(col * col, axis=1))
        norm = xp.where(small, xp.ones_like(norm), norm)
        n = col / xp.reshape(norm, (-1, 1))
        sign = xp.where(xp.sum(n * v, axis=1) < 0, -xp.ones_like(s), xp.ones_like(s))
        omega_large = xp.reshape(sign * theta, (-1, 1)) * n
        return xp.where(xp.reshape(small, (-1, 1)), omega_small, omega_large)

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:
        return x @ _hat(xp, self._axis_angle(xp, x, y))

    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:
        return x @ _rodrigues(xp, _vee(xp, _mT(xp, x) @ u))

    def _projx(self, xp: Any, x: Array) -> Array:
        # nearest rotation: U diag(1, 1, det(U V^T)) V^T from the SVD
        u, _, vh = xp.linalg.svd(x)
        d = xp.linalg.det(u @ vh)
        ones = xp.ones_like(d)
        scale = xp.stack([ones, ones, d], axis=1)
        return (u * xp.reshape(scale, (-1, 1, 3))) @ vh

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:
        a = _mT(xp, x) @ u
        return x @ (0.5 * (a - _mT(xp, a)))

    def _geodesic(self, xp: Any, x: Array, u: Array, s: Array) -> tuple[Array, Array]:
        w = _vee(xp, _mT(xp, x) @ u)
        point = x @ _rodrigues(xp, xp.reshape(s, (-1, 1)) * w)
        return point, point @ _hat(xp, w)

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:
        # bi-invariant metric: with M = exp_R(u/2) and S = exp_R(u),
        # the transport of W from S to R is M S^T W M^T R
        m = self._expmap(xp, x, 0.5 * u)
        y = self._expmap(xp, x, u)
        return m @ _mT(xp, y) @ w @ _mT(xp, m) @ x

    def _violation(self, xp: Any, x: Array) -> Array:
        g = _mT(xp, x) @ x - _eye(xp, x)
        orth = xp.sqrt(xp.sum(xp.reshape(g * g, (int(x.shape[0]), -1)), axis=1))
        return orth + xp.abs(xp.linalg.det(x) - 1.0)

    def _source_sample(self, xp: Any, draws: Array) -> Array:
        q = draws / xp.reshape(xp.sqrt(xp.sum(draws * draws, axis=1)), (-1, 1))
        a, b, c, d = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        rows = [
            xp.stack([1 - 2 * (c * c + d * d), 2 * (b * c - a * d), 2 * (b * d + a * c)], axis=1),
            xp.stack([2 * (b * c + a * d), 1 - 2 * (b * b + d * d), 2 * (c * d - a * b)], axis=1),
            xp.stack([2 * (b * d - a * c), 2 * (c * d + a * b), 1 - 2 * (b * b + c * c)], axis=1),
        ]
        return xp.stack(rows, axis=1)

    def _source_log_prob(self, xp: Any, x: Array) -> Array:
        return xp.full(
            (int(x.shape[0]),), -math.log(8.0 * math.pi**2), dtype=x.dtype, device=_xp.device(x)
        )

    def _conditional_log_prob(self, xp: Any, x: Array, x1: Array, kappa: Array) -> Array:
        # Haar in exponential coordinates around x1: density sinc^2(theta/2) / (8 pi^2)
        # per d omega; omega -> kappa omega scales it by kappa^-3, and the volume at x is
        # sinc^2(theta/2) d omega: p = sinc^2(theta0/2) / (sinc^2(theta/2) kappa^3 8 pi^2)
        theta = self._dist(xp, x1, x)
        theta0 = theta / kappa
        value = (
            2.0 * (xp.log(xp.abs(sinc(xp, 0.5 * theta0))) - xp.log(sinc(xp, 0.5 * theta)))
            - 3.0 * xp.log(kappa)
            - math.log(8.0 * math.pi**2)
        )
        inside = theta < kappa * math.pi
        return xp.where(inside, value, xp.full_like(value, -math.inf))
