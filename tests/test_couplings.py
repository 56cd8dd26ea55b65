"""Minibatch couplings (flowspec.couplings).

Oracles: brute force over all permutations (n <= 7), POT's network simplex
(`ot.emd`) on larger batches, POT's `ot.sinkhorn_log`, the limit reg -> 0, the plan's
marginals, and the row draw's inverse CDF on a deterministic grid of uniforms.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowspec import couplings as C

pytest.importorskip("scipy")

EPS64 = float(np.finfo(np.float64).eps)
try:
    import ot  # noqa: F401

    _SOLVERS = ("auto", "scipy", "pot")
except ImportError:
    _SOLVERS = ("auto", "scipy")


def _cost_np(a, b):
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _cost_tol(a, b):
    # C_ij = |a|^2 + |b|^2 - 2 a.b carries ~ 4 d eps (|a|^2 + |b|^2) of rounding per
    # entry; a sum of n entries n times that (the largest pair bounds each term). With
    # equal batch sizes the solver is handed the cost of the clouds centred at their
    # means (the same optimal permutations), whose norms enter instead.
    if a.shape[0] == b.shape[0]:
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    d = a[0].size
    na = (a.reshape(a.shape[0], -1) ** 2).sum(1).max()
    nb = (b.reshape(b.shape[0], -1) ** 2).sum(1).max()
    return 4 * (d + 2) * EPS64 * (na + nb)


@given(
    st.integers(1, 7).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, 2), elements=st.floats(-10, 10)),
            arrays(np.float64, (n, 2), elements=st.floats(-10, 10)),
        )
    )
)
def test_exact_ot_equals_brute_force(pair):
    x0, x1 = pair
    n = x0.shape[0]
    cost = _cost_np(x0, x1)
    best = min(sum(cost[k, p[k]] for k in range(n)) for p in itertools.permutations(range(n)))
    for solver in _SOLVERS:
        i, j = C.exact_ot_indices(x0, x1, solver=solver)
        assert i.tolist() == list(range(n))
        assert sorted(j.tolist()) == list(range(n))  # a permutation: nothing duplicated or lost
        got = cost[np.arange(n), j].sum()
        assert got - best <= n * _cost_tol(x0, x1)


def test_unequal_batches_give_the_optimal_partial_matching():
    rng = np.random.default_rng(0)
    for n0, n1 in ((3, 5), (5, 3)):
        x0 = rng.standard_normal((n0, 2))
        x1 = rng.standard_normal((n1, 2))
        i, j = C.exact_ot_indices(x0, x1)
        m = min(n0, n1)
        assert len(i) == len(j) == m
        assert len(set(i.tolist())) == m and len(set(j.tolist())) == m
        assert np.all(np.diff(i) > 0)
        cost = _cost_np(x0, x1)
        if n0 <= n1:
            best = min(
                sum(cost[k, p[k]] for k in range(n0)) for p in itertools.permutations(range(n1), n0)
            )
        else:
            best = min(
                sum(cost[p[k], k] for k in range(n1)) for p in itertools.permutations(range(n0), n1)
            )
        assert cost[i, j].sum() - best <= m * _cost_tol(x0, x1)
        a, b = C.exact_ot_pairs(x0, x1)
        np.testing.assert_array_equal(a, x0[i])
        np.testing.assert_array_equal(b, x1[j])


@pytest.mark.parametrize("n,shape", [(64, (2,)), (200, (3, 4, 4))])
def test_exact_ot_matches_pot_emd_cost(n, shape):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(n)
    x0 = rng.standard_normal((n, *shape))
    x1 = rng.standard_normal((n, *shape)) + 1.0
    cost = _cost_np(x0, x1)
    plan = ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), cost)
    pot_cost = float(np.sum(plan * cost)) * n  # POT's plan has mass 1: n pairs of mass 1/n
    for solver in ("auto", "scipy", "pot"):
        _, j = C.exact_ot_indices(x0, x1, solver=solver)
        assert sorted(j.tolist()) == list(range(n))
        ours = float(cost[np.arange(n), j].sum())
        assert abs(ours - pot_cost) <= n * _cost_tol(x0, x1) + 64 * EPS64 * pot_cost


def test_exact_ot_on_every_library(xp):
    rng = np.random.default_rng(1)
    x0, x1 = rng.standard_normal((6, 2, 2)), rng.standard_normal((6, 2, 2))
    _want_i, want_j = C.exact_ot_indices(x0, x1)
    a, b = xp.asarray(x0), xp.asarray(x1)
    i, j = C.exact_ot_indices(a, b)
    assert type(i) is type(a)
    np.testing.assert_array_equal(to_numpy(j), want_j)
    p0, p1 = C.exact_ot_pairs(a, b)
    np.testing.assert_array_equal(to_numpy(p1), x1[want_j])
    np.testing.assert_array_equal(to_numpy(p0), x0)


def test_exact_ot_without_scipy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(ImportError, match=r"flowspec\[ot\]"):
        C.exact_ot_indices(np.zeros((2, 1)), np.ones((2, 1)), solver="scipy")
    with pytest.raises(ImportError, match=r"flowspec\[ot\]"):  # auto, partial matching
        C.exact_ot_indices(np.zeros((2, 5)), np.ones((3, 5)))


def test_exact_ot_solver_choice(monkeypatch):
    small, big = np.zeros((3, 2)), np.zeros((3, 3, 4, 4))
    assert C.exact_ot_solver(big, big) == "scipy"
    assert C.exact_ot_solver(small, small) == "scipy"
    assert C.exact_ot_solver(small, np.zeros((4, 2))) == "scipy"  # partial matching
    assert C.exact_ot_solver(small, small, solver="scipy") == "scipy"
    assert C.exact_ot_solver(big, big, solver="pot") == "pot"
    with pytest.raises(ValueError, match="`solver`"):
        C.exact_ot_indices(small, small, solver="hungarian")
    with pytest.raises(ValueError, match=r"`solver`.*equal batch sizes"):
        C.exact_ot_indices(small, np.zeros((4, 2)), solver="pot")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "scipy", None)  # SciPy not installed: POT where it can
        assert C.exact_ot_solver(small, small) == ("pot" if C._installed("ot") else "scipy")
        assert C.exact_ot_solver(small, np.zeros((4, 2))) == "scipy"
    monkeypatch.setitem(sys.modules, "ot", None)  # POT not installed
    assert C.exact_ot_solver(small, small) == "scipy"
    with pytest.raises(ImportError, match=r"flowspec\[ot\]"):
        C.exact_ot_indices(small, small, solver="pot")


def test_exact_ot_pot_is_a_checked_permutation(monkeypatch):
    ot = pytest.importorskip("ot")
    x0, x1 = np.array([[0.0], [1.0], [2.0]]), np.array([[2.1], [0.1], [1.1]])
    assert C.exact_ot_indices(x0, x1, solver="pot")[1].tolist() == [1, 2, 0]
    true_emd = ot.emd

    def split(a, b, cost, **kwargs):  # a feasible plan that is not a vertex
        plan, log = true_emd(a, b, cost, **kwargs)
        return plan * 0.5 + 0.5 * plan[:, ::-1], log

    monkeypatch.setattr(ot, "emd", split)
    with pytest.raises(RuntimeError, match="not a permutation"):
        C.exact_ot_indices(x0, x1, solver="pot")

    def stopped(a, b, cost, **kwargs):
        plan, log = true_emd(a, b, cost, **kwargs)
        return plan, {**log, "result_code": 2, "warning": "numItermax reached"}

    monkeypatch.setattr(ot, "emd", stopped)
    with pytest.raises(RuntimeError, match=r"did not reach an optimum.*numItermax"):
        C.exact_ot_indices(x0, x1, solver="pot")


def test_independent_is_the_pairs_as_drawn_copied(xp):
    a = xp.asarray(np.arange(6.0).reshape(3, 2))
    b = xp.asarray(-np.arange(6.0).reshape(3, 2))
    p0, p1 = C.independent(a, b)
    np.testing.assert_array_equal(to_numpy(p0), to_numpy(a))
    np.testing.assert_array_equal(to_numpy(p1), to_numpy(b))
    if isinstance(p0, np.ndarray):
        assert not np.shares_memory(p0, a)


def test_sinkhorn_matches_pot_sinkhorn_log():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((12, 2))
    x1 = rng.standard_normal((9, 2)) + 0.5
    reg = 0.3
    res = C.sinkhorn(x0, x1, reg, tol=1e-12, max_iter=20000)
    # POT: min <P, M> - reg H(P) on U(a, b): the same minimiser as our KL form
    a, b = np.full(12, 1 / 12), np.full(9, 1 / 9)
    pot = ot.bregman.sinkhorn_log(a, b, _cost_np(x0, x1), reg, stopThr=1e-14, numItermax=20000)
    # both converged to marginal errors ~1e-12: the plans agree to that order (the
    # plan is a smooth function of the potentials, Lipschitz with constant ~1/reg)
    np.testing.assert_allclose(res.plan, pot, rtol=0, atol=1e-10)
    assert float(res.error) <= 1e-12


def test_sinkhorn_plan_marginals(xp):
    rng = np.random.default_rng(3)
    x0 = xp.asarray(rng.standard_normal((10, 3)))
    x1 = xp.asarray(rng.standard_normal((7, 3)))
    res = C.sinkhorn(x0, x1, 2.0, tol=1e-10, max_iter=5000, scaling_stages=0)
    plan = to_numpy(res.plan)
    assert plan.shape == (10, 7) and np.all(plan >= 0)
    assert np.abs(plan.sum(1) - 1 / 10).sum() <= 1e-10  # what tol promises
    # the columns are exact after the last g update, up to a few ulps per entry
    np.testing.assert_allclose(plan.sum(0), 1 / 7, rtol=64 * EPS64 * 10)
    want = C.sinkhorn(to_numpy(x0), to_numpy(x1), 2.0, tol=1e-10, max_iter=5000).plan
    np.testing.assert_allclose(plan, want, rtol=1e-9, atol=1e-15)


def _separated(rng, n):
    """x1 a shuffled, slightly moved copy of spread-out x0: one clear optimal permutation."""
    x0 = rng.uniform(-4, 4, size=(n, 2))
    perm = rng.permutation(n)
    return x0, x0[perm] + 0.05 * rng.standard_normal((n, 2)), np.argsort(perm)


def test_sinkhorn_tends_to_the_exact_plan():
    rng = np.random.default_rng(4)
    n = 8
    x0, x1 = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    cost = _cost_np(x0, x1)
    _, j = C.exact_ot_indices(x0, x1)
    exact_plan = np.zeros((n, n))
    exact_plan[np.arange(n), j] = 1 / n
    exact = float(np.sum(exact_plan * cost))
    tol = 1e-8
    gaps, dists = [], []
    for reg in (3.0, 1.0, 0.3, 0.03):
        plan = C.sinkhorn(x0, x1, reg, tol=tol, max_iter=20000).plan
        gap = float(np.sum(plan * cost)) - exact
        # 0 <= <P_reg, C> - OT <= reg KL(P* | a b^T) = reg log n (P_reg minimises
        # <P, C> + reg KL over the same feasible set, KL >= 0); the plan meets its
        # marginals to `tol` in L1, which moves <P, C> by at most tol max C
        slack = tol * cost.max()
        assert -slack <= gap <= reg * math.log(n) + slack
        gaps.append(gap)
        dists.append(float(np.abs(plan - exact_plan).sum()))
    assert gaps == sorted(gaps, reverse=True)
    assert dists == sorted(dists, reverse=True)
    # and the plan itself converges to the permutation: a 30-fold smaller reg moves
    # at least 3/4 of the stray mass onto it
    assert dists[-1] <= 0.25 * dists[1]


def test_sinkhorn_fails_loudly():
    rng = np.random.default_rng(5)
    x0, x1 = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    with pytest.raises(RuntimeError, match=r"did not converge.*max_iter=3"):
        C.sinkhorn(x0, x1, 0.01, tol=1e-12, max_iter=3, scaling_stages=0)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = C.sinkhorn(
            x0, x1, 0.01, tol=1e-12, max_iter=3, check_every=2, on_failure="warn", scaling_stages=0
        )
    assert res.iterations == 3 and float(res.error) > 1e-12
    bad = x1.copy()
    bad[0, 0] = np.inf
    with pytest.raises((RuntimeError, ValueError)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        C.sinkhorn(x0, bad, 0.1)
    # tol=None: exactly max_iter iterations, nothing read, the error returned
    res = C.sinkhorn(x0, x1, 0.5, tol=None, max_iter=7, check_every=3, scaling_stages=2)
    assert res.iterations == 2 * 3 + 7 and res.error.shape == ()
    for kwargs, name in (
        ({"reg": 0.0}, "reg"),
        ({"reg": 1.0, "tol": -1.0}, "tol"),
        ({"reg": 1.0, "max_iter": 0}, "max_iter"),
        ({"reg": 1.0, "on_failure": "ignore"}, "on_failure"),
        ({"reg": 1.0, "scaling_stages": -1}, "scaling_stages"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            C.sinkhorn(x0, x1, **kwargs)


@pytest.mark.parametrize(
    "dtype,reg,stages,tol",
    [
        (np.float64, 0.1, 6, 1e-9),  # absorptions as the regularisation shrinks
        (np.float64, 0.1, 0, 1e-9),  # the outlier's kernel column underflows: a redo
        (np.float32, 0.3, 0, 1e-5),  # a redo, and an absorption of large scalings
        (np.float64, 3.0, 0, 1e-12),  # scalings stay in range: matrix-vector products only
    ],
)
def test_stabilised_scaling_runs_the_log_domain_iterations(monkeypatch, dtype, reg, stages, tol):
    # with a `tol` the iteration is evaluated in the stabilised scaling form, with
    # tol=None in the log domain: the same iterates, so the plans after the same number
    # of iterations agree to rounding
    calls = {"redo": 0, "absorb": 0}
    redo, absorb = C._Scaling._log_iteration, C._Scaling._absorb

    def count(name, fn):
        def wrapped(self):
            calls[name] += 1
            return fn(self)

        return wrapped

    monkeypatch.setattr(C._Scaling, "_log_iteration", count("redo", redo))
    monkeypatch.setattr(C._Scaling, "_absorb", count("absorb", absorb))
    rng = np.random.default_rng(9)
    x0 = rng.standard_normal((20, 2)).astype(dtype)
    x1 = rng.standard_normal((15, 2)).astype(dtype)
    x1[0] = [6.0, 6.0]  # far from every x0
    opts = {"scaling_stages": stages, "check_every": 5}
    res = C.sinkhorn(x0, x1, reg, tol=tol, max_iter=5000, **opts)
    want = C.sinkhorn(x0, x1, reg, tol=None, max_iter=res.iterations - 5 * stages, **opts)
    assert float(res.error) <= tol
    if reg < 1.0:
        assert calls["redo"] + calls["absorb"] > 0  # the stabilisation was exercised
    if stages == 0 and reg < 1.0:
        assert calls["redo"] > 0
    if dtype == np.float32:  # a redo absorbs once; more is an absorption of its own
        assert calls["absorb"] > calls["redo"]
    # the potentials (units of reg) carry an absolute rounding error ~ eps max C / reg
    # in either form; the plan, their exponential, that relative error (measured up to
    # 0.32 of it, a factor 8 of margin)
    cost = _cost_np(x0.astype(np.float64), x1.astype(np.float64))
    eps = float(np.finfo(dtype).eps)
    bound = 8 * eps * (1 + cost.max() / reg) * float(res.plan.max())
    assert np.abs(res.plan - want.plan).max() <= bound


def test_small_reg_does_not_underflow():
    # exp(-C/reg) underflows to 0 for C/reg > 745: the log domain does not care
    x0 = np.array([[0.0], [10.0]])
    x1 = np.array([[9.0], [1.0]])
    res = C.sinkhorn(x0, x1, reg=0.01)
    np.testing.assert_allclose(res.plan, [[0.0, 0.5], [0.5, 0.0]], atol=1e-12)


def test_draw_rows_inverse_cdf():
    plan = np.array([[0.1, 0.0, 0.3], [0.0, 0.0, 0.2], [0.25, 0.15, 0.0]])
    k = 1000
    u = (np.arange(k) + 0.5) / k
    counts = np.zeros_like(plan)
    for uu in u:
        j = C.draw_rows(plan, np.full(3, uu))
        counts[np.arange(3), j] += 1
    # a grid of k uniforms hits each cell of the row's CDF within one point
    want = plan / plan.sum(1, keepdims=True) * k
    assert np.all(np.abs(counts - want) <= 1)
    assert np.all(counts[plan == 0] == 0)  # zero mass is never drawn
    # u just below 1: the last column of positive mass, never out of range
    assert C.draw_rows(plan, np.full(3, np.nextafter(1.0, 0))).tolist() == [2, 2, 1]


def test_draw_rows_on_every_library(xp):
    plan = np.array([[0.1, 0.0, 0.3], [0.0, 0.0, 0.2]])
    u = np.array([0.2, 0.9])
    j = C.draw_rows(xp.asarray(plan), xp.asarray(u))
    assert to_numpy(j).tolist() == [0, 2]


def test_entropic_pairs_keep_every_x0_and_become_a_permutation():
    rng = np.random.default_rng(6)
    n = 16
    x0, x1, _ = _separated(rng, n)
    u = rng.uniform(size=n)
    a, b = C.entropic_pairs(x0, x1, 1e-2, u, tol=1e-6, max_iter=10000)
    np.testing.assert_array_equal(a, x0)
    _, j = C.exact_ot_indices(x0, x1)
    np.testing.assert_array_equal(b, x1[j])
    a, b = C.schrodinger_bridge_pairs(x0, x1, math.sqrt(5e-3), u, tol=1e-6, max_iter=10000)
    np.testing.assert_array_equal(b, x1[j])


def test_validation_names_the_argument():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="event shape"):
        C.exact_ot_indices(x, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="same batch size"):
        C.independent(x, np.zeros((2, 2)))
    with pytest.raises(TypeError, match="`x1`"):
        C.sinkhorn(x, np.zeros((3, 2), dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="`u`"):
        C.draw_rows(np.ones((3, 3)), np.array([0.1, 1.0, 0.2]))
    with pytest.raises(ValueError, match="`u`"):
        C.draw_rows(np.ones((3, 3)), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="`plan`"):
        C.draw_rows(np.zeros((2, 2)), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="`sigma`"):
        C.schrodinger_bridge_pairs(x, x, 0.0, np.zeros(3))


def test_sinkhorn_under_jax_jit():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rng = np.random.default_rng(7)
    x0, x1 = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))

    @jax.jit
    def plan(a, b):
        res = C.sinkhorn(a, b, 0.5, tol=None, max_iter=10, check_every=2, scaling_stages=2)
        return res.plan, res.error

    p, err = plan(jnp.asarray(x0), jnp.asarray(x1))
    want = C.sinkhorn(x0, x1, 0.5, tol=None, max_iter=10, check_every=2, scaling_stages=2)
    np.testing.assert_allclose(np.asarray(p), want.plan, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(float(err), float(want.error), rtol=1e-6, atol=1e-15)
    with pytest.raises(TypeError, match="tol=None"):
        jax.jit(lambda a, b: C.sinkhorn(a, b, 0.5, scaling_stages=0).plan)(
            jnp.asarray(x0), jnp.asarray(x1)
        )


@pytest.mark.slow
def test_sinkhorn_under_torch_compile():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x0, x1 = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))

    def plan(a, b):
        res = C.sinkhorn(a, b, 0.5, tol=None, max_iter=2, scaling_stages=0)
        return res.plan, res.error

    # fullgraph: no graph break (nothing read on the host); aot_eager traces through
    # AOTAutograd without the minutes of inductor code generation
    compiled = torch.compile(plan, fullgraph=True, backend="aot_eager")
    p, err = compiled(torch.from_numpy(x0), torch.from_numpy(x1))
    want = C.sinkhorn(x0, x1, 0.5, tol=None, max_iter=2, scaling_stages=0)
    np.testing.assert_allclose(p.numpy(), want.plan, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(float(err), float(want.error), rtol=1e-6, atol=1e-15)


def test_docs_page_code_runs():
    # every python block of docs/couplings.md runs (in order, one namespace per block)
    import importlib.util
    import re
    from pathlib import Path

    pytest.importorskip("torch")
    page = Path(__file__).resolve().parents[1] / "docs" / "couplings.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 4
    for code in blocks:
        if "import jax" in code and importlib.util.find_spec("jax") is None:
            continue  # the page marks it: needs JAX
        exec(compile(code, str(page), "exec"), {})


@given(
    st.integers(2, 7).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, 2), elements=st.floats(-10, 10)),
            arrays(np.float64, (n, 2), elements=st.floats(-10, 10)),
            arrays(np.float64, (2,), elements=st.floats(-1e3, 1e3)),
        )
    )
)
def test_exact_ot_is_optimal_for_translated_clouds(case):
    # the solver is handed the centred cost: a translation of either cloud must not
    # change which permutations are optimal (brute force on the translated problem)
    x0, x1, shift = case
    n = x0.shape[0]
    moved = x1 + shift
    cost = _cost_np(x0, moved)
    best = min(sum(cost[k, p[k]] for k in range(n)) for p in itertools.permutations(range(n)))
    for solver in _SOLVERS:
        _, j = C.exact_ot_indices(x0, moved, solver=solver)
        assert sorted(j.tolist()) == list(range(n))
        # plus the rounding of the two n-term sums of entries of size ~ |shift|^2 here
        slack = n * _cost_tol(x0, moved) + 2 * n * EPS64 * best
        assert cost[np.arange(n), j].sum() - best <= slack


def test_exact_ot_is_optimal_at_any_scale_of_the_cost():
    # POT's simplex compares reduced costs with an absolute epsilon: unscaled, a cost of
    # entries ~1e-279 stopped it at a vertex of cost 1.4e-278 where 0 is optimal
    v = 8.38939553e-140
    x0 = np.array([[v, v], [0.0, v], [v, v]])
    x1 = np.array([[v, v], [v, v], [0.0, v]])
    cost = _cost_np(x0, x1)
    for scale in (1.0, 1e150, 1e-20):
        for solver in _SOLVERS:
            _, j = C.exact_ot_indices(x0 * scale, x1 * scale, solver=solver)
            assert cost[np.arange(3), j].sum() == 0.0, (scale, solver, j)
