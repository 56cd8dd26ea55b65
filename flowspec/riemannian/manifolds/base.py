r"""The interface every manifold implements, and the numerics they share.

A manifold is an immutable object; its points and tangent vectors are batch-first
arrays of shape (B, *event_shape) in the coordinates of an embedding (a sphere in
R^(d+1), the hyperboloid in Minkowski space R^(n+1), rotations as 3 x 3 matrices, the
torus in angle coordinates). A tangent vector at x is an array of x's shape.

Each public method resolves the Array API namespace once, validates its arguments
(names in the error messages) and calls the private ``_name(xp, ...)`` form, which the
path and the solvers call directly after their own validation.

References
----------
Chen, R. T. Q. and Lipman, Y., "Flow Matching on General Geometries", ICLR 2024
(arXiv:2302.03660).
"""

from __future__ import annotations

import math
from typing import Any

from ... import validation as _xp

__all__ = ["Manifold", "batch_dot", "per_sample"]

Array = Any


def per_sample(xp: Any, s: Array, x: Array) -> Array:
    """A (B,) array as (B, 1, ..., 1) against ``x``."""
    return xp.reshape(s, (int(x.shape[0]),) + (1,) * (x.ndim - 1))


def batch_dot(xp: Any, u: Array, v: Array) -> Array:
    """Euclidean inner product over all event axes, shape (B,)."""
    return xp.sum(xp.reshape(u * v, (int(u.shape[0]), -1)), axis=1)


def sinc(xp: Any, a: Array) -> Array:
    r"""``sin(a)/a`` with its limit 1 at a = 0, relative error a few ulps everywhere.

    ``sin`` of a nonzero floating number is accurate to an ulp relative to its value
    and the division adds one rounding, so only a = 0 (where 0/0) needs its limit;
    the guarded denominator keeps autodiff finite there (its branch is not selected).
    """
    zero = a == 0
    safe = xp.where(zero, xp.ones_like(a), a)
    return xp.where(zero, xp.ones_like(a), xp.sin(safe) / safe)


def sinhc(xp: Any, a: Array) -> Array:
    r"""``sinh(a)/a`` with its limit 1 at a = 0 (accurate to a few ulps, as :func:`sinc`)."""
    zero = a == 0
    safe = xp.where(zero, xp.ones_like(a), a)
    return xp.where(zero, xp.ones_like(a), xp.sinh(safe) / safe)


class Manifold:
    r"""Base class of the Riemannian manifolds of ``flowspec.riemannian``.

    Subclasses set :attr:`event_shape` and implement the private ``_expmap``,
    ``_logmap``, ``_dist``, ``_projx``, ``_proju``, ``_inner``, ``_geodesic``,
    ``_transport_back`` and, where the manifold has one, the source
    (``_source_sample``, ``_source_log_prob``, :attr:`source_draws`).
    """

    #: Shape of one point (and one tangent vector) in embedding coordinates.
    event_shape: tuple[int, ...] = ()
    #: The caller-drawn randomness the source needs: ("normal" or "uniform", per-sample shape).
    source_draws: tuple[str, tuple[int, ...]] | None = None

    # -- validation ---------------------------------------------------------------------
    def _check(self, **arrays: Array) -> Any:
        xp = _xp.namespace(**arrays)
        first_name, first = next(iter(arrays.items()))
        for name, a in arrays.items():
            _xp.check_float(xp, name, a, like=None if name == first_name else (first_name, first))
            shape = tuple(a.shape)
            if a.ndim != 1 + len(self.event_shape) or shape[1:] != self.event_shape:
                raise ValueError(
                    f"`{name}` must have shape (B, {', '.join(map(str, self.event_shape))}) "
                    f"for {self!r}, got shape {shape}"
                )
            if shape[0] != int(first.shape[0]):
                raise ValueError(
                    f"`{name}` and `{first_name}` must have the same batch size, got "
                    f"{shape[0]} and {int(first.shape[0])}"
                )
        return xp

    # -- public maps --------------------------------------------------------------------
    def expmap(self, x: Array, u: Array) -> Array:
        r"""The exponential map :math:`\exp_x(u)`: the point at time 1 of the geodesic from x with velocity u.

        Parameters
        ----------
        x : array, shape (B, *event_shape)
            Points of the manifold.
        u : array, shape (B, *event_shape)
            Tangent vectors at x.

        Returns
        -------
        array, shape (B, *event_shape)
        """
        xp = self._check(x=x, u=u)
        return self._expmap(xp, x, u)

    def logmap(self, x: Array, y: Array) -> Array:
        r"""The logarithm :math:`\log_x(y)`: the tangent vector at x of the shortest geodesic to y.

        Its norm is ``dist(x, y)``. On the cut locus of x (see the class's docstring)
        the shortest geodesic is not unique; what is returned there is documented by
        each manifold.

        Returns
        -------
        array, shape (B, *event_shape), tangent at x
        """
        xp = self._check(x=x, y=y)
        return self._logmap(xp, x, y)

    def dist(self, x: Array, y: Array) -> Array:
        r"""The geodesic distance :math:`d(x, y)`, shape (B,)."""
        xp = self._check(x=x, y=y)
        return self._dist(xp, x, y)

    def projx(self, x: Array) -> Array:
        """The closest point of the manifold to ``x`` (in the embedding), shape of ``x``."""
        xp = self._check(x=x)
        return self._projx(xp, x)

    def proju(self, x: Array, u: Array) -> Array:
        """The projection of an ambient vector ``u`` onto the tangent space at ``x``."""
        xp = self._check(x=x, u=u)
        return self._proju(xp, x, u)

    def inner(self, x: Array, u: Array, v: Array) -> Array:
        r"""The Riemannian inner product :math:`g_x(u, v)` of tangent vectors at x, shape (B,)."""
        xp = self._check(x=x, u=u, v=v)
        return self._inner(xp, x, u, v)

    def norm(self, x: Array, u: Array) -> Array:
        r"""The Riemannian norm :math:`\lVert u \rVert_x = \sqrt{g_x(u, u)}`, shape (B,)."""
        xp = self._check(x=x, u=u)
        return self._norm(xp, x, u)

    def geodesic(self, x: Array, u: Array, s: Array | float) -> tuple[Array, Array]:
        r"""The geodesic :math:`\gamma(s) = \exp_x(s u)` and its velocity :math:`\gamma'(s)`.

        Both by closed forms (no differentiation, no division by ``|u|``), so the
        time derivative of the geodesic conditional path is exact.

        Parameters
        ----------
        x, u : array, shape (B, *event_shape)
        s : float or array, shape () or (B,) or (B, 1, ..., 1)
            Any real parameter (not restricted to [0, 1]).

        Returns
        -------
        point, velocity : array, shape (B, *event_shape)
        """
        xp = self._check(x=x, u=u)
        ss = _xp.time_array(xp, s, x, name="s", domain=None)
        return self._geodesic(xp, x, u, ss)

    def transport_back(self, x: Array, u: Array, w: Array) -> Array:
        r"""Parallel transport of ``w``, tangent at :math:`\exp_x(u)`, back to x along the geodesic.

        The solvers use it to bring a stage's velocity into the tangent space of the
        step's start.
        """
        xp = self._check(x=x, u=u, w=w)
        return self._transport_back(xp, x, u, w)

    def constraint_violation(self, x: Array) -> Array:
        """How far ``x`` is from the manifold, in the embedding's units, shape (B,).

        Zero (to round-off) for points of the manifold; the solvers' drift is measured
        with it.
        """
        xp = self._check(x=x)
        return self._violation(xp, x)

    def source_sample(self, draws: Array) -> Array:
        r"""Samples of the source :math:`p_0` from caller-drawn randomness.

        ``draws`` has shape (B, *shape) with ``(kind, shape) = self.source_draws``:
        standard normals or uniforms on [0, 1) drawn by the caller (the core has no
        random generator; ``flowspec.backends.torch`` and ``jax`` have wrappers
        that draw them).

        Returns
        -------
        array, shape (B, *event_shape)
        """
        if self.source_draws is None:  # pragma: no cover - every shipped manifold has one
            raise NotImplementedError(f"{self!r} has no source")
        xp = _xp.namespace(draws=draws)
        _xp.check_float(xp, "draws", draws)
        kind, shape = self.source_draws
        if draws.ndim != 1 + len(shape) or tuple(draws.shape[1:]) != shape:
            raise ValueError(
                f"`draws` must have shape (B, {', '.join(map(str, shape))}) of {kind} "
                f"draws for {self!r}, got shape {tuple(draws.shape)}"
            )
        return self._source_sample(xp, draws)

    def source_log_prob(self, x: Array) -> Array:
        r"""The log-density of the source at ``x`` w.r.t. the Riemannian volume, shape (B,)."""
        xp = self._check(x=x)
        return self._source_log_prob(xp, x)

    def conditional_log_prob(self, x: Array, x1: Array, kappa: Array | float) -> Array:
        r"""log-density of the geodesic conditional path, the source pushed by :math:`x_0 \mapsto \exp_{x_1}(\kappa \log_{x_1} x_0)`.

        Closed form where one exists (not for :class:`Hyperbolic`, whose source is not
        centred at x1); -inf outside the support. Used by
        :meth:`flowspec.riemannian.GeodesicPath.log_prob`.
        """
        xp = self._check(x=x, x1=x1)
        k = _xp.time_array(xp, kappa, x, name="kappa")
        return self._conditional_log_prob(xp, x, x1, xp.reshape(k, (int(x.shape[0]),)))

    # -- shared private forms -----------------------------------------------------------
    def _inner(self, xp: Any, x: Array, u: Array, v: Array) -> Array:
        return batch_dot(xp, u, v)

    def _norm(self, xp: Any, x: Array, u: Array) -> Array:
        return xp.sqrt(self._inner(xp, x, u, u))

    def _dist(self, xp: Any, x: Array, y: Array) -> Array:
        return self._norm(xp, x, self._logmap(xp, x, y))

    def _conditional_log_prob(self, xp: Any, x: Array, x1: Array, kappa: Array) -> Array:
        raise NotImplementedError(
            f"{self!r} has no closed-form density of the geodesic conditional path"
        )

    # the subclasses' maps
    def _expmap(self, xp: Any, x: Array, u: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _logmap(self, xp: Any, x: Array, y: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _projx(self, xp: Any, x: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _proju(self, xp: Any, x: Array, u: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _geodesic(
        self, xp: Any, x: Array, u: Array, s: Array
    ) -> tuple[Array, Array]:  # pragma: no cover
        raise NotImplementedError

    def _transport_back(self, xp: Any, x: Array, u: Array, w: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _violation(self, xp: Any, x: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _source_sample(self, xp: Any, draws: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def _source_log_prob(self, xp: Any, x: Array) -> Array:  # pragma: no cover
        raise NotImplementedError


def check_dim(name: str, value: Any, minimum: int) -> int:
    """A constructor's dimension: an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {_xp.describe(value)}")
    return value


LOG_2PI = math.log(2.0 * math.pi)
