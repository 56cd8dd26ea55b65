"""cfm_loss_floor: the constant of Theorem 2 for an empirical data distribution.

1. The per-sample terms agree with an independent float64 computation (explicit
   softmax over the data, the conditional fields averaged with it), on every schedule.
2. Exact values: 0 for one data point (the marginal field is the conditional one), the
   data variance times d_alpha_0^2 at t = 0 (the posterior is the prior there).
3. Theorem 2 itself: for any model v, ||v - u_cond||^2 - ||v - u||^2 - ||u - u_cond||^2
   = 2 (v - u).(u - u_cond) has mean 0 (E[u_cond | x_t] = u), tested by the central
   limit theorem at 5 standard errors on fixed seeds; the same test rejects a wrong
   marginal field.
4. Every library, the returned dtype and namespace; validation of every argument.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.conformance.properties import _times, _values

EPS64 = float(np.finfo(np.float64).eps)
K = 64  # ulps allowed per rounded operation chain (error model in each test)


def time_range(schedule):
    """[lo, hi] inside the schedule's finite, non-degenerate domain: 0.95 below an end
    at t = 1 where sigma_1 = 0 or a derivative diverges, 0.05 above t = 0 where a
    derivative diverges (Polynomial(0.5))."""
    ends = (*schedule.degenerate_at, *schedule.divergent_at)
    return (0.05 if 0.0 in schedule.divergent_at else 0.0), (0.95 if 1.0 in ends else 1.0)


@st.composite
def floor_cases(draw, t_range):
    """(data, x0, x1, t) through the conformance kit's strategies, so shrinking shrinks
    the arrays: data of scale 2 (entries in [-8, 8]), x0 in [-4, 4] (the range of the
    normals they replace), x1 drawn from the data, times of the kit in ``t_range``."""
    n = draw(st.integers(1, 7))
    batch = draw(st.integers(2, 9))
    data = draw(_values((n, 2), -8.0, 8.0))
    x0 = draw(_values((batch, 2), -4.0, 4.0))
    idx = draw(st.lists(st.integers(0, n - 1), min_size=batch, max_size=batch))
    t = draw(_times(batch, *t_range))
    return data, x0, data[np.array(idx)], t


def independent_terms(schedule, data, x0, x1, t):
    """||d/dt psi_t(x0|x1) - u_t(psi_t(x0|x1))||^2 by brute force, float64 NumPy.

    Returns the terms and an absolute error bound for each (see the error model below).
    """
    c = schedule(t.reshape(-1, 1))
    a, s, da, ds = (np.broadcast_to(np.asarray(v, dtype=np.float64), (t.shape[0], 1)) for v in c)
    x = a * x1 + s * x0  # psi_t(x0 | x1), eq. 11
    target = da * x1 + ds * x0  # its time derivative
    diff = x[:, None, :] - a[:, :, None] * data[None]  # (B, N, D)
    logits = -np.sum(diff * diff, axis=2) / (2.0 * s * s)  # (B, N)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    cond = (ds / s)[:, :, None] * diff + da[:, :, None] * data[None]  # u_t(x | x1^(i))
    u = np.einsum("bn,bnd->bd", w, cond)  # eq. 8 for q = (1/N) sum_i delta_i
    r = target - u
    terms = np.sum(r * r, axis=1)
    # Error model: each weight carries a relative error ~ eps * |logit| (exp of a rounded
    # logit), each field term a relative error ~ K eps, so u is off by at most
    # K eps (1 + max|logit|) * max_i |u_t(x | x1^(i))| per coordinate; the target by
    # K eps (|da x1| + |ds x0|). A square of r carries 2 |r| err + err^2.
    scale_u = (1.0 + np.abs(logits).max(axis=1)) * np.abs(cond).max(axis=(1, 2))
    scale_t = np.abs(da * x1).max(axis=1) + np.abs(ds * x0).max(axis=1)
    err = K * EPS64 * (scale_u + scale_t) * math.sqrt(data.shape[1])
    bound = 2.0 * np.sqrt(terms) * err + err * err + K * EPS64 * terms
    return terms, bound


@given(case=st.data())
def test_terms_match_independent_computation(schedule, case):
    data, x0, x1, t = case.draw(floor_cases(time_range(schedule)))
    batch = t.shape[0]
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    floor = fs.cfm_loss_floor(m, x0, x1, t)
    want, bound = independent_terms(schedule, data, x0, x1, t)
    assert floor.terms.shape == (batch,)
    assert np.all(np.abs(floor.terms - want) <= bound), (floor.terms, want, bound)
    # the summary is the mean and the CLT interval of these terms
    assert float(floor.estimate) == pytest.approx(float(np.mean(floor.terms)), rel=K * EPS64)
    se = np.std(floor.terms, ddof=1) / math.sqrt(batch)
    assert float(floor.stderr) == pytest.approx(se, rel=K * EPS64, abs=K * EPS64 * want.max())
    z = 1.959963984540054  # the 0.975 quantile of N(0, 1)
    # high and low are the rounded sums estimate +- z se: their difference carries up to
    # one ulp of each, which dominates when z se is far below the estimate
    ulps = 2 * EPS64 * (abs(float(floor.estimate)) + z * se)
    assert float(floor.high - floor.low) == pytest.approx(2 * z * se, rel=1e-12, abs=ulps + 1e-300)


def test_one_data_point_floor_is_zero(schedule):
    # One point: u_t(x) = u_t(x | x1) and d/dt psi_t(x0|x1) = u_t(psi_t(x0|x1) | x1)
    # (eq. 13), so every term is the square of a rounding error: |r| <= K eps * scale.
    # A fixed example (no Hypothesis): the seed only fixes x0 and t.
    t_min, t_max = time_range(schedule)
    rng = np.random.default_rng(1)
    point = np.array([[1.5, -0.5, 2.0]])
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), point)
    x0 = rng.standard_normal((64, 3))
    t = rng.uniform(t_min, t_max, size=64)
    floor = fs.cfm_loss_floor(m, x0, np.repeat(point, 64, axis=0), t)
    c = schedule(t.reshape(-1, 1))
    scale = np.abs(c.d_alpha) * 2.0 + np.abs(c.d_sigma) * np.abs(x0).max(axis=1, keepdims=True)
    scale = scale + np.abs(c.d_sigma / c.sigma) * (np.abs(c.sigma * x0).max() + 2.0)
    assert np.all(floor.terms <= 3 * (K * EPS64 * scale[:, 0]) ** 2)


def test_floor_at_t0_is_the_data_variance(schedule):
    # alpha_0 = 0: x_0 carries no information on x1, the posterior is the prior, and
    # target - u = d_alpha_0 (x1 - mean). Over every data point once, the mean term is
    # d_alpha_0^2 * sum of the coordinate variances; error ~ K eps * that value.
    if 0.0 not in schedule.signal_free_at or 0.0 in schedule.divergent_at:
        pytest.skip("needs alpha_0 = 0 and a finite d_alpha_0")
    # a fixed example (no Hypothesis): the seed only fixes the data and x0
    rng = np.random.default_rng(2)
    data = rng.normal(loc=3.0, size=(40, 2))
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    floor = fs.cfm_loss_floor(m, rng.standard_normal((40, 2)), data, 0.0)
    d_alpha_0 = float(schedule(0.0).d_alpha)
    want = d_alpha_0**2 * data.var(axis=0).sum()
    assert float(floor.estimate) == pytest.approx(want, rel=K * EPS64, abs=K * EPS64)


def _theorem2_statistic(marginal_for_u, marginal, seed, n=4000):
    """Mean and standard error of 2 (v - u).(u - u_cond) for the model v(t, x) = A x + t b."""
    # seeds, not Hypothesis: a Monte Carlo test whose failure probability is bounded
    # for each fixed seed; shrinking a sample has no meaning here
    rng = np.random.default_rng(seed)
    data = to_numpy(marginal.data)
    x0 = rng.standard_normal((n, 2))
    x1 = data[rng.integers(0, data.shape[0], size=n)]
    t = rng.uniform(0.0, 0.95, size=n)
    x_t, u_cond = marginal.path.sample_and_target(x0, x1, t)
    u = marginal_for_u.velocity(x_t, t)
    v = x_t @ np.array([[0.3, -1.0], [0.7, 0.2]]) + t[:, None] * np.array([1.0, -2.0])
    cfm = fs.cfm_loss(v, u_cond, reduction="none")  # eq. 14
    fm = fs.cfm_loss(v, u, reduction="none")  # eq. 5
    floor = fs.cfm_loss_floor(marginal, x0, x1, t)
    d = cfm - fm - floor.terms
    return float(np.mean(d)), float(np.std(d, ddof=1) / math.sqrt(n))


@pytest.mark.parametrize("schedule", [fs.CondOT(sigma_min=1e-2), fs.VariancePreserving()])
@pytest.mark.parametrize("seed", [0, 1])
def test_theorem2_cfm_equals_fm_plus_floor(schedule, seed):
    # E[cfm - fm - floor term] = 0 by Theorem 2; the CLT gives |mean| <= 5 se with
    # probability 1 - 6e-7 for each (fixed) seed.
    data = np.random.default_rng(10 + seed).normal(scale=2.0, size=(12, 2))
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    mean, se = _theorem2_statistic(m, m, seed)
    assert abs(mean) <= 5 * se, (mean, se)
    # the test has power: the field of another data set is not the marginal field
    wrong = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data + 0.5)
    mean, se = _theorem2_statistic(wrong, m, seed)
    assert abs(mean) > 5 * se, (mean, se)


def test_every_library(xp):
    rng = np.random.default_rng(3)
    data_np = rng.standard_normal((6, 2))
    x0_np, t_np = rng.standard_normal((10, 2)), rng.uniform(0.0, 0.9, size=10)
    x1_np = data_np[rng.integers(0, 6, size=10)]
    schedule = fs.CondOT(sigma_min=0.01)
    ref = fs.cfm_loss_floor(
        fs.EmpiricalMarginal(fs.GaussianPath(schedule), data_np), x0_np, x1_np, t_np
    )
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), xp.asarray(data_np))
    x0, x1, t = xp.asarray(x0_np), xp.asarray(x1_np), xp.asarray(t_np)
    floor = fs.cfm_loss_floor(m, x0, x1, t, confidence=0.9)
    for value in (floor.estimate, floor.stderr, floor.low, floor.high, floor.terms):
        assert value.dtype == x0.dtype
        assert array_api_compat.array_namespace(value) is array_api_compat.array_namespace(x0)
    assert floor.terms.shape == (10,) and floor.estimate.shape == ()
    # the same float64 arithmetic in another library: a few ulps of each term (the
    # libraries may reduce the streamed sums in another order), error model as above
    _, bound = independent_terms(schedule, data_np, x0_np, x1_np, t_np)
    assert np.all(np.abs(to_numpy(floor.terms) - ref.terms) <= bound)
    assert floor.confidence == 0.9


def test_validation():
    data = np.zeros((3, 2))
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT()), data)
    x = np.zeros((4, 2))
    with pytest.raises(TypeError, match="`marginal`"):
        fs.cfm_loss_floor(fs.GaussianPath(fs.CondOT()), x, x, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        fs.cfm_loss_floor(m, x[:1], x[:1], 0.5)
    with pytest.raises(ValueError, match="`x0`"):
        fs.cfm_loss_floor(m, x, np.zeros((5, 2)), 0.5)
    with pytest.raises(TypeError, match="`x1`"):
        fs.cfm_loss_floor(m, x, x.astype(np.float32), 0.5)
    with pytest.raises(TypeError, match="`x`"):  # the data are float64
        fs.cfm_loss_floor(m, x.astype(np.float32), x.astype(np.float32), 0.5)
    with pytest.raises(ValueError, match="`x`"):
        fs.cfm_loss_floor(m, np.zeros((4, 3)), np.zeros((4, 3)), 0.5)
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="`confidence`"):
            fs.cfm_loss_floor(m, x, x, 0.5, confidence=bad)
    for bad in (True, "0.9", None):
        with pytest.raises(TypeError, match="`confidence`"):
            fs.cfm_loss_floor(m, x, x, 0.5, confidence=bad)
    with pytest.raises(ValueError, match="`t`"):
        fs.cfm_loss_floor(m, x, x, 1.5)
