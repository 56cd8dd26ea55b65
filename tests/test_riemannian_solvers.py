"""Solvers on manifolds: the conditional field generates the path, drift, orders, the time grid.

Error model for the orders: the global error of a method of order p is C h^p; the
slope of log(error) against log(h) over a ladder of h is fitted and must be within
0.3 of p (the ladder is chosen where C h^p dominates round-off).
"""

from __future__ import annotations

import numpy as np
import pytest
from riemannian_cases import points, tangent

import flowspec as fs
from flowspec.riemannian import (
    SO3,
    Euclidean,
    FlatTorus,
    GeodesicPath,
    Hyperbolic,
    Sphere,
    integrate,
    solve,
)

EPS64 = np.finfo(np.float64).eps
CURVED = [Sphere(2), Hyperbolic(2), SO3(), FlatTorus(2), Euclidean(2)]


def _conditional(m, seed=0, batch=6):
    rng = np.random.default_rng(seed)
    x1 = points(m, rng, batch)
    x0 = m.expmap(x1, tangent(m, x1, rng, 0.8)) if isinstance(m, Sphere) else points(m, rng, batch)
    path = GeodesicPath(m, fs.Cosine())
    return path, x0, x1


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("m", CURVED, ids=repr)
@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_conditional_field_generates_the_path_with_the_declared_order(m, method, order):
    path, x0, x1 = _conditional(m)
    t_end = 0.8
    exact = path.sample(x0, x1, t_end)
    field = lambda t, x: path.velocity(x, x1, t)  # noqa: E731
    steps = [8, 16, 32] if order < 4 else [16, 32, 64]
    errs = []
    for n in steps:
        x = solve(m, field, x0, steps=n, t1=t_end, method=method)
        errs.append(np.max(m.dist(x, exact)))
    assert errs[-1] < 0.05
    assert abs(_slope(1.0 / np.array(steps), errs) - order) < 0.3, errs


def test_rk4_order_on_a_rotation_field_of_the_sphere():
    """A general (non-geodesic) field: the rotation about a fixed axis, x(t) = expm(tA) x0."""
    m = Sphere(2)
    rng = np.random.default_rng(1)
    x0 = points(m, rng, 5)
    a = np.array([[0.0, -1.0, 0.3], [1.0, 0.0, -0.5], [-0.3, 0.5, 0.0]])
    field = lambda t, x: x @ a.T * (1.0 + t[:, None])  # noqa: E731 - time-dependent speed
    T = 1.5
    # exact: angle int_0^T (1 + t) dt about the axis of A
    from scipy.linalg import expm

    exact = x0 @ expm((T + T**2 / 2) * a).T
    orders = {}
    for method in ("euler", "midpoint", "rk4"):
        steps = [8, 16, 32, 64]
        errs = [
            np.max(m.dist(solve(m, field, x0, steps=n, t1=T, method=method), exact)) for n in steps
        ]
        orders[method] = _slope(1.0 / np.array(steps), errs)
    assert abs(orders["euler"] - 1) < 0.3 and abs(orders["midpoint"] - 2) < 0.3, orders
    # parallel transport instead of the inverse differential of exp: order >= 3 (docstring)
    assert orders["rk4"] > 2.7, orders


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("m", [Sphere(2), Hyperbolic(2), SO3()], ids=repr)
def test_states_stay_on_the_manifold_after_1000_steps(m, dtype):
    rng = np.random.default_rng(2)
    x0 = points(m, rng, 4).astype(dtype)
    w = tangent(m, points(m, rng, 4), rng).astype(dtype)

    def field(t, x):  # a bounded field with no special structure
        return np.sin(3.0 * x + np.reshape(t, (-1,) + (1,) * (x.ndim - 1))) + 0.1 * w

    x = solve(m, field, x0, steps=1000, method="midpoint")
    # each step ends with projx: the violation is that of one projection, a few eps,
    # not 1000 of them (relative to |x|^2 on the hyperboloid)
    assert x.dtype == dtype
    assert np.all(m.constraint_violation(x) <= 16 * np.finfo(dtype).eps)


def test_times_start_at_the_grids_own_start():
    seen = []

    def field(t, x):
        seen.append(float(t[0]))
        return np.zeros_like(x)

    m = Sphere(2)
    x0 = np.array([[1.0, 0.0, 0.0]])
    solve(m, field, x0, steps=2, t0=0.5, t1=1.0, method="euler")
    assert seen == [0.5, 0.75]
    seen.clear()
    integrate(m, field, x0, [0.5, 0.6, 1.0], method="midpoint")
    assert seen == pytest.approx([0.5, 0.55, 0.6, 0.8])


def test_backwards_and_return_path():
    m = Sphere(2)
    path, x0, x1 = _conditional(m)
    field = lambda t, x: path.velocity(x, x1, t)  # noqa: E731
    xs = solve(m, field, x0, steps=20, t1=0.5, method="rk4", return_path=True)
    assert xs.shape == (21, *x0.shape)
    back = solve(m, field, xs[-1], steps=20, t0=0.5, t1=0.0, method="rk4")
    np.testing.assert_allclose(back, x0, atol=1e-8)


def test_errors_name_the_argument():
    m = Sphere(2)
    x0 = np.array([[1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="`method`"):
        solve(m, lambda t, x: x, x0, method="heun")
    with pytest.raises(TypeError, match="`field`"):
        solve(m, 3, x0)
    with pytest.raises(ValueError, match="`steps`"):
        solve(m, lambda t, x: x, x0, steps=0)
    with pytest.raises(TypeError, match="field"):
        solve(m, lambda t, x: x[:, :2], x0)
