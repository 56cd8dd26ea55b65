"""log_likelihood: the instantaneous change of variables against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy

import flowspec as fs

EPS64 = float(np.finfo(np.float64).eps)


def standard_normal_np(x):
    d = x.shape[1]
    return -0.5 * np.sum(x * x, axis=1) - 0.5 * d * math.log(2 * math.pi)


def test_linear_field_exact_in_every_library(xp):
    # u_t(x) = c x maps N(0, I) at t=0 to N(0, e^{2c} I) at t=1 (div u = c d): the exact
    # log p_1(x1) = log N(x1 e^{-c}; 0, I) - c d.
    c_rate, d = 0.7, 3
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(5, d))

    def field(t, x):
        assert tuple(t.shape) == (5,)
        return c_rate * x

    def divergence(t, x):
        return xp.full((x.shape[0],), c_rate * d, dtype=x.dtype)

    def log_p0(x):
        return -0.5 * xp.sum(x * x, axis=1) - 0.5 * d * math.log(2 * math.pi)

    grid = np.linspace(1.0, 0.0, 41)
    out = fs.log_likelihood(field, xp.asarray(x1), log_p0, grid, "rk4", divergence=divergence)
    assert tuple(out.shape) == (5,) and out.dtype == xp.asarray(x1).dtype
    exact = standard_normal_np(x1 * math.exp(-c_rate)) - c_rate * d
    # rk4 on x' = c x with h = 1/40: relative error (c h)^5 / 120 per step, 40 steps
    # -> ~5e-10 of |x|^2; bound 1e-8 (1 + |exact|)
    assert np.all(np.abs(to_numpy(out) - exact) <= 1e-8 * (1 + np.abs(exact)))


def _marginal_case():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(6, 2)) * 1.5
    x1 = data[:4] + 0.05 * rng.normal(size=(4, 2))
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.05)), data)
    return m, x1


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_reproduces_marginal_log_prob_with_the_solver_order(method, order):
    m, x1 = _marginal_case()
    exact = m.log_prob(x1, 1.0)  # closed form (eq. 6), finite since sigma_min > 0
    steps = [32, 64, 128, 256] if method == "euler" else [32, 64, 128]
    errors = []
    for n in steps:
        lp = fs.log_likelihood(
            lambda t, x: m.velocity(x, t),
            x1,
            standard_normal_np,
            np.linspace(1.0, 0.0, n + 1),
            method,
            divergence=lambda t, x: m.divergence(x, t),
        )
        errors.append(np.max(np.abs(lp - exact)))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    # the observed rate must be the method's order; rk4 is in its pre-asymptotic range
    # (the field varies on the scale sigma_min = 0.05 near t = 1), where the error falls
    # faster than h^4, so only a lower bound is asserted there.
    assert slope > order - 0.25, (errors, slope)
    if order < 4:
        assert slope < order + 0.35, (errors, slope)
    # and the finest grid is accurate in absolute terms (errors measured: euler 8e-2,
    # midpoint 2e-3, rk4 2e-6 at the finest grid; bounds x2-5 above)
    assert errors[-1] < {"euler": 0.2, "midpoint": 1e-2, "rk4": 1e-5}[method]


def test_validation():
    m, x1 = _marginal_case()

    def u(t, x):
        return m.velocity(x, t)

    def div(t, x):
        return m.divergence(x, t)

    with pytest.raises(ValueError, match=r"`time_grid`.*decreasing"):
        fs.log_likelihood(u, x1, standard_normal_np, [0.0, 1.0], divergence=div)
    with pytest.raises(ValueError, match="`time_grid`"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.5, 0.0], divergence=div)
    with pytest.raises(ValueError, match="`time_grid`"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.0, 0.5, 0.7, 0.0], divergence=div)
    with pytest.raises(TypeError, match="`divergence`"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.0, 0.0])
    with pytest.raises(TypeError, match=r"`divergence`.*backends"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.0, 0.0], divergence="exact")
    with pytest.raises(TypeError, match="`log_p0`"):
        fs.log_likelihood(u, x1, None, [1.0, 0.0], divergence=div)
    with pytest.raises(TypeError, match="log_p0"):
        fs.log_likelihood(u, x1, lambda x: x, [1.0, 0.0], divergence=div)
    with pytest.raises(TypeError, match="divergence"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.0, 0.0], divergence=lambda t, x: x)
    with pytest.raises(ValueError, match="`method`"):
        fs.log_likelihood(u, x1, standard_normal_np, [1.0, 0.0], "rk45", divergence=div)
    with pytest.raises(TypeError, match="`x1`"):
        fs.log_likelihood(u, [[0.0, 1.0]], standard_normal_np, [1.0, 0.0], divergence=div)


def test_partial_grid_gives_intermediate_density():
    # A grid [t_a, ..., 0] gives log p_{t_a}: check against the closed form at t_a = 0.5
    m, x1 = _marginal_case()
    lp = fs.log_likelihood(
        lambda t, x: m.velocity(x, t),
        x1,
        standard_normal_np,
        np.linspace(0.5, 0.0, 65),
        "rk4",
        divergence=lambda t, x: m.divergence(x, t),
    )
    # smooth field on [0, 0.5] (sigma >= 0.5): rk4 with h = 1/128 is accurate to ~1e-8
    np.testing.assert_allclose(lp, m.log_prob(x1, 0.5), rtol=0, atol=1e-7)
