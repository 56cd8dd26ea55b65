"""The coupled Gaussian conditional path (flowspec.coupled_paths).

Oracles: the paper's GaussianPath (the special case gamma = 0), the identity
target == velocity at x_t, finite differences of the noise scales, the continuity
equation for every noise scale, closed forms, and the independent-coupling
equivalence with a GaussianPath of noise sqrt(sigma^2 + gamma^2), checked by
Gauss-Hermite quadrature over x0 against EmpiricalMarginal.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import flowspec as fs
from flowspec.coupled_paths import (
    BrownianBridgeNoise,
    ConstantNoise,
    CoupledPath,
    NoiseCoefficients,
    NoiseScale,
    NoisySchedule,
    NoNoise,
)
from flowspec.schedules import CATALOGUE

EPS64 = float(np.finfo(np.float64).eps)


class Parabola(NoiseScale):
    """A user's noise scale, gamma_t = s t (1 - t), ratio by the default division."""

    def __init__(self, s: float = 0.7) -> None:
        self.s = s

    def coefficients(self, xp, t):
        return NoiseCoefficients(self.s * t * (1.0 - t), self.s * (1.0 - 2.0 * t))


NOISES = [NoNoise(), ConstantNoise(0.0), ConstantNoise(0.3), BrownianBridgeNoise(0.5), Parabola()]
POSITIVE = [ConstantNoise(0.3), BrownianBridgeNoise(0.5), BrownianBridgeNoise(2.0), Parabola()]


def _batch(rng, shape, xp=None):
    out = [rng.standard_normal(shape) for _ in range(3)]
    return out if xp is None else [xp.asarray(a) for a in out]


def test_gaussian_path_is_the_zero_noise_case(xp, schedule):
    # gamma = 0 conditioned on x1 with x0 as the noise: the paper's psi_t(x0 | x1)
    # (eq. 11) and its target (eq. 13), bit for bit (the same operations), any eps
    rng = np.random.default_rng(0)
    x0, x1, eps = _batch(rng, (4, 3), xp)
    t = xp.asarray(np.array([0.0, 0.3, 0.8, 1.0]))
    ref = fs.GaussianPath(schedule)
    with np.errstate(all="ignore"):
        x_t, u = CoupledPath(schedule, NoNoise()).sample_and_target(x0, x1, eps, t)
        want_x, want_u = ref.sample_and_target(x0, x1, t)
        v = CoupledPath(schedule, NoNoise()).velocity(x_t, x0, x1, t)
    np.testing.assert_array_equal(to_numpy(x_t), to_numpy(want_x))
    np.testing.assert_array_equal(to_numpy(u), to_numpy(want_u))
    # the x-form field with gamma = 0 is the drift of the mean everywhere (ratio 0, not 0/0)
    np.testing.assert_array_equal(to_numpy(v), to_numpy(want_u))


@pytest.mark.parametrize("noise", NOISES, ids=repr)
def test_outputs_keep_namespace_dtype_and_shape(xp, noise):
    rng = np.random.default_rng(1)
    for dtype in ("float32", "float64"):
        x0, x1, eps = (xp.astype(a, getattr(xp, dtype)) for a in _batch(rng, (3, 2, 2), xp))
        t = xp.asarray(np.array([0.2, 0.5, 0.7]), dtype=getattr(xp, dtype))
        path = CoupledPath(fs.CondOT(), noise)
        for out in (*path.sample_and_target(x0, x1, eps, t), path.velocity(x0, x0, x1, t)):
            assert out.dtype == x0.dtype and tuple(out.shape) == (3, 2, 2)
            assert type(out) is type(x0)
        if not isinstance(noise, NoNoise) and noise != ConstantNoise(0.0):
            assert tuple(path.log_prob(x0, x0, x1, t).shape) == (3,)
            assert tuple(path.score(x0, x0, x1, t).shape) == (3, 2, 2)
        assert tuple(path.divergence(x0, x0, x1, t).shape) == (3,)


@given(
    arrays(np.float64, (3, 2), elements=st.floats(-5, 5)),
    arrays(np.float64, (3, 2), elements=st.floats(-5, 5)),
    arrays(np.float64, (3, 2), elements=st.floats(-5, 5)),
    arrays(np.float64, (3,), elements=st.floats(1e-6, 1 - 1e-6)),
    st.sampled_from(POSITIVE),
    st.sampled_from(CATALOGUE),
)
def test_target_is_the_field_at_x_t(x0, x1, eps, t, noise, schedule):
    # u_t(x_t | z) = d_mu + (d_gamma / gamma) gamma eps = d_mu + d_gamma eps. Error model:
    # the x-form recovers gamma eps as x_t - mu (cancellation: a few ulps of |mu| +
    # |gamma eps|) and multiplies it by the ratio, so the error is ~ K eps64 (|d_mu
    # terms| + |ratio| (|mu| + |gamma eps|) + |d_gamma eps|), K = 16.
    path = CoupledPath(schedule, noise)
    x_t, u = path.sample_and_target(x0, x1, eps, t)
    v = path.velocity(x_t, x0, x1, t)
    c = schedule(t)
    n = noise(t)
    col = (3, 1)
    al, si, dal, dsi = (np.reshape(a, col) for a in c)
    g, dg, ratio = (np.reshape(a, col) for a in n)
    size = (
        np.abs(dal * x1)
        + np.abs(dsi * x0)
        + np.abs(ratio) * (np.abs(al * x1) + np.abs(si * x0) + np.abs(g * eps))
        + np.abs(dg * eps)
    )
    assert np.all(np.abs(v - u) <= 16 * EPS64 * size)


@pytest.mark.parametrize("noise", [*POSITIVE, NoNoise()], ids=repr)
def test_noise_derivative_by_finite_differences(noise):
    # central differences, h = eps^(1/3): error ~ h^2 |gamma'''| + eps/h |gamma|; on
    # [0.05, 0.95] every gamma here has |gamma'''| <= 40 s, so 100 eps^(2/3) bounds it
    t = np.linspace(0.05, 0.95, 19)
    h = EPS64 ** (1 / 3)
    n = noise(t)
    fd = (noise(t + h).gamma - noise(t - h).gamma) / ((t + h) - (t - h))
    scale = getattr(noise, "sigma", getattr(noise, "s", 1.0))
    np.testing.assert_allclose(n.d_gamma, fd, rtol=0, atol=100 * EPS64 ** (2 / 3) * (1 + scale))
    # the ratio is d_gamma / gamma where gamma > 0, and 0 for the zero and constant scales
    want = np.where(np.asarray(n.gamma) > 0, n.d_gamma / np.where(n.gamma > 0, n.gamma, 1), 0)
    np.testing.assert_allclose(n.ratio, want, rtol=8 * EPS64, atol=0)


def test_brownian_bridge_endpoints_are_what_the_arithmetic_gives():
    # gamma = 0 with d_gamma = +-inf at t = 0 and 1: the target diverges like t^(-1/2)
    # (no 1e-8 softening); inside (0, 1) everything is finite
    path = CoupledPath(fs.CondOT(), BrownianBridgeNoise(1.0))
    x0, x1, eps = np.zeros((2, 1)), np.ones((2, 1)), np.ones((2, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, u = path.sample_and_target(x0, x1, eps, np.array([0.0, 1.0]))
    assert u[0, 0] == np.inf and u[1, 0] == -np.inf
    # at t = 1e-10: d_gamma = (1 - 2t) / (2 sqrt(t (1 - t))) ~ 5e4, exactly as derived
    _, u = path.sample_and_target(x0[:1], x1[:1], eps[:1], 1e-10)
    t = 1e-10
    want = 1.0 + (1 - 2 * t) / (2 * np.sqrt(t * (1 - t)))
    assert abs(u[0, 0] - want) <= 8 * EPS64 * want
    assert BrownianBridgeNoise.divergent_at == (0.0, 1.0)


def _continuity_bound(path, x, x0, x1, t):
    # the central-difference error model of tests/test_theorems.py: relative to the size
    # of the three terms, <= C eps^(2/3) (1 + rate^2)(1 + max(1,|x|)^2 / gamma^2), with
    # the rate now 1/(time scale) of mean and noise: |d_gamma|/gamma + |d_mu|/gamma
    n = path.noise(t)
    g = np.asarray(n.gamma)
    _, d_mu = path.mean_path.sample_and_target(x0, x1, t)
    dmu = np.abs(d_mu).reshape(x.shape[0], -1).max(axis=1)
    rate = np.abs(n.d_gamma) / g + dmu / g
    xi = np.maximum(1.0, np.abs(x).reshape(x.shape[0], -1).max(axis=1))
    u = path.velocity(x, x0, x1, t)
    size = (
        1.0
        + np.abs(path.divergence(x, x0, x1, t))
        + np.abs((u * path.score(x, x0, x1, t)).reshape(x.shape[0], -1).sum(axis=1))
        + np.abs(path.log_prob(x, x0, x1, t))
    )
    return 10 * EPS64 ** (2 / 3) * size * (1 + rate**2) * (1 + xi**2 / g**2)


@pytest.mark.parametrize("noise", POSITIVE, ids=repr)
def test_continuity_residual_vanishes_for_every_noise_scale(noise, schedule):
    rng = np.random.default_rng(2)
    shape = (6, 2)
    x0, x1, eps = _batch(rng, shape)
    t = rng.uniform(0.1, 0.9, size=6)
    path = CoupledPath(schedule, noise)
    x, _ = path.sample_and_target(x0, x1, eps, t)

    def lp(tt, xx):
        return path.log_prob(xx, x0, x1, tt)

    def vel(tt, xx):
        return path.velocity(xx, x0, x1, tt)

    r = fs.continuity_residual(lp, vel, t, x)
    assert np.all(np.abs(r) <= _continuity_bound(path, x, x0, x1, t))

    # and it sees a wrong field: the field of the mean path alone (no noise term)
    def wrong(tt, xx):
        return path.mean_path.target(x0, x1, tt)

    if not isinstance(noise, ConstantNoise):
        r_bad = fs.continuity_residual(lp, wrong, t, x)
        assert np.any(np.abs(r_bad) > _continuity_bound(path, x, x0, x1, t))


@pytest.mark.parametrize("noise", POSITIVE, ids=repr)
def test_log_prob_score_divergence_closed_forms(xp, noise):
    rng = np.random.default_rng(3)
    x, x0, x1 = _batch(rng, (4, 3))
    t = np.array([0.1, 0.4, 0.6, 0.9])
    path = CoupledPath(fs.Cosine(), noise)
    mu = fs.GaussianPath(fs.Cosine()).sample(x0, x1, t)
    n = noise(t)
    g = np.asarray(n.gamma)
    r2 = np.sum((x - mu) ** 2, axis=1)
    want_lp = -0.5 * r2 / g**2 - 3 * np.log(g) - 1.5 * np.log(2 * np.pi)
    want_score = -(x - mu) / g[:, None] ** 2
    want_div = 3 * np.asarray(n.ratio)
    args = [xp.asarray(a) for a in (x, x0, x1, t)]
    # each is a handful of operations on O(|x|^2 / g^2) values: 64 ulps of the terms
    lp = to_numpy(path.log_prob(*args))
    assert np.all(np.abs(lp - want_lp) <= 64 * EPS64 * (np.abs(want_lp) + r2 / g**2))
    sc = to_numpy(path.score(*args))
    size = (np.abs(x) + np.abs(mu)) / g[:, None] ** 2
    assert np.all(np.abs(sc - want_score) <= 64 * EPS64 * size)
    dv = to_numpy(path.divergence(*args))
    np.testing.assert_allclose(dv, want_div, rtol=8 * EPS64)


def test_noisy_schedule_derivative():
    # d sqrt(sigma^2 + gamma^2)/dt by central differences, as for the schedules
    s = NoisySchedule(fs.CondOT(), BrownianBridgeNoise(0.8))
    t = np.linspace(0.05, 0.95, 19)
    h = EPS64 ** (1 / 3)
    fd = (s(t + h).sigma - s(t - h).sigma) / ((t + h) - (t - h))
    np.testing.assert_allclose(s(t).d_sigma, fd, rtol=0, atol=100 * EPS64 ** (2 / 3))
    assert s.divergent_at == (0.0, 1.0)


@pytest.mark.parametrize(
    "schedule,noise",
    [
        (fs.CondOT(), ConstantNoise(0.5)),
        (fs.CondOT(), BrownianBridgeNoise(1.0)),
        (fs.Cosine(), Parabola(1.5)),
    ],
    ids=repr,
)
def test_independent_coupling_marginal_is_a_gaussian_path(schedule, noise):
    # Independent coupling, x0 ~ N(0, I): the marginal of the coupled path is
    # p_t(x) = (1/N) sum_i int N(x | alpha x1_i + sigma x0, gamma^2) N(x0) dx0 and its
    # field the p_t(x | z)-weighted mean of u_t(x | z). Both integrals over x0 by
    # Gauss-Hermite quadrature (D = 1, 120 nodes: the integrand is a Gaussian of width
    # gamma / sigma >= 0.4 in x0, resolved to ~1e-12), against the closed form of
    # EmpiricalMarginal on GaussianPath(NoisySchedule(schedule, noise)).
    data = np.array([[-1.5], [0.25], [2.0]])
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / weights.sum()  # probabilists' Hermite: E over N(0, 1)
    path = CoupledPath(schedule, noise)
    marg = fs.EmpiricalMarginal(fs.GaussianPath(NoisySchedule(schedule, noise)), data)
    for t in (0.3, 0.5, 0.7):
        x = np.linspace(-3.0, 3.0, 7)[:, None]
        num = np.zeros_like(x)
        den = np.zeros(x.shape[0])
        for x1 in data:
            for node, w in zip(nodes, weights, strict=True):
                z0 = np.full_like(x, node)
                z1 = np.broadcast_to(x1, x.shape)
                p = np.exp(path.log_prob(x, z0, z1, t)) * w / len(data)
                num += p[:, None] * path.velocity(x, z0, z1, t)
                den += p
        want_v = marg.velocity(x, t)
        want_lp = marg.log_prob(x, t)
        np.testing.assert_allclose(np.log(den), want_lp, rtol=0, atol=1e-9)
        np.testing.assert_allclose(num / den[:, None], want_v, rtol=0, atol=1e-9)


def test_validation_names_the_argument():
    path = CoupledPath(fs.CondOT(), ConstantNoise(0.1))
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`x0` and `eps`"):
        path.sample(x, x, np.zeros((2, 2)), 0.5)
    with pytest.raises(TypeError, match="`eps`"):
        path.sample(x, x, np.zeros((2, 3), dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="`x0` and `x`"):
        path.velocity(np.zeros((3, 3)), x, x, 0.5)
    with pytest.raises(ValueError, match="`t`"):
        path.target(x, x, x, 1.5)
    with pytest.raises(TypeError, match="`noise`"):
        CoupledPath(fs.CondOT(), 0.1)
    with pytest.raises(TypeError, match="`schedule`"):
        CoupledPath("CondOT", NoNoise())
    with pytest.raises(ValueError, match="`sigma`"):
        BrownianBridgeNoise(0.0)
    with pytest.raises(ValueError, match="`sigma`"):
        ConstantNoise(-1.0)


def test_no_output_aliases_an_input():
    path = CoupledPath(fs.CondOT(), NoNoise())
    x0, x1, eps = np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2))
    x_t, u = path.sample_and_target(x0, x1, eps, 0.0)
    for out in (x_t, u):
        for inp in (x0, x1, eps):
            assert not np.shares_memory(out, inp)
