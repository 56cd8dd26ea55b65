"""Solvers as data: the tableaus are right, and every loop reads them and nothing else.

1. Each tableau satisfies the Runge-Kutta order conditions of its stated order.
2. A method that is not in the table is a ValueError in the core, torch, JAX and the
   CuPy plan (there is no fall-through to RK4 anywhere).
3. A method added as one entry of the table is integrated with that tableau by every
   loop, bit for bit as the core integrates it.
"""

from __future__ import annotations

from fractions import Fraction

import array_api_compat
import numpy as np
import pytest

import flowspec as fs
from flowspec import ode, tableaus
from flowspec.backends import _cupy_logic
from flowspec.conformance.libraries import namespace
from flowspec.tableaus import TABLEAUS, Row, Tableau

XP = array_api_compat.array_namespace(np.zeros(1))
EPS64 = float(np.finfo(np.float64).eps)


def _exact(tab: Tableau):
    """The tableau in exact rational arithmetic (c, a, b), from its factored rows."""
    s = tab.stages

    def expand(row: Row) -> list[Fraction]:
        w = list(row.weights) + [0.0] * (s - len(row.weights))
        return [Fraction(row.factor[0], row.factor[1]) * Fraction(x) for x in w]

    c = [Fraction(0)] + [Fraction(n, d) for n, d in tab.c]
    a = [[Fraction(0)] * s] + [expand(r) for r in tab.a]
    return c, a, expand(tab.b)


# the rooted-tree order conditions up to order 4: sum_i b_i Phi_i(tree) = 1 / gamma(tree)
def _conditions(c, a, b):
    s = len(b)
    ac = [sum(a[i][j] * c[j] for j in range(s)) for i in range(s)]
    ac2 = [sum(a[i][j] * c[j] ** 2 for j in range(s)) for i in range(s)]
    aac = [sum(a[i][j] * ac[j] for j in range(s)) for i in range(s)]
    return {
        1: [(sum(b), Fraction(1))],
        2: [(sum(b[i] * c[i] for i in range(s)), Fraction(1, 2))],
        3: [
            (sum(b[i] * c[i] ** 2 for i in range(s)), Fraction(1, 3)),
            (sum(b[i] * ac[i] for i in range(s)), Fraction(1, 6)),
        ],
        4: [
            (sum(b[i] * c[i] ** 3 for i in range(s)), Fraction(1, 4)),
            (sum(b[i] * c[i] * ac[i] for i in range(s)), Fraction(1, 8)),
            (sum(b[i] * ac2[i] for i in range(s)), Fraction(1, 12)),
            (sum(b[i] * aac[i] for i in range(s)), Fraction(1, 24)),
        ],
    }


@pytest.mark.parametrize("method", list(TABLEAUS))
def test_tableau_has_its_stated_order(method):
    tab = TABLEAUS[method]
    c, a, b = _exact(tab)
    # consistency: each stage time is the sum of its row (c_i = sum_j a_ij)
    assert all(c[i] == sum(a[i]) for i in range(tab.stages))
    conditions = _conditions(c, a, b)
    for order in range(1, tab.order + 1):
        for got, want in conditions[order]:
            assert got == want, (method, order)
    if tab.order < 4:  # and not a higher order than stated (the stated order is sharp)
        assert any(got != want for got, want in conditions[tab.order + 1])
    assert ode.METHODS[method] == tab.order


def test_methods_is_a_read_only_view_of_the_tableaus():
    assert dict(ode.METHODS) == {name: tab.order for name, tab in TABLEAUS.items()}
    with pytest.raises(TypeError):
        ode.METHODS["rk5"] = 5  # a method cannot be added to the order table alone


def _field(t, x):
    return np.cos(3.0 * t)[:, None] * x + t[:, None] * np.sin(x)


def _unknown_method_calls():
    x0 = np.ones((2, 2))
    grid = [0.0, 0.5, 1.0]
    calls = {
        "core integrate": lambda m: fs.integrate(_field, x0, grid, method=m),
        "core log_likelihood": lambda m: fs.log_likelihood(
            _field, x0, lambda x: x[:, 0], grid[::-1], method=m, divergence=lambda t, x: t
        ),
        "cupy plan": lambda m: _cupy_logic.solver_plan(XP, m, grid, x0),
    }
    try:
        import torch

        fst = fs.backends.get("torch")
        xt = torch.ones(2, 2, dtype=torch.float64)
        calls["torch integrate"] = lambda m: fst.integrate(lambda t, x: -x, xt, grid, method=m)
        calls["torch log_likelihood"] = lambda m: fst.log_likelihood(
            lambda t, x: -x, xt, lambda x: x[:, 0], grid[::-1], method=m
        )
    except ImportError:
        pass
    try:
        jnp = namespace("jax")
        fj = fs.backends.get("jax")
        xj = jnp.ones((2, 2))
        calls["jax integrate"] = lambda m: fj.integrate(lambda t, x: -x, xj, grid, method=m)
        calls["jax log_likelihood"] = lambda m: fj.log_likelihood(
            lambda t, x: -x, xj, lambda x: x[:, 0], grid[::-1], method=m
        )
    except ImportError:
        pass
    return calls


CALLS = _unknown_method_calls()


@pytest.mark.parametrize("where", list(CALLS))
@pytest.mark.parametrize("method", ["rk5", "RK4", "", None])
def test_unknown_method_is_a_value_error_everywhere(where, method):
    with pytest.raises(ValueError, match="`method` must be one of"):
        CALLS[where](method)


# Ralston's second-order method: c2 = 2/3, a21 = 2/3, b = (1/4, 3/4)
RALSTON = Tableau(order=2, c=((2, 3),), a=(Row((2, 3), (1.0,)),), b=Row((1, 4), (1.0, 3.0)))


def _ralston_by_hand(x, grid):
    for k in range(len(grid) - 1):
        t, h = grid[k], grid[k + 1] - grid[k]
        tb = np.full(x.shape[0], t)
        k1 = _field(tb, x)
        k2 = _field(np.full(x.shape[0], t + h * 2.0 / 3.0), x + (h * 2.0 / 3.0) * k1)
        x = x + (h / 4.0) * (k1 + 3.0 * k2)
    return x


def test_a_method_added_as_one_table_entry_runs_in_every_loop(monkeypatch):
    monkeypatch.setitem(TABLEAUS, "ralston", RALSTON)
    assert ode.METHODS["ralston"] == 2
    x0 = np.random.default_rng(0).standard_normal((4, 3))
    grid = [0.0, 0.2, 0.45, 1.0]
    want = _ralston_by_hand(x0, grid)
    core = fs.integrate(_field, x0, grid, method="ralston")
    np.testing.assert_array_equal(core, want)  # the tableau's arithmetic is the hand form
    assert not np.array_equal(core, fs.integrate(_field, x0, grid, method="rk4"))

    plan = _cupy_logic.solver_plan(XP, "ralston", grid, x0)
    emulated = _cupy_logic.run_solver(_cupy_logic.emulate, XP, _field, x0, plan, False)
    np.testing.assert_array_equal(emulated, core)

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        fst = fs.backends.get("torch")

        def field_t(t, x):
            return torch.cos(3.0 * t)[:, None] * x + t[:, None] * torch.sin(x)

        got = fst.integrate(field_t, torch.tensor(x0), grid, method="ralston")
        # the tableau, not the field, is under test: compare with the torch field
        # through the core's loop on torch tensors. torch's update x + s k is one
        # add(alpha=s), which may round as a fused multiply-add: an ulp of the state
        # per row, 2 rows per step, 3 steps, propagated by a Lipschitz-1 field
        ref = fs.integrate(field_t, torch.tensor(x0), grid, method="ralston")
        tol = 64 * EPS64 * float(ref.abs().max())
        torch.testing.assert_close(got, ref, rtol=0, atol=tol)
    try:
        jnp = namespace("jax")  # JAX with 64-bit floats enabled
    except ImportError:
        jnp = None
    if jnp is not None:
        fj = fs.backends.get("jax")

        def field_j(t, x):
            return jnp.cos(3.0 * t)[:, None] * x + t[:, None] * jnp.sin(x)

        got = fj.integrate(field_j, jnp.asarray(x0), grid, method="ralston")
        ref = fs.integrate(field_j, jnp.asarray(x0), grid, method="ralston")
        # XLA may fuse the scan body's products and sums differently from eager ops:
        # the same error model as torch's
        tol = 64 * EPS64 * float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=tol)


def test_fraction_and_weighted_sum_keep_the_classical_rounding():
    h = 0.1 + 0.2  # not a short binary fraction
    assert tableaus.fraction(h, (1, 2)) == 0.5 * h
    assert tableaus.fraction(h, (1, 6)) == h / 6.0
    assert tableaus.fraction(h, (1, 1)) is h
    k = [0.1, 0.7, 0.3, 0.9]
    assert tableaus.weighted_sum((1.0, 2.0, 2.0, 1.0), k) == k[0] + 2.0 * k[1] + 2.0 * k[2] + k[3]
    with pytest.raises(ValueError):
        tableaus.weighted_sum((0.0,), k)


def test_tableau_rejects_a_row_that_reaches_past_its_stage():
    with pytest.raises(ValueError):
        Tableau(order=1, c=((1, 2),), a=(Row((1, 2), (1.0, 1.0)),), b=Row((1, 1), (1.0,)))
