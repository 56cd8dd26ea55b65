"""The signal-to-noise ratio rho_t = alpha_t / sigma_t, its derivative and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.schedules import bisect_snr_inverse

#: the catalogue, and a second VP with the same endpoints (T(1) = 10.05)
SCHEDULES = [*fs.schedules.CATALOGUE, fs.VariancePreserving(beta_min=1.0, beta_max=19.1)]
IDS = [repr(s) for s in SCHEDULES]
EPS = float(np.finfo(np.float64).eps)
GRID = np.concatenate(
    [[0.0, 1e-300, 1e-12, 1e-6], np.linspace(0.001, 0.999, 999), [1 - 1e-12, 1.0]]
)


def _snr_and_slope(schedule, t):
    with np.errstate(all="ignore"):
        return np.asarray(schedule.snr(t)), np.asarray(schedule.d_snr(t))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_snr_is_strictly_increasing(schedule):
    """d_snr > 0 on (0, 1) and rho strictly increasing on a fine grid: invertible."""
    rho, slope = _snr_and_slope(schedule, GRID)
    assert np.all(slope[1:-1] > 0), GRID[1:-1][~(slope[1:-1] > 0)]
    # non-decreasing in floating point everywhere, strictly on a grid of step 1e-3
    assert np.all(np.diff(rho) >= 0)
    coarse, _ = _snr_and_slope(schedule, np.linspace(0.0, 1.0, 1001))
    assert np.all(np.diff(coarse) > 0)
    assert np.all(rho >= 0)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_snr_endpoints(schedule):
    rho, _ = _snr_and_slope(schedule, np.array([0.0, 1.0]))
    assert (rho[0] == 0.0) == (0.0 in schedule.signal_free_at)
    assert np.isinf(rho[1]) == (1.0 in schedule.degenerate_at)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_d_snr_is_the_derivative(schedule):
    """Against a 4th-order central difference of snr, h = 1e-3 on [0.05, 0.95].

    Error model: truncation h^4/30 |rho^(5)| plus rounding 1.5 eps |rho| / h; rho and
    its derivatives are smooth there, so a relative bound of 1e-6 holds.
    """
    t = np.linspace(0.05, 0.95, 19)
    h = 1e-3
    f = lambda s: np.asarray(schedule.snr(s))  # noqa: E731
    fd = (f(t - 2 * h) - 8 * f(t - h) + 8 * f(t + h) - f(t + 2 * h)) / (12 * h)
    np.testing.assert_allclose(np.asarray(schedule.d_snr(t)), fd, rtol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_inverse_round_trip_and_bisection(schedule):
    """snr_inverse(snr(t)) = t, and the closed forms equal the bisection.

    Error model: rho carries a few ulps (relative); the inverse maps a relative error
    delta of rho to delta rho / rho' in t, so |t_hat - t| <= K eps (t + rho / rho'),
    with rho / rho' = alpha sigma / (d_alpha sigma - alpha d_sigma) (finite at both
    ends), K = 16.
    """
    rho, _ = _snr_and_slope(schedule, GRID)
    with np.errstate(all="ignore"):
        c = schedule(GRID)
        scale = c.alpha * c.sigma / (c.d_alpha * c.sigma - c.alpha * c.d_sigma)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    tol = 16 * EPS * (GRID + scale) + 1e-300
    closed = np.asarray(schedule.snr_inverse(rho))
    bisect = np.asarray(bisect_snr_inverse(schedule, rho))
    # where rho underflows to 0 (t ~ 1e-300 for Polynomial(2)), both give 0
    ok = (rho > 0) | (GRID == 0)
    assert np.all(np.abs(closed - GRID)[ok] <= tol[ok]), np.max((np.abs(closed - GRID) / tol)[ok])
    assert np.all(np.abs(bisect - GRID)[ok] <= tol[ok]), np.max((np.abs(bisect - GRID) / tol)[ok])
    assert np.all((closed >= 0) & (closed <= 1))


class _Quadratic(fs.Schedule):
    """A user's schedule: alpha = t^2, sigma = 1 - t^2 (no closed-form inverse given)."""

    degenerate_at = (1.0,)

    def coefficients(self, xp, t):
        return fs.Coefficients(t * t, 1.0 - t * t, 2.0 * t, -2.0 * t)


@given(t=st.floats(0.0, 1.0))
def test_default_inverse_for_a_users_schedule(t):
    """The bisection is the default; against the exact inverse sqrt(rho / (1 + rho))."""
    s = _Quadratic()
    rho = np.asarray(s.snr(np.array([t])))
    got = float(s.snr_inverse(rho)[0])
    with np.errstate(all="ignore"):
        want = 1.0 if np.isinf(rho[0]) else float(np.sqrt(rho[0] / (1.0 + rho[0])))
    # rho has a few ulps relative; t = sqrt(rho/(1+rho)): relative error halves, plus
    # 1 - t^2 rounding near t = 1 (absolute eps): 8 eps (t + 1)
    assert abs(got - want) <= 8 * EPS * (want + 1.0)


def test_inverse_keeps_namespace_dtype_and_shape(xp):
    rho = xp.asarray([[0.0, 1.0], [3.0, float("inf")]], dtype=xp.float64)
    for s in (fs.CondOT(), fs.Cosine(), _Quadratic()):
        t = s.snr_inverse(rho)
        assert type(t) is type(rho) and t.dtype == rho.dtype and tuple(t.shape) == (2, 2)
    np.testing.assert_allclose(to_numpy(fs.CondOT().snr_inverse(rho)), [[0, 0.5], [0.75, 1.0]])
    r32 = xp.asarray([0.5, 2.0], dtype=xp.float32)
    assert fs.LinearVP().snr_inverse(r32).dtype == xp.float32
    assert bisect_snr_inverse(fs.LinearVP(), r32).dtype == xp.float32


@pytest.mark.parametrize(
    "value,err",
    [
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
        (np.array([-1.0]), ValueError),
    ],
)
def test_inverse_validation(value, err):
    with pytest.raises(err, match="`snr`"):
        fs.CondOT().snr_inverse(value)
    with pytest.raises(TypeError, match="`schedule`"):
        bisect_snr_inverse("CondOT", np.array([1.0]))
