"""flowspec.discrete: schedules, mixture path, rates, losses and exact marginal.

Oracles: the independent float64 reference of `discrete_reference` (every probability
of every sequence enumerated), closed forms, and identities (rows of rates sum to 0,
probabilities sum to 1, the rate <-> denoiser maps are inverse).
"""

from __future__ import annotations

import math
import warnings

import discrete_reference as ref
import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowspec import discrete as fd
from flowspec.conformance.properties import _times, _values
from flowspec.discrete.schedules import CATALOGUE

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def as_xp(xp, a):
    return xp.asarray(np.asarray(a))


def tokens(shape, vocab):
    """Token arrays drawn by Hypothesis (values in 0..vocab-1; shrinks towards 0)."""
    return arrays(np.int64, shape, elements=st.integers(0, vocab - 1))


# -- schedules -----------------------------------------------------------------------


def test_schedule_values_and_derivative(xp, discrete_schedule):
    sched = discrete_schedule
    t = np.linspace(0.0, 1.0, 41)
    c = sched(as_xp(xp, t))
    for j, tj in enumerate(t):
        k, dk = ref.kappa(discrete_schedule, float(tj))
        # a few ulps: each coefficient is one or two elementary functions
        assert abs(float(to_numpy(c.kappa)[j]) - k) <= 4 * EPS64
        assert abs(float(to_numpy(c.d_kappa)[j]) - dk) <= 4 * EPS64 * max(1.0, abs(dk))
        assert abs(float(to_numpy(c.complement)[j]) - (1.0 - k)) <= 4 * EPS64
    assert float(to_numpy(c.kappa)[0]) == 0.0 and float(to_numpy(c.kappa)[-1]) == 1.0
    assert float(to_numpy(c.complement)[-1]) == 0.0


def test_schedule_derivative_by_finite_differences(discrete_schedule):
    sched = discrete_schedule
    t = np.linspace(0.05, 0.95, 19)
    h = EPS64 ** (1 / 3)
    fd_dk = (sched(t + h).kappa - sched(t - h).kappa) / ((t + h) - (t - h))
    # central difference: O(h^2 |kappa'''|) + O(eps / h), |kappa'''| <= (pi/2)^3 here
    np.testing.assert_allclose(sched(t).d_kappa, fd_dk, atol=20 * EPS64 ** (2 / 3))


def test_complement_is_accurate_near_one(discrete_schedule):
    sched = discrete_schedule
    for gap in (1e-3, 1e-8, 1e-12):
        t = 1.0 - gap
        true = ref.complement(sched, t)
        # relative accuracy of a few ulps where 1 - kappa would lose all digits
        got = float(sched(t).complement)
        assert abs(got - true) <= 4 * EPS64 * true


def test_jump_is_infinite_at_one_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sched in CATALOGUE:
            j = sched.jump(np.array([0.5, 1.0]))
            assert np.isfinite(j[0]) and j[1] == math.inf
    assert fd.Polynomial(2.0).jump(np.array([0.0]))[0] == 0.0


@pytest.mark.parametrize(
    ("n", "exc"), [(0.0, ValueError), (-1.0, ValueError), (True, TypeError), (math.nan, ValueError)]
)
def test_polynomial_validates_n(n, exc):
    with pytest.raises(exc, match="`n`"):
        fd.Polynomial(n)


def test_schedules_are_frozen_and_hashable():
    with pytest.raises(AttributeError):
        fd.Polynomial(2.0).n = 3.0  # type: ignore[misc]
    assert {fd.Polynomial(2), fd.Polynomial(2.0)} == {fd.Polynomial(2.0)}


def test_schedule_rejects_times_outside_unit_interval():
    with pytest.raises(ValueError, match="`t`"):
        fd.Linear()(1.5)
    with pytest.raises(TypeError, match="`t`"):
        fd.Linear()(np.array([1]))


# -- the path ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [None, 4])
def test_sample_takes_data_where_u_below_kappa(xp, mask):
    rng = np.random.default_rng(0)
    vocab = 5
    path = fd.MixturePath(fd.Polynomial(2.0), vocab, mask_token=mask)
    x1 = rng.integers(0, vocab, (6, 3))
    u0 = rng.random((6, 3))
    x0 = to_numpy(path.source_sample(as_xp(xp, u0)))
    if mask is None:
        np.testing.assert_array_equal(x0, np.floor(u0 * vocab).astype(np.int64))
    else:
        assert np.all(x0 == mask)
    t = rng.random(6)
    u = rng.random((6, 3))
    xt = to_numpy(path.sample(as_xp(xp, x0), as_xp(xp, x1), as_xp(xp, t), as_xp(xp, u)))
    expected = np.where(u < (t**2)[:, None], x1, x0)
    np.testing.assert_array_equal(xt, expected)
    # endpoints: the source at t = 0, the data at t = 1, whatever u in [0, 1)
    for tt, want in ((0.0, x0), (1.0, x1)):
        got = path.sample(as_xp(xp, x0), as_xp(xp, x1), tt, as_xp(xp, u))
        np.testing.assert_array_equal(to_numpy(got), want)


@pytest.mark.parametrize("mask", [None, 2])
def test_conditional_log_prob_against_enumeration(xp, discrete_schedule, mask):
    vocab, length = 3, 2
    path = fd.MixturePath(discrete_schedule, vocab, mask_token=mask)
    p0 = ref.source_probs(vocab, mask)
    x1 = (0, 1)
    for t in (0.0, 0.3, 0.8, 1.0):
        k, _ = ref.kappa(discrete_schedule, t)
        xs = np.array(ref.states(vocab, length))
        want = np.array([ref.conditional_prob(tuple(s), x1, k, p0) for s in xs])
        tt = as_xp(
            xp, np.full(9, t)
        )  # a float64 array: a Python float follows torch's default dtype
        got = np.exp(to_numpy(path.log_prob(as_xp(xp, xs), as_xp(xp, np.tile(x1, (9, 1))), tt)))
        # one log and one exp per token of probabilities O(1): a few ulps
        np.testing.assert_allclose(got, want, rtol=16 * EPS64, atol=16 * EPS64)
        assert abs(want.sum() - 1.0) < 1e-12


def test_path_validates_its_arguments():
    with pytest.raises(TypeError, match="`schedule`"):
        fd.MixturePath("linear", 3)
    with pytest.raises(ValueError, match="`vocab_size`"):
        fd.MixturePath(fd.Linear(), 0)
    with pytest.raises(ValueError, match="`mask_token`"):
        fd.MixturePath(fd.Linear(), 3, mask_token=3)
    path = fd.MixturePath(fd.Linear(), 3)
    x = np.zeros((2, 2), dtype=np.int64)
    u = np.zeros((2, 2))
    with pytest.raises(TypeError, match="`x1`"):
        path.sample(x, u, 0.5, u)
    with pytest.raises(ValueError, match="`x1`"):
        path.sample(x, x + 3, 0.5, u)
    with pytest.raises(ValueError, match="`x0` and `x1`"):
        path.sample(x[:1], x, 0.5, u)
    with pytest.raises(ValueError, match="`t`"):
        path.sample(x, x, np.zeros(3), u)
    with pytest.raises(ValueError, match="`x1`"):
        path.sample(x[:, 0], x[:, 0], 0.5, u[:, 0])
    with pytest.raises(ValueError, match="`u`"):
        path.sample(x, x, 0.5, u + 1.0)
    with pytest.raises(ValueError, match="`u`"):
        path.source_sample(u - 0.5)
    with pytest.raises(AttributeError):
        path.vocab_size = 4


# -- rates ---------------------------------------------------------------------------


def test_conditional_rate_against_reference(xp, discrete_schedule):
    vocab = 4
    rng = np.random.default_rng(1)
    x = rng.integers(0, vocab, (5, 3))
    x1 = rng.integers(0, vocab, (5, 3))
    t = rng.uniform(0.05, 0.95, 5)
    got = to_numpy(
        fd.conditional_rate(discrete_schedule, as_xp(xp, x), as_xp(xp, x1), as_xp(xp, t), vocab)
    )
    for b in range(5):
        k, dk = ref.kappa(discrete_schedule, t[b])
        post = np.eye(vocab)[x1[b]]
        want = ref.rate_from_denoiser(x[b], post, k, dk)
        # dk / (1 - k): two roundings on coefficients of size <= 1 / (1 - 0.95)
        np.testing.assert_allclose(got[b], want, rtol=8 * EPS64, atol=8 * EPS64)


@given(
    z=_values((4, 3, 6), -4.0, 4.0),
    scale=st.sampled_from([1.0, 30.0, 500.0]),
    x=tokens((4, 3), 6),
    t=_times(4, 0.0, 0.99),
)
def test_posterior_to_rate_from_logits_and_probs(xp, z, scale, x, t):
    # logits of size up to 2000 (scale times entries in [-4, 4], the range of normals)
    vocab = 6
    logits = scale * z
    sched = fd.Cosine()
    from_logits = to_numpy(
        fd.posterior_to_rate(sched, as_xp(xp, x), as_xp(xp, t), logits=as_xp(xp, logits))
    )
    assert np.all(np.isfinite(from_logits))  # no overflow for logits of size 500 * N(0, 1)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    from_probs = to_numpy(
        fd.posterior_to_rate(sched, as_xp(xp, x), as_xp(xp, t), probs=as_xp(xp, probs))
    )
    jump = (math.pi / 2) * np.tan(math.pi * t / 2)
    for b in range(4):
        k, dk = ref.kappa(sched, t[b])
        want = ref.rate_from_denoiser(x[b], probs[b], k, dk)
        # softmax to ~V ulps, times a jump coefficient <= pi/2 tan(0.99 pi/2) ~ 100
        tol = 32 * vocab * EPS64 * max(1.0, jump[b])
        np.testing.assert_allclose(from_logits[b], want, atol=tol)
        np.testing.assert_allclose(from_probs[b], want, atol=tol)
    # rows sum to zero: the diagonal is minus the sum of the off-diagonal entries
    np.testing.assert_allclose(from_logits.sum(axis=-1), 0.0, atol=4 * vocab * EPS64 * jump.max())
    off = from_logits * (1 - np.eye(vocab)[x])
    assert np.all(off >= 0)


@given(z=_values((3, 2, 5), -30.0, 30.0), x=tokens((3, 2), 5), t=_times(3, 0.01, 0.99))
def test_rate_to_posterior_inverts_posterior_to_rate(xp, z, x, t):
    vocab = 5
    # probabilities on the simplex: the softmax of drawn logits (entries down to e^-60)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    sched = fd.Polynomial(1.5)
    rate = fd.posterior_to_rate(sched, as_xp(xp, x), as_xp(xp, t), probs=as_xp(xp, probs))
    back = to_numpy(fd.rate_to_posterior(sched, rate, as_xp(xp, x), as_xp(xp, t)))
    # multiply then divide by the jump coefficient, and one sum of V terms
    np.testing.assert_allclose(back, probs, atol=8 * vocab * EPS64)


def test_rate_at_t_one_is_zero_only_for_the_exact_posterior():
    sched = fd.Linear()
    x = np.array([[1, 1]])
    probs = np.array([[[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rate = fd.posterior_to_rate(sched, x, 1.0, probs=probs)
    np.testing.assert_array_equal(rate[0, 0], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(rate[0, 1], [math.inf, -math.inf, 0.0])


def test_rates_validate_their_arguments():
    x = np.zeros((2, 3), dtype=np.int64)
    p = np.full((2, 3, 4), 0.25)
    with pytest.raises(TypeError, match="exactly one of `probs` and `logits`"):
        fd.posterior_to_rate(fd.Linear(), x, 0.5)
    with pytest.raises(TypeError, match="exactly one of `probs` and `logits`"):
        fd.posterior_to_rate(fd.Linear(), x, 0.5, probs=p, logits=p)
    with pytest.raises(ValueError, match="`probs`"):
        fd.posterior_to_rate(fd.Linear(), x, 0.5, probs=p[:, :2])
    with pytest.raises(ValueError, match="`x`"):
        fd.posterior_to_rate(fd.Linear(), x + 4, 0.5, probs=p)
    with pytest.raises(TypeError, match="`schedule`"):
        fd.conditional_rate(None, x, x, 0.5, 4)
    with pytest.raises(ValueError, match="`vocab_size`"):
        fd.conditional_rate(fd.Linear(), x, x, 0.5, 0)


# -- losses --------------------------------------------------------------------------


@given(logits=_values((4, 3, 7), -20.0, 20.0), x1=tokens((4, 3), 7))
def test_cross_entropy_against_reference(xp, logits, x1):
    vocab = 7
    want = np.array(
        [
            -sum(
                logits[b, i, x1[b, i]] - math.log(sum(math.exp(v) for v in logits[b, i]))
                for i in range(3)
            )
            for b in range(4)
        ]
    )
    got = to_numpy(fd.cross_entropy(as_xp(xp, x1), logits=as_xp(xp, logits), reduction="none"))
    # log-sum-exp of V terms of size <= 25: a few ulps of the largest logit per token
    tol = 16 * vocab * EPS64 * 25 * 3
    np.testing.assert_allclose(got, want, atol=tol)
    assert (
        abs(
            float(to_numpy(fd.cross_entropy(as_xp(xp, x1), logits=as_xp(xp, logits)))) - want.mean()
        )
        < tol
    )
    assert (
        abs(
            float(
                to_numpy(fd.cross_entropy(as_xp(xp, x1), logits=as_xp(xp, logits), reduction="sum"))
            )
            - want.sum()
        )
        < 4 * tol
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    got_p = to_numpy(fd.cross_entropy(as_xp(xp, x1), probs=as_xp(xp, probs), reduction="none"))
    np.testing.assert_allclose(got_p, want, atol=tol)


def test_cross_entropy_is_finite_at_t_one_and_infinite_for_a_zero_probability():
    x1 = np.array([[0, 1]])
    probs = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    assert float(fd.cross_entropy(x1, probs=probs)) == pytest.approx(math.log(2.0), abs=4 * EPS64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(fd.cross_entropy(np.array([[1, 1]]), probs=probs)) == math.inf


@given(
    logits=_values((4, 3, 5), -12.0, 12.0),
    x1=tokens((4, 3), 5),
    other=tokens((4, 3), 5),
    keep=arrays(np.bool_, (4, 3)),
    t=_times(4, 0.0, 0.95),
)
def test_generalized_kl_against_bregman_reference(
    xp, discrete_schedule, logits, x1, other, keep, t
):
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    # x_t equal to x1 where `keep` (and wherever `other` happens to equal x1)
    x = np.where(keep, x1, other)
    got = to_numpy(
        fd.generalized_kl(
            discrete_schedule,
            as_xp(xp, x1),
            as_xp(xp, x),
            as_xp(xp, t),
            logits=as_xp(xp, logits),
            reduction="none",
        )
    )
    want = np.zeros(4)
    for b in range(4):
        k, dk = ref.kappa(discrete_schedule, t[b])
        c = dk / (1 - k)
        want[b] = sum(ref.generalized_kl_token(probs[b, i], x[b, i], x1[b, i], c) for i in range(3))
    # terms of size c |log p| (|log p| <= ~20 here), c <= 1/(1 - 0.95) * pi/2: ulps of each
    tol = 64 * EPS64 * (1.0 + np.abs(want))
    np.testing.assert_allclose(got, want, atol=tol.max())
    assert np.all(got >= -tol)


def test_generalized_kl_matches_flow_matchings_formula_and_is_infinite_at_one_on_purpose():
    rng = np.random.default_rng(3)
    vocab = 4
    logits = rng.standard_normal((3, 2, vocab))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    x1 = np.array([[0, 1], [2, 3], [1, 1]])
    x = np.array([[0, 2], [2, 3], [3, 1]])
    t = np.array([0.2, 0.5, 0.7])
    c = 1 / (1 - t)  # linear schedule
    p_x = np.take_along_axis(probs, x[..., None], -1)[..., 0]
    p_x1 = np.take_along_axis(probs, x1[..., None], -1)[..., 0]
    delta = (x == x1).astype(float)
    # the loss as written in flow_matching's docstring (per token), summed over tokens
    formula = (-c[:, None] * (p_x - delta + (1 - delta) * np.log(p_x1))).sum(1)
    got = fd.generalized_kl(fd.Linear(), x1, x, t, probs=probs, reduction="none")
    np.testing.assert_allclose(got, formula, rtol=64 * EPS64)
    # t = 1: x_t = x1 on the path; an inexact model costs inf, an exact one 0, no nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_one = fd.generalized_kl(fd.Linear(), x1, x1, 1.0, probs=probs, reduction="none")
        exact = fd.generalized_kl(
            fd.Linear(), x1, x1, 1.0, probs=np.eye(vocab)[x1], reduction="none"
        )
    assert np.all(at_one == math.inf)
    np.testing.assert_array_equal(exact, 0.0)


def test_losses_validate_their_arguments():
    x1 = np.zeros((2, 3), dtype=np.int64)
    logits = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="`reduction`"):
        fd.cross_entropy(x1, logits=logits, reduction="max")
    with pytest.raises(TypeError, match="`x1`"):
        fd.cross_entropy(logits[..., 0], logits=logits)
    with pytest.raises(ValueError, match="`logits`"):
        fd.cross_entropy(x1, logits=logits[0])
    with pytest.raises(ValueError, match="`x` and `x1`"):
        fd.generalized_kl(fd.Linear(), x1, x1[:1], 0.5, logits=logits)
    with pytest.raises(TypeError, match="`logits`"):
        fd.cross_entropy(x1, logits=logits.astype(np.int64))


def test_losses_keep_dtype(xp):
    x1 = xp.zeros((2, 3), dtype=xp.int64)
    for dtype in (xp.float32, xp.float64):
        logits = xp.zeros((2, 3, 4), dtype=dtype)
        assert fd.cross_entropy(x1, logits=logits).dtype == dtype
        out = fd.generalized_kl(
            fd.Linear(), x1, x1, xp.asarray([0.5, 0.25], dtype=dtype), logits=logits
        )
        assert out.dtype == dtype and tuple(out.shape) == ()


# -- the exact marginal --------------------------------------------------------------


@pytest.mark.parametrize("mask", [None, 3])
def test_marginal_against_enumeration(xp, discrete_schedule, mask):
    vocab, length = 4, 2
    data = np.array([[0, 1], [2, 2], [0, 1], [1, 0], [2, 1]])
    path = fd.MixturePath(discrete_schedule, vocab, mask_token=mask)
    p0 = ref.source_probs(vocab, mask)
    xs = np.array(ref.states(vocab, length))
    for chunk in (None, 2):
        m = fd.EmpiricalMarginal(path, as_xp(xp, data), chunk_size=chunk)
        for t in (0.0, 0.35, 0.9, 1.0):
            k, dk = ref.kappa(discrete_schedule, t)
            want = np.array([ref.marginal_prob(tuple(s), data, k, p0) for s in xs])
            tt = as_xp(xp, np.full(len(xs), t))
            got = np.exp(to_numpy(m.log_prob(as_xp(xp, xs), tt)))
            np.testing.assert_allclose(got, want, atol=32 * EPS64)
            assert abs(got.sum() - 1.0) < 64 * EPS64
            support = want > 0
            if t < 1.0:
                # every state at once (one shape per library); off the support the
                # posterior is 0 / 0 and only the support is compared
                with np.errstate(invalid="ignore"):
                    den = to_numpy(m.denoise(as_xp(xp, xs), tt))
                    rate = to_numpy(m.rate(as_xp(xp, xs), tt))
                for j in np.flatnonzero(support):
                    post = ref.denoiser(tuple(xs[j]), data, k, p0, vocab)
                    np.testing.assert_allclose(den[j], post, atol=32 * EPS64)
                    want_rate = ref.rate_from_denoiser(tuple(xs[j]), post, k, dk)
                    np.testing.assert_allclose(rate[j], want_rate, atol=32 * EPS64 / (1 - k))
    # at t = 1 the marginal is the data distribution (duplicates counted)
    got1 = np.exp(
        to_numpy(m.log_prob(as_xp(xp, np.array([[0, 1], [2, 2], [3, 3]])), as_xp(xp, np.ones(3))))
    )
    np.testing.assert_allclose(got1, [0.4, 0.2, 0.0], atol=8 * EPS64)


def test_marginal_posterior_weights():
    data = np.array([[0, 1], [0, 2], [1, 1]])
    path = fd.MixturePath(fd.Linear(), 3)
    m = fd.EmpiricalMarginal(path, data, chunk_size=1)
    x = np.array([[0, 1], [2, 2]])
    w = m.posterior(x, 0.5)
    for b in range(2):
        cond = np.array(
            [ref.conditional_prob(tuple(x[b]), tuple(d), 0.5, [1 / 3] * 3) for d in data]
        )
        np.testing.assert_allclose(w[b], cond / cond.sum(), atol=8 * EPS64)


def test_marginal_validates():
    path = fd.MixturePath(fd.Linear(), 3)
    with pytest.raises(TypeError, match="`path`"):
        fd.EmpiricalMarginal(fd.Linear(), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="`data`"):
        fd.EmpiricalMarginal(path, np.full((2, 2), 3))
    with pytest.raises(ValueError, match="`chunk_size`"):
        fd.EmpiricalMarginal(path, np.zeros((2, 2), dtype=np.int64), chunk_size=0)
    m = fd.EmpiricalMarginal(path, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="`x`"):
        m.log_prob(np.zeros((2, 3), dtype=np.int64), 0.5)
