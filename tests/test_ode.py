"""Solvers: the paper's Euler rule exactly, orders of accuracy, grids, field checks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.ode import METHODS

EPS64 = float(np.finfo(np.float64).eps)


@given(
    steps=st.integers(1, 40),
    t0=st.floats(-1, 1),
    span=st.floats(-2, 2).filter(lambda s: abs(s) > 1e-3),
)
def test_euler_is_the_note_rule_exactly(steps, t0, span):
    t1 = t0 + span
    seen = []

    def field(t, x):
        seen.append(t.copy())
        return np.sin(3 * x) + t[:, None]

    x0 = np.linspace(-1, 1, 6).reshape(3, 2)
    got = fs.euler(field, x0, steps=steps, t0=t0, t1=t1)
    h = (t1 - t0) / steps
    x = x0
    for k in range(steps):
        x = x + h * (np.sin(3 * x) + (t0 + k * h))  # t_k = t0 + k h, never accumulated
    assert np.array_equal(got, x)
    assert [float(s[0]) for s in seen] == [t0 + k * h for k in range(steps)]
    assert all(s.shape == (3,) and s.dtype == x0.dtype for s in seen)


def linear_problem(xp, dtype):
    # dx/dt = a(t) x with a(t) = cos(t): x(t) = x0 exp(sin t - sin t0)
    def field(t, x):
        return xp.reshape(xp.cos(t), (-1, 1)) * x

    x0 = xp.asarray(np.array([[1.0, -0.5], [2.0, 0.25]]), dtype=dtype)
    return field, x0


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_order_of_accuracy(xp, method, direction):
    field, x0 = linear_problem(xp, xp.float64)
    t0, t1 = (0.0, 1.5) if direction == "forward" else (1.5, 0.0)
    exact = to_numpy(x0) * np.exp(np.sin(t1) - np.sin(t0))
    errors, ladder = [], [8, 16, 32, 64]
    for n in ladder:
        x = fs.integrate(field, x0, np.linspace(t0, t1, n + 1), method=method)
        errors.append(np.max(np.abs(to_numpy(x) - exact)))
    slope = -np.polyfit(np.log(ladder), np.log(errors), 1)[0]
    # the fitted order within 0.25 of the declared one (error stays far above rounding)
    assert abs(slope - METHODS[method]) < 0.25, (method, slope, errors)
    ratio = errors[-2] / errors[-1]
    if method == "euler":
        assert 1.8 < ratio < 2.2  # error halves when steps double
    if method == "rk4":
        assert 14.0 < ratio < 18.0  # rk4's falls 16x


def test_euler_equals_integrate_on_uniform_grid(xp):
    field, x0 = linear_problem(xp, xp.float64)
    a = fs.euler(field, x0, steps=10, t0=0.0, t1=1.0)
    b = fs.integrate(field, x0, [k / 10 for k in range(11)])
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=16 * EPS64)


@pytest.mark.parametrize("method", list(METHODS))
def test_return_path(xp, method):
    field, x0 = linear_problem(xp, xp.float32)
    grid = [0.0, 0.1, 0.3, 0.6, 1.0]
    path = fs.integrate(field, x0, grid, method=method, return_path=True)
    assert tuple(path.shape) == (5, 2, 2) and path.dtype == xp.float32
    np.testing.assert_array_equal(to_numpy(path[0, ...]), to_numpy(x0))
    np.testing.assert_array_equal(
        to_numpy(path[-1, ...]), to_numpy(fs.integrate(field, x0, grid, method=method))
    )
    eul = fs.euler(field, x0, steps=4, return_path=True)
    assert tuple(eul.shape) == (5, 2, 2)


def test_grid_in_the_namespace_of_x(xp):
    field, x0 = linear_problem(xp, xp.float64)
    grid = xp.asarray([1.0, 0.75, 0.5, 0.0], dtype=xp.float64)
    got = fs.integrate(field, x0, grid, method="heun")
    want = fs.integrate(field, x0, [1.0, 0.75, 0.5, 0.0], method="heun")
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=4 * EPS64)


def test_dtype_preserved(xp):
    for dtype in (xp.float32, xp.float64):
        field, x0 = linear_problem(xp, dtype)
        assert fs.euler(field, x0, steps=3).dtype == dtype


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (lambda t, x: x[:, :1], "shape"),
        (lambda t, x: np.asarray(x, dtype=np.float32), "dtype"),
        (lambda t, x: [[0.0, 0.0]], "namespace"),
        (lambda t, x: 1.0, "namespace"),
    ],
)
def test_bad_field_output(field, message):
    with pytest.raises(TypeError, match=message):
        fs.euler(field, np.zeros((2, 2)), steps=2)


def test_field_from_another_library():
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="namespace"):
        fs.integrate(lambda t, x: strict.asarray(np.asarray(x)), np.zeros((2, 2)), [0.0, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, ValueError, "steps"),
        ({"steps": True}, ValueError, "steps"),
        ({"t0": 0.5, "t1": 0.5}, ValueError, "t0"),
        ({"t1": float("nan")}, ValueError, "t1"),
        ({"t0": "0"}, TypeError, "t0"),
    ],
)
def test_bad_euler_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=f"`{name}`"):
        fs.euler(lambda t, x: x, np.zeros((2, 2)), **kwargs)


@pytest.mark.parametrize(
    ("grid", "exc"),
    [
        ([0.0], ValueError),
        ([0.0, 0.5, 0.4], ValueError),
        ([0.0, 0.0, 1.0], ValueError),
        ([[0.0, 1.0]], ValueError),
        ([0.0, float("inf")], ValueError),
        ("01", TypeError),
        (3.0, TypeError),
    ],
)
def test_bad_grids(grid, exc):
    with pytest.raises(exc, match="`time_grid`"):
        fs.integrate(lambda t, x: x, np.zeros((2, 2)), grid)


def test_bad_method_and_field():
    with pytest.raises(ValueError, match="`method`"):
        fs.integrate(lambda t, x: x, np.zeros((2, 2)), [0.0, 1.0], method="rk45")
    with pytest.raises(TypeError, match="`field`"):
        fs.integrate(None, np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(TypeError, match="`x0`"):
        fs.euler(lambda t, x: x, np.zeros((2, 2), dtype=np.int64))


def test_device_grid_must_match_dtype():
    strict = pytest.importorskip("array_api_strict")
    x0 = strict.zeros((2, 2), dtype=strict.float64)
    with pytest.raises(TypeError, match="`time_grid`"):
        fs.integrate(lambda t, x: x, x0, strict.asarray([0.0, 1.0], dtype=strict.float32))
    with pytest.raises(ValueError, match="`time_grid`"):
        fs.integrate(lambda t, x: x, x0, strict.asarray([[0.0, 1.0]], dtype=strict.float64))
