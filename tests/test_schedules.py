"""Schedules: closed forms of the paper, analytic derivatives, endpoints, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)

# the schedules under contract, and parameters whose formulas take other branches
ALL = [
    *fs.schedules.CATALOGUE,
    fs.CondOT(sigma_min=0.01),
    fs.VariancePreserving(beta_min=0.5, beta_max=5.0),
    fs.Polynomial(1.0),
]
IDS = [repr(s) for s in ALL]


def naive(schedule, t):
    """The schedules' definitions, written the obvious way (eq. 16-20, Guide table)."""
    t = np.asarray(t, dtype=np.float64)
    if isinstance(schedule, fs.CondOT):
        return t, 1 - (1 - schedule.sigma_min) * t
    if isinstance(schedule, fs.VariancePreserving):
        b0, b1 = schedule.beta_min, schedule.beta_max

        def big_t(s):  # T(s) = int_0^s beta, beta(s) = b0 + s (b1 - b0)  (paper App. E)
            return s * b0 + 0.5 * s**2 * (b1 - b0)

        alpha_fm = np.exp(-0.5 * big_t(1 - t))  # mu_t = alpha_{1-t} x1 (eq. 18)
        return alpha_fm, np.sqrt(1 - alpha_fm**2)
    if isinstance(schedule, fs.VarianceExploding):
        lo, hi = schedule.sigma_min, schedule.sigma_max
        return np.ones_like(t), lo * (hi / lo) ** (1 - t)  # sigma_{1-t} (eq. 16)
    if isinstance(schedule, fs.Cosine):
        return np.sin(np.pi * t / 2), np.cos(np.pi * t / 2)
    if isinstance(schedule, fs.Polynomial):
        return t**schedule.n, 1 - t**schedule.n
    if isinstance(schedule, fs.LinearVP):
        return t, np.sqrt(1 - t**2)
    raise AssertionError(schedule)


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
def test_closed_forms(xp, schedule):
    t = np.linspace(0.0, 0.99, 34)
    with np.errstate(divide="ignore"):  # Polynomial(n < 1): d_alpha = inf at t = 0, as documented
        c = schedule(xp.asarray(t))
    alpha, sigma = naive(schedule, t)
    # same quantity by different, equally well-conditioned formulas on t <= 0.99:
    # agreement to a few hundred ulps of max(1, |value|)
    tol = 256 * EPS64
    np.testing.assert_allclose(to_numpy(c.alpha), alpha, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_numpy(c.sigma), sigma, rtol=tol, atol=tol * 80)


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
@given(t=st.floats(0.05, 0.95))
def test_derivatives_match_finite_differences(schedule, t):
    h = 1e-5
    lo, hi = schedule(np.array(t - h)), schedule(np.array(t + h))
    c = schedule(np.array(t))
    for value, d_value, lo_v, hi_v in (
        (c.alpha, c.d_alpha, lo.alpha, hi.alpha),
        (c.sigma, c.d_sigma, lo.sigma, hi.sigma),
    ):
        fd = (hi_v - lo_v) / (2 * h)
        # central difference: truncation h^2/6 |f'''| (f''' <= ~1e5 for VE/VP on
        # [0.05, 0.95] relative to max(1, |f'|)) plus rounding eps |f| / h
        scale = max(1.0, abs(float(d_value)), abs(float(value)))
        assert abs(float(fd - d_value)) <= (h * h / 6 * 1e5 + 4 * EPS64 / h) * scale


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
def test_endpoints(schedule):
    with np.errstate(divide="ignore"):  # the documented divergences at the endpoints
        c0, c1 = schedule(0.0), schedule(1.0)
    if isinstance(schedule, fs.VarianceExploding):
        assert float(c1.sigma) == pytest.approx(schedule.sigma_min, rel=4 * EPS64)
        assert float(c0.sigma) == pytest.approx(schedule.sigma_max, rel=64 * EPS64)
        assert float(c0.alpha) == float(c1.alpha) == 1.0
        return
    assert float(c1.alpha) == 1.0  # mu_1(x1) = x1 exactly
    if isinstance(schedule, fs.VariancePreserving):
        # p_0 is only approximately N(0, I): alpha_0 = exp(-T(1)/2)
        big_t = schedule.beta_min + 0.5 * (schedule.beta_max - schedule.beta_min)
        assert float(c0.alpha) == pytest.approx(math.exp(-0.5 * big_t), rel=4 * EPS64)
    else:
        assert float(c0.alpha) == 0.0 and float(c0.sigma) == 1.0
    sigma_1 = getattr(schedule, "sigma_min", 0.0)
    assert float(c1.sigma) == pytest.approx(sigma_1, abs=EPS64)
    assert (float(c1.sigma) == 0.0) == (1.0 in schedule.degenerate_at)


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
def test_finite_domain_is_documented_and_true(schedule):
    grid = np.linspace(0.0, 1.0, 101)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = schedule(grid)
    finite = np.all(np.isfinite(np.stack(list(c))), axis=0)
    for t, ok in zip(grid, finite, strict=True):
        assert ok == (t not in schedule.divergent_at), (t, schedule)


def test_diffusion_derivatives_diverge_at_one():
    # the issue asks to test that VP and LinearVP derivatives diverge at t = 1
    with np.errstate(divide="ignore"):
        for schedule in (fs.VariancePreserving(), fs.LinearVP()):
            assert float(schedule(1.0).d_sigma) == -math.inf
            # and grow without bound as t -> 1 (like 1 / sqrt(1 - t))
            near = [abs(float(schedule(1 - 10.0**-k).d_sigma)) for k in (2, 4, 6)]
            assert near[0] < near[1] < near[2]


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
def test_float32_agrees_with_float64_near_one(xp, schedule):
    # t values close to 1 where 1 - t^n or 1 - exp(-T) would cancel if computed naively
    t32 = xp.asarray(np.array([0.9, 0.99, 0.999, 0.9999, 1 - 2**-20], dtype=np.float32))
    t64 = xp.astype(t32, xp.float64)  # the same times, exactly
    c32, c64 = schedule(t32), schedule(t64)
    for name in ("alpha", "sigma", "d_alpha", "d_sigma"):
        a, b = to_numpy(getattr(c32, name)), to_numpy(getattr(c64, name))
        assert a.dtype == np.float32
        # each coefficient is a composition of a few correctly-rounded operations on
        # an exact input: relative error of a few ulps, 16 eps32 allows for exp/log
        np.testing.assert_allclose(a, b, rtol=16 * EPS32, atol=0, err_msg=name)


@pytest.mark.parametrize("schedule", ALL, ids=IDS)
def test_dtype_and_namespace_preserved(xp, schedule):
    for dtype in (xp.float32, xp.float64):
        t = xp.asarray([0.25, 0.5], dtype=dtype)
        for value in schedule(t):
            assert value.dtype == dtype
            assert type(value) is type(t)
            assert tuple(value.shape) == (2,)


@pytest.mark.parametrize(
    ("make", "exc", "name"),
    [
        (lambda: fs.CondOT(sigma_min=-0.1), ValueError, "sigma_min"),
        (lambda: fs.CondOT(sigma_min=1.0), ValueError, "sigma_min"),
        (lambda: fs.CondOT(sigma_min=float("nan")), ValueError, "sigma_min"),
        (lambda: fs.CondOT(sigma_min="0.1"), TypeError, "sigma_min"),
        (lambda: fs.CondOT(sigma_min=True), TypeError, "sigma_min"),
        (lambda: fs.VariancePreserving(beta_min=0.0), ValueError, "beta_min"),
        (lambda: fs.VariancePreserving(beta_min=2.0, beta_max=1.0), ValueError, "beta_max"),
        (lambda: fs.VariancePreserving(beta_max=math.inf), ValueError, "beta_max"),
        (lambda: fs.VarianceExploding(sigma_min=0.0), ValueError, "sigma_min"),
        (lambda: fs.VarianceExploding(sigma_min=5.0, sigma_max=1.0), ValueError, "sigma_max"),
        (lambda: fs.Polynomial(0), ValueError, "n"),
        (lambda: fs.Polynomial(-1.0), ValueError, "n"),
        (lambda: fs.Polynomial(None), TypeError, "n"),
        (lambda: fs.CondOT()(1.5), ValueError, "t"),
        (lambda: fs.CondOT()(np.array([0.5, -0.1])), ValueError, "t"),
        (lambda: fs.CondOT()(np.array([1, 0])), TypeError, "t"),
        (lambda: fs.CondOT()("0.5"), TypeError, "t"),
    ],
)
def test_bad_arguments(make, exc, name):
    with pytest.raises(exc, match=f"`{name}`"):
        make()


def test_schedules_are_frozen_and_hashable():
    s = fs.CondOT(sigma_min=0.1)
    with pytest.raises(AttributeError):
        s.sigma_min = 0.2
    assert hash(s) == hash(fs.CondOT(sigma_min=0.1))
    assert isinstance(fs.Polynomial(2).n, float)
