r"""Fixed-step ODE solvers that stay on the manifold (sampling for Riemannian Flow Matching).

A field is ``field(t, x)`` with ``t`` of shape (B,) in x's namespace and dtype, as in
training; its value is projected onto the tangent space at x (``proju``) before use.

Each method is a Runge-Kutta method written in the tangent space of the step's
start :math:`x_k` (geodesic, "normal-coordinate" Runge-Kutta): a stage point is
:math:`Y_i = \exp_{x_k}(h \sum_j a_{ij} K_j)`, the stage velocity
:math:`v(t_k + c_i h, Y_i)` is parallel-transported back to :math:`T_{x_k}` along that
geodesic to give :math:`K_i`, and the step is
:math:`x_{k+1} = \mathrm{projx}(\exp_{x_k}(h \sum_i b_i K_i))`. Every state is thus
produced by ``expmap`` and re-projected, so the drift off the manifold stays at
round-off however many steps are taken.

Orders: on flat manifolds (Euclidean, torus) and for fields whose integral curves
are geodesics (the conditional field of :class:`GeodesicPath`), the methods keep their
classical orders (1, 2, 4): parallel transport along the geodesic is exactly the
pull-back of the field to normal coordinates there. For a general field on a curved
manifold parallel transport differs from the inverse differential of ``exp`` by the
curvature, :math:`O(|h K|^2)` on the component orthogonal to the stage direction,
which is itself O(h): local error :math:`O(h^4)`, so ``rk4`` is of order 3 there
(measured in the tests), ``euler`` and ``midpoint`` keep 1 and 2.

Times follow the seed's grid from its own start: :math:`t_k = t_0 + k h`,
:math:`h = (t_1 - t_0)/\text{steps}` (computed from k, never accumulated), or an
explicit host ``time_grid``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from .. import validation as _xp
from .manifolds.base import Manifold

__all__ = ["TABLEAUS", "integrate", "solve"]

Array = Any
Field = Callable[[Array, Array], Array]
Method = Literal["euler", "midpoint", "rk4"]

#: Method -> (a, b, c) Butcher tableau of the explicit method (a lower triangular).
TABLEAUS: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...], tuple[float, ...]]] = {
    "euler": ((), (1.0,), (0.0,)),
    "midpoint": (((0.5,),), (0.0, 1.0), (0.0, 0.5)),
    "rk4": (
        ((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0),
        (0.0, 0.5, 0.5, 1.0),
    ),
}
#: Method -> classical order.
ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}


def _call(manifold: Manifold, field: Field, xp: Any, t: float, x: Array) -> Array:
    tb = xp.full((int(x.shape[0]),), t, dtype=x.dtype, device=_xp.device(x))
    out = _xp.check_output("field(t, x)", field(tb, x), xp, tuple(x.shape), x.dtype)
    return manifold._proju(xp, x, out)


def step(
    manifold: Manifold, field: Field, xp: Any, method: str, t: float, t_next: float, x: Array
) -> Array:
    """One step of ``method`` from (t, x) to ``t_next`` (see the module docstring).

    A stage at the step's end (c = 1) is evaluated at ``t_next`` itself, never at the
    rounded ``t + h`` (which can leave [0, 1] by an ulp at the end of a backward run).
    """
    a, b, c = TABLEAUS[method]
    h = t_next - t
    ks = [_call(manifold, field, xp, t, x)]
    for i, row in enumerate(a, start=1):
        xi = sum((h * aij) * k for aij, k in zip(row, ks, strict=True) if aij != 0.0)
        y = manifold._projx(xp, manifold._expmap(xp, x, xi))
        w = _call(manifold, field, xp, t_next if c[i] == 1.0 else t + c[i] * h, y)
        ks.append(manifold._transport_back(xp, x, xi, w))
    incr = sum((h * bi) * k for bi, k in zip(b, ks, strict=True) if bi != 0.0)
    return manifold._projx(xp, manifold._expmap(xp, x, incr))


def _check(manifold: Any, field: Any, x0: Any, method: Any) -> Any:
    if not isinstance(manifold, Manifold):
        raise TypeError(
            f"`manifold` must be a flowspec.riemannian manifold, got {_xp.describe(manifold)}"
        )
    if not callable(field):
        raise TypeError(f"`field` must be a callable field(t, x), got {_xp.describe(field)}")
    if method not in TABLEAUS:
        raise ValueError(f"`method` must be one of {tuple(TABLEAUS)}, got {method!r}")
    return manifold._check(x0=x0)


def _run(
    manifold: Manifold,
    field: Field,
    xp: Any,
    method: str,
    x0: Array,
    times: Sequence[float],
    ends: Sequence[float],
    return_path: bool,
) -> Array:
    x = x0
    states = [x0]
    for t, t_next in zip(times, ends, strict=True):
        x = step(manifold, field, xp, method, t, t_next, x)
        if return_path:
            states.append(x)
    return xp.stack(states, axis=0) if return_path else x


def solve(
    manifold: Manifold,
    field: Field,
    x0: Array,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    method: Method = "euler",
    return_path: bool = False,
) -> Array:
    r"""Integrate :math:`\dot x = v(t, x)` on the manifold with ``steps`` equal steps from ``t0`` to ``t1``.

    The times are :math:`t_k = t_0 + k h`, :math:`h = (t_1 - t_0)/\text{steps}`, from
    the grid's own start (``t1 < t0`` integrates backwards); each step goes through
    ``expmap`` and is projected onto the manifold (module docstring).

    Parameters
    ----------
    manifold : Manifold
    field : callable
        ``field(t, x)``, t of shape (B,); its value is projected with ``proju``.
    x0 : array, shape (B, *event_shape)
        Points of the manifold at ``t0``.
    steps : int
        >= 1.
    t0, t1 : float
    method : {"euler", "midpoint", "rk4"}
    return_path : bool
        If true, all ``steps + 1`` states stacked on a new leading axis.

    Returns
    -------
    array, shape (B, *event_shape), or (steps + 1, B, *event_shape)

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.riemannian import Sphere, solve
    >>> s = Sphere(2)
    >>> spin = lambda t, x: np.stack([-x[:, 1], x[:, 0], 0 * x[:, 2]], axis=1)
    >>> x = solve(s, spin, np.array([[1.0, 0.0, 0.0]]), steps=8, t1=np.pi / 2, method="rk4")
    >>> bool(np.allclose(x, [[0.0, 1.0, 0.0]]))
    True
    """
    xp = _check(manifold, field, x0, method)
    times, _ = _xp.euler_times(steps, t0, t1)
    ends = [*times[1:], float(t1)]
    return _run(manifold, field, xp, method, x0, times, ends, return_path)


def integrate(
    manifold: Manifold,
    field: Field,
    x0: Array,
    time_grid: Any,
    method: Method = "euler",
    return_path: bool = False,
) -> Array:
    r"""Integrate on the manifold over an explicit host time grid (increasing or decreasing).

    As :func:`solve`, one step per interval of ``time_grid`` (a sequence of numbers or
    a NumPy array, strictly monotone, at least two times).

    Returns
    -------
    array, shape (B, *event_shape), or (len(time_grid), B, *event_shape)
    """
    xp = _check(manifold, field, x0, method)
    grid = [float(v) for v in _xp.host_grid("time_grid", time_grid)]
    return _run(manifold, field, xp, method, x0, grid[:-1], grid[1:], return_path)
