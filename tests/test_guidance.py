"""Classifier-free guidance: commutation with the conversions, and its effect on 1-D
Gaussian data in closed form, checked by integrating the guided field with RK4."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.parameterisations import KINDS
from flowspec.schedules import CATALOGUE

EPS = float(np.finfo(np.float64).eps)
PAIRS = [(a, b) for a in KINDS for b in KINDS if a != b]


def _gaussian_velocity(schedule, mu, tau):
    """The exact marginal field of data N(mu, tau^2) on a Gaussian path."""

    def v(t, x):
        with np.errstate(all="ignore"):
            c = schedule(np.asarray(t))
        al, si, dal, dsi = (np.reshape(np.asarray(k), (-1, 1)) for k in c)
        var = al * al * tau**2 + si * si
        return dal * mu + (dal * al * tau**2 + dsi * si) / var * (x - al * mu)

    return v


@given(
    w=st.floats(-1.0, 8.0),
    t=st.floats(0.01, 0.99),
    values=st.lists(st.floats(-4, 4, allow_subnormal=False), min_size=3, max_size=3),
)
def test_guidance_commutes_with_every_conversion(w, t, values):
    """convert(guided predictions) == guided(converted predictions): conversions are
    affine a x + b p and the weights (1 + w, -w) sum to 1.

    Error model: the two orders round differently; each is a few operations on terms
    of size (1 + 2|w|) (|a x| + |b p_c| + |b p_u|): 16 eps of that."""
    schedule = fs.Cosine()
    x = np.array([[values[0]]])
    pc, pu = np.array([[values[1]]]), np.array([[values[2]]])
    for source, target in PAIRS:
        guided_then = fs.convert(
            schedule, (1 + w) * pc - w * pu, x, t, source=source, target=target
        )
        conv_c = fs.convert(schedule, pc, x, t, source=source, target=target)
        conv_u = fs.convert(schedule, pu, x, t, source=source, target=target)
        a, b = fs.formulas.conversion_coefficients(schedule(np.array([t])), source, target)
        size = (1 + 2 * abs(w)) * (np.abs(a * x) + np.abs(b * pc) + np.abs(b * pu))
        assert np.all(np.abs(guided_then - ((1 + w) * conv_c - w * conv_u)) <= 16 * EPS * size)
    # and through the field combinators
    fc = lambda tt, xx: xx + 1.0  # noqa: E731
    fu = lambda tt, xx: 2.0 * xx  # noqa: E731
    g1 = fs.convert_field(fs.guided_field(fc, fu, w), schedule, source="x1", target="velocity")
    g2 = fs.guided_field(
        fs.convert_field(fc, schedule, source="x1", target="velocity"),
        fs.convert_field(fu, schedule, source="x1", target="velocity"),
        w,
    )
    tt = np.array([t])
    np.testing.assert_allclose(g1(tt, x), g2(tt, x), rtol=64 * EPS * (1 + 2 * abs(w)), atol=1e-12)


def _from_standard_normal(schedule) -> bool:
    """Paths that start at N(0, 1) (alpha_0 = 0, sigma_0 = 1) with a finite field at 0."""
    with np.errstate(divide="ignore"):  # t^0.5's derivative at 0
        c = schedule(np.array([0.0]))
    return c.alpha[0] == 0.0 and c.sigma[0] == 1.0 and 0.0 not in schedule.divergent_at


#: The catalogue's schedules whose path starts at the test's source N(0, 1).
FROM_STANDARD_NORMAL = [s for s in CATALOGUE if _from_standard_normal(s)]


def test_the_closed_form_test_covers_the_catalogue_where_it_applies():
    assert {fs.CondOT(), fs.Cosine(), fs.LinearVP()} <= set(FROM_STANDARD_NORMAL)
    for s in set(CATALOGUE) - set(FROM_STANDARD_NORMAL):  # VP, VE, CondOT(1e-3), t^0.5
        assert not _from_standard_normal(s)


@pytest.mark.parametrize("schedule", FROM_STANDARD_NORMAL, ids=repr)
@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_guided_gaussian_law_in_closed_form(schedule, w):
    """1-D: conditional N(mu_c, tau_c^2), unconditional N(mu_u, tau_u^2), paths from N(0, 1).

    The guided field is affine in x, so it maps N(0, 1) to a Gaussian with standard
    deviation sd_1 = tau_c^(1 + w) / tau_u^w (module docstring of flowspec.guidance).
    Integrated with RK4: x_1 = sd_1 x_0 + m_1, so two initial points give sd_1.
    Error model: RK4's global error is O(h^4); the bound is measured against the same
    run with half the steps (Richardson: err(h) ~ |x(h) - x(h/2)| 16/15), times 4."""
    mu_c, tau_c, mu_u, tau_u = 1.5, 0.4, -0.5, 1.2
    field = fs.guided_field(
        _gaussian_velocity(schedule, mu_c, tau_c), _gaussian_velocity(schedule, mu_u, tau_u), w
    )
    x0 = np.array([[-1.0], [1.0]])
    # LinearVP's d_sigma diverges at t = 1: integrate to t1 = 1 - 1e-6 there. The law at
    # any t has sd_t = V_c(t)^((1 + w)/2) V_u(t)^(-w/2), V(t) = alpha^2 tau^2 + sigma^2,
    # which at t = 1 is tau_c^(1 + w) / tau_u^w
    t1 = 1.0 - 1e-6 if 1.0 in schedule.divergent_at else 1.0
    ends = {}
    for steps in (200, 400):
        ends[steps] = fs.integrate(field, x0, np.linspace(0.0, t1, steps + 1), method="rk4")
    sd = (ends[400][1, 0] - ends[400][0, 0]) / 2.0
    err = 4 * abs((ends[400][1, 0] - ends[400][0, 0]) - (ends[200][1, 0] - ends[200][0, 0])) / 2
    c = schedule(np.array([t1]))
    var_c, var_u = (float(c.alpha[0] ** 2 * tau**2 + c.sigma[0] ** 2) for tau in (tau_c, tau_u))
    want = var_c ** ((1 + w) / 2) / var_u ** (w / 2)
    if t1 == 1.0 and c.sigma[0] == 0.0:  # the data's own law at t = 1
        assert want == pytest.approx(tau_c ** (1 + w) / tau_u**w, rel=8 * EPS)
    assert err < 1e-6  # the check below is not vacuous
    assert abs(sd - want) <= err + 16 * EPS * want, (sd, want, err)


@pytest.mark.parametrize("w", [0.5, 3.0])
def test_equal_variances_shift_the_mean(w):
    """tau_c = tau_u: the guided field is the field of N((1 + w) mu_c - w mu_u, tau^2)."""
    schedule, tau = fs.CondOT(sigma_min=0.0), 0.7
    mu_c, mu_u = 1.0, -2.0
    field = fs.guided_field(
        _gaussian_velocity(schedule, mu_c, tau), _gaussian_velocity(schedule, mu_u, tau), w
    )
    target = _gaussian_velocity(schedule, (1 + w) * mu_c - w * mu_u, tau)
    t = np.linspace(0.0, 1.0, 11)
    x = np.linspace(-3, 3, 11)[:, None]
    np.testing.assert_allclose(field(t, x), target(t, x), rtol=32 * EPS * (1 + 2 * w), atol=1e-13)
    out = fs.integrate(field, np.array([[-1.0], [1.0]]), np.linspace(0, 1, 201), method="rk4")
    np.testing.assert_allclose(out.mean(), (1 + w) * mu_c - w * mu_u, rtol=1e-8)
    np.testing.assert_allclose((out[1, 0] - out[0, 0]) / 2, tau, rtol=1e-8)


def test_guidance_validation(xp):
    f = lambda t, x: x  # noqa: E731
    with pytest.raises(TypeError, match="`w`"):
        fs.guided_field(f, f, "2")
    with pytest.raises(ValueError, match="`w`"):
        fs.guided_field(f, f, float("inf"))
    with pytest.raises(TypeError, match="`uncond`"):
        fs.guided_field(f, None, 1.0)
    x = xp.asarray([[1.0, 2.0]], dtype=xp.float64)
    t = xp.asarray([0.5], dtype=xp.float64)
    out = fs.guided_field(f, lambda t, x: 2.0 * x, 1.0)(t, x)
    assert type(out) is type(x) and out.dtype == x.dtype
    with pytest.raises(TypeError, match="`cond`"):
        fs.guided_field(lambda t, x: 1.0, f, 1.0)(t, x)
