"""flowspec.discrete: the Kolmogorov forward equation as an oracle, and the jump sampler.

The Kolmogorov residual must vanish (to its finite-difference error) for the
conditional path with its conditional rate and for the exact marginal with its
marginal rate, and be clearly non-zero for a rate whose kappa_dot is 5 % off. The
Euler (jump) sampler's law after the last step, computed exactly by enumerating the
states, must converge to the data distribution as h -> 0, at first order.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import to_numpy

from flowspec import discrete as fd

EPS64 = float(np.finfo(np.float64).eps)
V, L = 3, 2
STATES = np.array(list(itertools.product(range(V), repeat=L)))
DATA = np.array([[0, 1], [2, 2], [1, 0], [0, 0], [0, 1]])


class Scaled(fd.KappaSchedule):
    """A schedule whose kappa_dot is off by a factor (a wrong rate for the same path)."""

    def __init__(self, base, factor):
        self.base, self.factor = base, factor

    def _coefficients(self, xp, t):
        c = self.base._coefficients(xp, t)
        return fd.KappaCoefficients(c.kappa, self.factor * c.d_kappa, c.complement)


def tolerance(sched, t, log_p):
    """Error bound of the residual's central difference (step h = eps^(1/3)).

    Truncation h^2/6 |d^3/dt^3 log p|: each token's log-probability is the log of an
    affine function of kappa (kappa + (1 - kappa) a), whose k-th derivative is bounded
    by ~ (k-1)! c^k with c the largest of the jump coefficient kappa'/(1 - kappa),
    kappa'/kappa (a mask source makes p_t proportional to powers of kappa) and
    |kappa''/kappa'| <= pi/2 (here), so |d^3 log p| <= 2 L c^3; rounding eps |log p| / h.
    Factor 10 for the constants dropped.
    """
    h = EPS64 ** (1 / 3)
    k = sched(t)
    c = max(float(k.d_kappa / k.complement), float(k.d_kappa / k.kappa), math.pi / 2)
    return 10 * (h * h / 6 * 2 * L * c**3 + EPS64 / h * (1 + np.abs(log_p)))


@pytest.mark.parametrize("mask", [None, 2])
def test_residual_vanishes_for_the_conditional_path(xp, discrete_schedule, mask):
    sched = discrete_schedule
    path = fd.MixturePath(sched, V, mask_token=mask)
    x1 = np.array([2, 0])
    x1b = xp.asarray(np.tile(x1, (len(STATES) * L * V, 1)))
    # every state, one shape for all libraries and sources; the log form is compared
    # on the support only (a mask source leaves states of probability 0)
    states = STATES

    def lp(t, x):
        return path.log_prob(x, x1b[: x.shape[0], ...], t)

    def rate(t, x):
        return path.rate(x, x1b[: x.shape[0], ...], t)

    def wrong(t, x):
        return fd.conditional_rate(Scaled(sched, 1.05), x, x1b[: x.shape[0], ...], t, V)

    for t in (0.2, 0.5, 0.85):
        tt = xp.asarray(np.full(len(states), t))
        xs = xp.asarray(states)
        with np.errstate(invalid="ignore"):
            r = to_numpy(fd.kolmogorov_residual(lp, rate, tt, xs, V))
            bad = to_numpy(fd.kolmogorov_residual(lp, wrong, tt, xs, V))
        log_p = to_numpy(lp(tt, xs))
        support = np.isfinite(log_p)
        assert support.sum() == (9 if mask is None else 2)  # x1 = (2, 0), mask 2
        r, bad, log_p = r[support], bad[support], log_p[support]
        assert np.all(np.abs(r) <= tolerance(sched, t, log_p)), (t, r)
        # a 5 % error in kappa_dot leaves 5 % of d/dt log p: far above the bound
        assert np.max(np.abs(bad)) > 1e-3
        assert np.max(np.abs(bad)) > 1e4 * np.max(tolerance(sched, t, log_p))


@pytest.mark.parametrize("mask", [None, 2])
def test_residual_vanishes_for_the_exact_marginal(discrete_schedule, mask):
    sched = discrete_schedule
    m = fd.EmpiricalMarginal(fd.MixturePath(sched, V, mask_token=mask), DATA)

    def lp(t, x):
        return m.log_prob(x, t)

    def rate(t, x):
        return m.rate(x, t)

    def wrong(t, x):
        return fd.posterior_to_rate(Scaled(sched, 1.05), x, t, probs=m.denoise(x, t))

    for t in (0.1, 0.5, 0.9):
        with np.errstate(invalid="ignore"):  # the posterior off the support is 0 / 0
            log_p = lp(np.full(len(STATES), t), STATES)
            xs = STATES[np.isfinite(log_p)]
            tt = np.full(len(xs), t)
            r = fd.kolmogorov_residual(lp, rate, tt, xs, V)
            bad = fd.kolmogorov_residual(lp, wrong, tt, xs, V)
        assert np.all(np.abs(r) <= tolerance(sched, t, log_p[np.isfinite(log_p)])), (t, r)
        assert np.max(np.abs(bad)) > 1e-3


def test_residual_validates():
    x = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(TypeError, match="`rate`"):
        fd.kolmogorov_residual(lambda t, x: t, None, 0.5, x, 3)
    with pytest.raises(TypeError, match=r"`log_prob\(t, x\)`"):
        fd.kolmogorov_residual(lambda t, x: x, lambda t, x: x, 0.5, x, 3)
    with pytest.raises(ValueError, match="`vocab_size`"):
        fd.kolmogorov_residual(lambda t, x: t, lambda t, x: x, 0.5, x, 0)


# -- the sampler ---------------------------------------------------------------------


def test_categorical_is_the_inverse_cdf(xp):
    probs = np.array([0.125, 0.0, 0.5, 0.375])
    n = 64
    u = (np.arange(n) + 0.5) / n  # stratified: each index gets exactly n p_k draws
    got = to_numpy(fd.categorical(xp.asarray(np.tile(probs, (n, 1))), xp.asarray(u)))
    np.testing.assert_array_equal(np.bincount(got, minlength=4), n * probs)
    # unnormalised rows and u -> 1 never overflow the vocabulary
    got = to_numpy(
        fd.categorical(xp.asarray(np.array([[2.0, 0.0]])), xp.asarray(np.array([1 - EPS64 / 2])))
    )
    assert got.tolist() == [0]


def test_jump_probabilities_clamp_the_stay_probability(xp):
    rate = np.array([[[-3.0, 1.0, 2.0], [5.0, -9.0, 4.0]]])
    x = np.array([[0, 1]])
    small = to_numpy(fd.jump_probabilities(xp.asarray(x), xp.asarray(rate), 0.1))
    np.testing.assert_allclose(small, [[[0.7, 0.1, 0.2], [0.5, 0.1, 0.4]]], atol=4 * EPS64)
    big = to_numpy(fd.jump_probabilities(xp.asarray(x), xp.asarray(rate), 0.5))
    # h lambda = 1.5 and 4.5 > 1: stay 0, jumps rescaled to sum to one
    np.testing.assert_allclose(big, [[[0.0, 1 / 3, 2 / 3], [5 / 9, 0.0, 4 / 9]]], atol=4 * EPS64)
    np.testing.assert_allclose(big.sum(-1), 1.0, atol=4 * EPS64)


def exact_law(m, steps):
    """The law of the Euler chain over STATES after `steps` steps, by enumeration."""
    with np.errstate(invalid="ignore"):
        law = np.exp(m.log_prob(STATES, np.zeros(len(STATES))))
    h = 1.0 / steps
    for k in range(steps):
        with np.errstate(invalid="ignore"):
            rate = m.rate(STATES, np.full(len(STATES), k * h))
        # rows off the support (nan posterior) carry no mass; any valid kernel will do
        rate = np.where(np.isfinite(rate), rate, 0.0)
        probs = fd.jump_probabilities(STATES, rate, h)
        kernel = np.ones((len(STATES), len(STATES)))
        for i in range(L):
            kernel *= probs[:, i, :][:, STATES[:, i]]
        law = law @ kernel
    return law


DATA_LAW = np.array([np.mean([tuple(d) == tuple(s) for d in DATA]) for s in STATES])


@pytest.mark.parametrize("mask", [None, 2])
def test_euler_law_converges_to_the_data_at_first_order(discrete_schedule, mask):
    m = fd.EmpiricalMarginal(fd.MixturePath(discrete_schedule, V, mask_token=mask), DATA)
    ladder = [8, 16, 32, 64, 128]
    tv = [0.5 * np.abs(exact_law(m, n) - DATA_LAW).sum() for n in ladder]
    assert all(b < a for a, b in itertools.pairwise(tv))
    slope = np.polyfit(np.log([1.0 / n for n in ladder[-3:]]), np.log(tv[-3:]), 1)[0]
    # the jump sampler is first order (tau-leaping): measured slopes 0.93-1.4 here
    assert slope > 0.85, (tv, slope)
    assert tv[-1] < 0.02


def test_euler_samples_follow_the_enumerated_law():
    m = fd.EmpiricalMarginal(fd.MixturePath(fd.Cosine(), V), DATA)
    steps, batch = 16, 20000
    rng = np.random.default_rng(0)
    x0 = m.path.source_sample(rng.random((batch, L)))
    u = rng.random((steps, batch, L))
    x = fd.euler(lambda t, x: m.rate(x, t), x0, u, steps=steps)
    codes = x[:, 0] * V + x[:, 1]
    freq = np.bincount(codes, minlength=V**L) / batch
    law = exact_law(m, steps)
    # TV of an empirical law of 9 cells from 20000 draws: P(TV > e) <= 2^9 exp(-2 B e^2),
    # e = 0.0224 for a failure probability 1e-6
    assert 0.5 * np.abs(freq - law).sum() < 0.0224


def test_euler_is_the_same_on_every_library(xp):
    m_np = fd.EmpiricalMarginal(fd.MixturePath(fd.Linear(), V, mask_token=2), DATA)
    m = fd.EmpiricalMarginal(fd.MixturePath(fd.Linear(), V, mask_token=2), xp.asarray(DATA))
    rng = np.random.default_rng(1)
    steps, batch = 6, 50
    x0 = np.full((batch, L), 2)
    u = rng.random((steps, batch, L))
    want = fd.euler(lambda t, x: m_np.rate(x, t), x0, u, steps=steps, return_path=True)
    got = fd.euler(
        lambda t, x: m.rate(x, t), xp.asarray(x0), xp.asarray(u), steps=steps, return_path=True
    )
    assert tuple(got.shape) == (steps + 1, batch, L)
    # identical uniforms give identical tokens, up to draws within rounding of a CDF edge
    assert np.mean(to_numpy(got) != want) < 0.01
    # the last step of the linear schedule draws every token from its posterior
    # (h lambda = 1 - p(x)): token i takes only values the data take at position i
    final = to_numpy(got[-1, ...])
    for i in range(L):
        assert set(final[:, i].tolist()) <= set(DATA[:, i].tolist())


def test_euler_validates():
    x0 = np.zeros((2, 2), dtype=np.int64)
    u = np.zeros((3, 2, 2))

    def rate(t, x):
        return np.zeros((*x.shape, 3))

    with pytest.raises(ValueError, match="`u`"):
        fd.euler(rate, x0, u[:2], steps=3)
    with pytest.raises(ValueError, match="`steps`"):
        fd.euler(rate, x0, u, steps=0)
    with pytest.raises(ValueError, match="`t0` and `t1`"):
        fd.euler(rate, x0, u, steps=3, t0=1.0, t1=0.0)
    with pytest.raises(TypeError, match="`x0`"):
        fd.euler(rate, u[0], u, steps=3)
    with pytest.raises(TypeError, match=r"`rate\(t, x\)`"):
        fd.euler(lambda t, x: np.zeros((2, 2, 3), dtype=np.float32), x0, u, steps=3)
    with pytest.raises(ValueError, match="`h`"):
        fd.jump_probabilities(x0, np.zeros((2, 2, 3)), -0.1)
    assert math.isfinite(float(fd.jump_probabilities(x0, np.zeros((2, 2, 3)), 0.1).sum()))


def test_jump_step_draws_from_jump_probabilities(xp):
    rate = np.array([[[-3.0, 1.0, 2.0]]])
    n = 40
    x = np.zeros((n, 1), dtype=np.int64)
    u = ((np.arange(n) + 0.5) / n)[:, None]  # stratified: exact frequencies 0.7, 0.1, 0.2
    got = to_numpy(
        fd.jump_step(xp.asarray(x), xp.asarray(np.repeat(rate, n, 0)), 0.1, xp.asarray(u))
    )
    np.testing.assert_array_equal(np.bincount(got[:, 0], minlength=3), [28, 4, 8])


def test_source_log_prob():
    x = np.array([[0, 3, 2]])
    uniform = fd.MixturePath(fd.Linear(), 4).source_log_prob(x)
    np.testing.assert_allclose(uniform, np.full((1, 3), -math.log(4)), rtol=EPS64)
    mask = fd.MixturePath(fd.Linear(), 4, mask_token=3).source_log_prob(x)
    np.testing.assert_array_equal(mask, [[-math.inf, 0.0, -math.inf]])
