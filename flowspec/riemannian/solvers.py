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

__all__ = ["TABLEAUS", "integrate", "log_likelihood", "solve", "step", "step_with_integral"]

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
    return step_with_integral(manifold, field, xp, method, t, t_next, x, None)[0]


def step_with_integral(
    manifold: Manifold,
    field: Field,
    xp: Any,
    method: str,
    t: float,
    t_next: float,
    x: Array,
    integrand: Callable[[Array, Array], Array] | None,
) -> tuple[Array, Array | None]:
    """:func:`step`, and the same method's quadrature of ``integrand(t, x) -> (B,)`` over the step.

    The integrand is evaluated at the stage times and points: the likelihood's
    divergence integral rides along the state with the method's own weights.
    """
    a, b, c = TABLEAUS[method]
    h = t_next - t

    def at(time: float, y: Array) -> Array:
        assert integrand is not None  # only called when there is one
        tb = xp.full((int(y.shape[0]),), time, dtype=y.dtype, device=_xp.device(y))
        return _xp.check_output(
            "divergence(t, x)", integrand(tb, y), xp, (int(y.shape[0]),), y.dtype
        )

    ks = [_call(manifold, field, xp, t, x)]
    gs = [at(t, x)] if integrand is not None else []
    for i, row in enumerate(a, start=1):
        xi = sum((h * aij) * k for aij, k in zip(row, ks, strict=False) if aij != 0.0)
        y = manifold._projx(xp, manifold._expmap(xp, x, xi))
        ti = t_next if c[i] == 1.0 else t + c[i] * h
        w = _call(manifold, field, xp, ti, y)
        ks.append(manifold._transport_back(xp, x, xi, w))
        if integrand is not None:
            gs.append(at(ti, y))
    incr = sum((h * bi) * k for bi, k in zip(b, ks, strict=True) if bi != 0.0)
    x_next = manifold._projx(xp, manifold._expmap(xp, x, incr))
    if integrand is None:
        return x_next, None
    return x_next, sum((h * bi) * g for bi, g in zip(b, gs, strict=True) if bi != 0.0)


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


def log_likelihood(
    manifold: Manifold,
    field: Field,
    x1: Array,
    log_p0: Callable[[Array], Array],
    divergence: Callable[[Array, Array], Array],
    steps: int = 100,
    method: Method = "euler",
) -> Array:
    r""":math:`\log p_1(x_1)` of the flow of ``field`` by the Riemannian instantaneous change of variables.

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \mathrm{div}_g\, v_t(x_t)\, dt,

    integrated from data (t = 1) back to the source (t = 0) with :func:`solve`'s
    method on ``steps`` equal steps; the divergence integral uses the same stages and
    weights. ``divergence(t, x) -> (B,)`` is the Riemannian divergence
    :math:`\mathrm{tr}(P_x\, \partial_x v)` of the field (the core has no autodiff:
    :func:`flowspec.backends.torch.riemannian_divergence` and its JAX twin compute it).

    Parameters
    ----------
    manifold : Manifold
    field : callable
        ``field(t, x)``, t of shape (B,).
    x1 : array, shape (B, *event_shape)
        Points at t = 1.
    log_p0 : callable
        ``log_p0(x0) -> (B,)``, e.g. ``manifold.source_log_prob``.
    divergence : callable
        ``divergence(t, x) -> (B,)``.
    steps : int
    method : {"euler", "midpoint", "rk4"}

    Returns
    -------
    array, shape (B,)
    """
    xp = _check(manifold, field, x1, method)
    if not callable(log_p0):
        raise TypeError(f"`log_p0` must be a callable log_p0(x0), got {_xp.describe(log_p0)}")
    if not callable(divergence):
        raise TypeError(
            f"`divergence` must be a callable divergence(t, x), got {_xp.describe(divergence)}"
        )
    times, _ = _xp.euler_times(steps, 1.0, 0.0)
    ends = [*times[1:], 0.0]
    x = x1
    total = xp.zeros((int(x1.shape[0]),), dtype=x1.dtype, device=_xp.device(x1))
    for t, t_next in zip(times, ends, strict=True):
        x, incr = step_with_integral(manifold, field, xp, method, t, t_next, x, divergence)
        total = total + incr
    # total = int_1^0 div dt = -int_0^1 div dt
    lp0 = _xp.check_output("log_p0(x0)", log_p0(x), xp, (int(x1.shape[0]),), x1.dtype)
    return lp0 + total
