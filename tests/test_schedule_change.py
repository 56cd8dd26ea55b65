"""The scale-time schedule change against the exact marginal fields of both paths.

Two exact oracles: the `EmpiricalMarginal` field of a data set (paper eq. 8), and the
closed-form marginal field of Gaussian data N(mu, tau^2 I), which is finite at both
ends of every path (its posterior mean is affine in x):

    v_t(x) = d_alpha mu + (d_alpha alpha tau^2 + d_sigma sigma) / (alpha^2 tau^2 + sigma^2) (x - alpha mu).

The transformed field of path A must equal path B's field for every ordered pair of
schedules whose SNR ranges nest (B's inside A's), on a grid including r = 0 and r = 1.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy

import flowspec as fs
from flowspec.parameterisations import KINDS

#: the catalogue, and a second VP with the same endpoints (T(1) = 10.05)
SCHEDULES = [*fs.schedules.CATALOGUE, fs.VariancePreserving(beta_min=1.0, beta_max=19.1)]
EPS = float(np.finfo(np.float64).eps)
R = np.array([0.0, 1e-12, 0.1, 0.5, 0.9, 1.0 - 1e-12, 1.0])


def _nested(a, b) -> bool:
    with np.errstate(divide="ignore"):
        ra, rb = np.asarray(a.snr(np.array([0.0, 1.0]))), np.asarray(b.snr(np.array([0.0, 1.0])))
    return bool(rb[0] >= ra[0] * (1 - 16 * EPS) and rb[1] <= ra[1] * (1 + 16 * EPS))


PAIRS = [(a, b) for a in SCHEDULES for b in SCHEDULES if _nested(a, b)]
PAIR_IDS = [f"{a!r}->{b!r}" for a, b in PAIRS]


def test_which_pairs_nest():
    """Documented in docs/parameterisations.md: every schedule with SNR range [0, inf]
    serves every other; VP serves VP with the same T(1) and VE; VE and CondOT(sigma_min > 0)
    serve only schedules inside their bounded range."""
    names = {(repr(a), repr(b)) for a, b in PAIRS}
    full = [fs.CondOT(), fs.Cosine(), fs.Polynomial(2.0), fs.Polynomial(0.5), fs.LinearVP()]
    for a in full:
        for b in SCHEDULES:
            assert (repr(a), repr(b)) in names
    vp, vp2, ve = fs.VariancePreserving(), SCHEDULES[-1], fs.VarianceExploding()
    assert (repr(vp), repr(vp2)) in names and (repr(vp2), repr(vp)) in names
    assert (repr(vp), repr(ve)) in names and (repr(vp), repr(fs.CondOT())) not in names
    assert (repr(ve), repr(vp)) not in names and (
        repr(fs.CondOT(1e-3)),
        repr(fs.CondOT()),
    ) not in names
    with pytest.raises(ValueError, match="`target`"):
        fs.change_schedule(lambda t, x: x, fs.VariancePreserving(), fs.CondOT())


def _coefs(schedule, t, like):
    with np.errstate(all="ignore"):
        return [np.reshape(np.asarray(v), (-1,) + (1,) * (like.ndim - 1)) for v in schedule(t)]


def _regular_at(schedule, t) -> np.ndarray:
    """Where A's velocity determines the predictions: finite coefficients and D != 0."""
    with np.errstate(all="ignore"):
        c = schedule(t)
        det = c.alpha * c.d_sigma - c.sigma * c.d_alpha
    finite = np.isfinite(c.alpha) & np.isfinite(c.sigma) & np.isfinite(c.d_alpha)
    return finite & np.isfinite(c.d_sigma) & (det != 0)


def _t_rounding(a, t) -> np.ndarray:
    """|d log rho_A / dt| * eps * t: the relative SNR error from rounding t_r to float64."""
    with np.errstate(all="ignore"):
        c = a(t)
        rel = (c.d_alpha * c.sigma - c.alpha * c.d_sigma) / (c.alpha * c.sigma)
    return np.where(np.isfinite(rel), np.abs(rel) * EPS * t, 0.0)


@pytest.mark.parametrize("a,b", PAIRS, ids=PAIR_IDS)
def test_empirical_marginal_field_maps_to_the_other_paths(a, b):
    """Error model (relative to |v_B| + |d_sigma_B/sigma_B| |x| + |d_alpha_B| |data|):
    both sides round a few dozen operations (softmax included), 64 eps; and t_r is a
    float64, so A is evaluated at an SNR off by the relative rounding of t_r, which
    the field inherits relatively: 8 |rho_A'/rho_A| eps t_r (this is what limits the
    agreement at r = 1 - 1e-12, where 1 - t_r is ~1e-12 and has 4 significant digits)."""
    data = np.array([[-1.0, 0.5], [2.0, 1.0], [0.3, -2.0], [0.0, 0.25]])
    ma = fs.EmpiricalMarginal(fs.GaussianPath(a), data)
    mb = fs.EmpiricalMarginal(fs.GaussianPath(b), data)
    x = np.random.default_rng(7).normal(size=(R.size, 2)) * 1.5
    u = fs.change_schedule(lambda t, z: ma.velocity(z, t), a, b)
    with np.errstate(all="ignore"):
        got, want = u(R, x), mb.velocity(x, R)
        t_r, _ = fs.scale_time(a, b, R)
        _, si, dal, dsi = _coefs(b, R, x)
        size = np.abs(want) + np.abs(dsi / si * x) + np.abs(dal) * np.max(np.abs(data))
    regular = _regular_at(a, t_r)
    tol = (64 * EPS + 8 * _t_rounding(a, t_r))[:, None] * size
    finite = np.isfinite(want)
    check = finite & regular[:, None]
    assert np.all(np.abs(got - want)[check] <= tol[check]), (R, got, want)
    # where B's field is infinite or undefined (r = 1 of a degenerate path, r = 0 of
    # Polynomial(0.5)), the transformed field is too: no clipped value
    assert not np.any(np.isfinite(got[~finite]))


def _gaussian_velocity(schedule, mu, tau):
    def v(t, x):
        al, si, dal, dsi = _coefs(schedule, np.asarray(t), x)
        gain = (dal * al * tau**2 + dsi * si) / (al * al * tau**2 + si * si)
        return dal * mu + gain * (x - al * mu)

    return v


@pytest.mark.parametrize("a,b", PAIRS, ids=PAIR_IDS)
def test_gaussian_data_field_is_finite_at_both_ends(a, b):
    """Gaussian data: the transformed field equals B's closed form on all of [0, 1],
    r = 0 and r = 1 included, wherever B's and A's coefficients are finite (this is
    where flow_matching 1.0.10's CondOT -> Cosine returns ~1e7 at r = 1).

    Error model: 64 eps (|d_alpha_B| + |d_sigma_B| + gain) (|x| + |mu|), plus the
    relative SNR error from rounding t_r, as in the empirical test."""
    mu, tau = np.array([[0.75, -1.5]]), 0.6
    x = np.random.default_rng(2).normal(size=(R.size, 2))
    u = fs.change_schedule(_gaussian_velocity(a, mu, tau), a, b)
    with np.errstate(all="ignore"):
        got, want = u(R, x), _gaussian_velocity(b, mu, tau)(R, x)
        t_r, _ = fs.scale_time(a, b, R)
        al, si, dal, dsi = _coefs(b, R, x)
    ok_b = np.all(np.isfinite([np.ravel(v) for v in (al, si, dal, dsi)]), axis=0)
    check = ok_b & _regular_at(a, t_r)
    size = (np.abs(dal) + np.abs(dsi) + np.abs(want)) * (np.abs(x) + np.abs(mu))
    tol = (64 * EPS + 8 * _t_rounding(a, t_r))[:, None] * size
    assert np.all(np.isfinite(got[check])), (R[check], got[check])
    assert np.all(np.abs(got - want)[check] <= tol[check]), np.max(
        (np.abs(got - want) / tol)[check]
    )
    if a == fs.CondOT() and b == fs.Cosine():  # both ends, explicitly
        assert check[0] and check[-1]


@pytest.mark.parametrize("prediction", KINDS)
@pytest.mark.parametrize("output", KINDS)
def test_every_kind_in_and_out(prediction, output):
    """A field of any kind on path A gives B's field of any kind (interior times)."""
    a, b = fs.CondOT(), fs.VariancePreserving()
    mu, tau = np.array([[0.5, 1.0]]), 0.8
    r = np.array([0.05, 0.3, 0.6, 0.95])
    x = np.random.default_rng(4).normal(size=(r.size, 2))
    fa = fs.convert_field(_gaussian_velocity(a, mu, tau), a, source="velocity", target=prediction)
    got = fs.change_schedule(fa, a, b, prediction=prediction, output=output)(r, x)
    want = fs.convert(
        b, _gaussian_velocity(b, mu, tau)(r, x), x, r, source="velocity", target=output
    )
    # conversions on both sides: coefficients up to |d log rho / dt| ~ 1/(1 - r) = 20
    np.testing.assert_allclose(got, want, rtol=0, atol=2048 * EPS * (1 + np.max(np.abs(want))))


def test_scale_time_values():
    """t_r = rho_A^{-1}(rho_B(r)) and s_r x_A has B's coefficients (CondOT -> Cosine)."""
    r = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    t, s = fs.scale_time(fs.CondOT(), fs.Cosine(), r)
    with np.errstate(divide="ignore"):
        rho = np.tan(np.pi * r / 2)
    want_t = np.where(np.isinf(rho), 1.0, rho / (1 + np.where(np.isinf(rho), 0, rho)))
    np.testing.assert_allclose(t, want_t, rtol=4 * EPS, atol=4 * EPS)
    np.testing.assert_allclose(s * t, np.sin(np.pi * r / 2), rtol=8 * EPS, atol=8 * EPS)
    np.testing.assert_allclose(s * (1 - t), np.cos(np.pi * r / 2), rtol=8 * EPS, atol=8 * EPS)


def test_namespace_dtype_and_r_rule(xp):
    a, b = fs.CondOT(), fs.Cosine()
    x = xp.asarray([[0.5, -1.0, 2.0], [1.0, 0.0, 0.5], [-2.0, 1.0, 0.25]], dtype=xp.float64)
    calls = []

    def field(t, z):
        calls.append(tuple(t.shape))
        return -z

    u = fs.change_schedule(field, a, b)
    for r in (0.5, xp.asarray(0.5, dtype=xp.float64), xp.asarray([0.5] * 3, dtype=xp.float64)):
        out = u(r, x)
        assert type(out) is type(x) and out.dtype == x.dtype and tuple(out.shape) == (3, 3)
    assert set(calls) == {(3,)}
    ref = fs.change_schedule(lambda t, z: -z, a, b)(np.array([0.5] * 3), to_numpy(x))
    np.testing.assert_allclose(to_numpy(out), ref, rtol=4 * EPS)
    with pytest.raises(ValueError, match="`prediction`"):
        fs.change_schedule(field, a, b, prediction="eps")
    with pytest.raises(TypeError, match="`field`"):
        fs.change_schedule(None, a, b)
    with pytest.raises(TypeError, match="`field`"):
        fs.change_schedule(lambda t, z: 1.0, a, b)(0.5, x)
