"""EmpiricalMarginal: closed forms against a naive broadcast oracle, identities, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import time_range, to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.conformance.properties import _times, _values

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def naive(schedule, data, x, t, weights=None):
    """The marginal quantities by brute-force broadcasting over (B, N, D), float64 NumPy."""
    n, d = data.shape[0], int(np.prod(data.shape[1:]))
    y = data.reshape(n, d)
    xf = x.reshape(x.shape[0], d)
    c = schedule(np.asarray(t, dtype=np.float64).reshape(-1, 1))
    a, s, da, ds = (np.broadcast_to(v, (x.shape[0], 1)) for v in c)
    q = np.full(n, 1.0 / n) if weights is None else weights / weights.sum()
    with np.errstate(divide="ignore"):
        logq = np.log(q)
    diff = xf[:, None, :] - a[:, :, None] * y[None]
    logits = -np.sum(diff**2, axis=2) / (2 * s**2) + logq
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    w = np.exp(logits - log_z[:, None])
    mean = w @ y
    cov_tr = np.einsum("bn,bnd->b", w, (y[None] - mean[:, None]) ** 2)
    out = {
        "log_prob": log_z - d * np.log(s[:, 0]) - 0.5 * d * np.log(2 * np.pi),
        "posterior": w,
        "denoise": mean.reshape(x.shape),
        "velocity": ((ds / s) * (xf - a * mean) + da * mean).reshape(x.shape),
        "score": (-(xf - a * mean) / s**2).reshape(x.shape),
        "divergence": d * (ds / s)[:, 0] + ((da - a * ds / s) * a / s**2)[:, 0] * cov_tr,
    }
    return out, a[:, 0], s[:, 0], y


def conditioning(x, a, s, y):
    """Size of the log-weights: the absolute error scale of the matrix-product form."""
    xf = x.reshape(x.shape[0], -1)
    big = np.sum(xf**2, axis=1) + a**2 * np.max(np.sum(y**2, axis=1))
    return 1.0 + big / (2 * s**2)


@given(
    n=st.integers(1, 12),
    event=st.sampled_from([(1,), (3,), (2, 2)]),
    batch=st.integers(1, 5),
    chunk=st.sampled_from([None, 1, 4]),
    case=st.data(),
)
def test_against_naive_broadcast(schedule, n, event, batch, chunk, case):
    # arrays through the conformance kit's strategies (entries in [-4, 4], the range of
    # the normals they replace), so shrinking shrinks the arrays
    draw = case.draw
    data = draw(_values((n, *event), -4.0, 4.0)) + draw(_values(event, -4.0, 4.0))
    t = draw(_times(batch, *time_range(schedule)))
    x = draw(_values((batch, *event), -4.0, 4.0)) * 1.5
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data, chunk_size=chunk)
    ref, a, s, y = naive(schedule, data, x, t)
    k = conditioning(x, a, s, y)
    c = schedule(t)
    # the log-weights carry an absolute error of a few eps * k (cancellation of the
    # matrix-product form); log_prob, the softmax and the posterior mean inherit it with
    # Lipschitz constant 1 (times max |x1| for the mean); 64 covers the accumulated
    # rounding of the O(d + N) terms summed.
    err = 64 * EPS64 * k
    span = 1.0 + np.max(np.abs(y))
    assert np.all(np.abs(m.log_prob(x, t) - ref["log_prob"]) <= err)
    assert np.all(np.abs(m.posterior(x, t) - ref["posterior"]) <= err[:, None])
    mean_err = (err * span)[:, None]
    flat = (batch, -1)
    assert np.all(np.abs((m.denoise(x, t) - ref["denoise"]).reshape(flat)) <= mean_err)
    gain_v = (np.abs(c.d_sigma / c.sigma) * a + np.abs(c.d_alpha))[:, None]
    assert np.all(
        np.abs((m.velocity(x, t) - ref["velocity"]).reshape(flat))
        <= gain_v * mean_err + 8 * EPS64 * np.abs(ref["velocity"].reshape(flat))
    )
    gain_s = (a / s**2)[:, None]
    assert np.all(
        np.abs((m.score(x, t) - ref["score"]).reshape(flat))
        <= gain_s * mean_err + 8 * EPS64 * np.abs(ref["score"].reshape(flat))
    )
    # divergence: the covariance trace is a second moment, error ~ err * span^2
    gain_d = np.abs((c.d_alpha - a * c.d_sigma / c.sigma) * a / s**2)
    assert np.all(
        np.abs(m.divergence(x, t) - ref["divergence"])
        <= gain_d * err * span**2 * 4 + 8 * EPS64 * np.abs(ref["divergence"])
    )


def test_every_library_matches_numpy(xp):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(9, 2, 2))
    x = rng.normal(size=(4, 2, 2))
    t = np.array([0.1, 0.4, 0.7, 0.9])
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.05))
    ref = fs.EmpiricalMarginal(path, data, chunk_size=4)
    m = fs.EmpiricalMarginal(path, xp.asarray(data), chunk_size=4)
    xa, ta = xp.asarray(x), xp.asarray(t)
    for name, shape in [
        ("log_prob", (4,)),
        ("velocity", (4, 2, 2)),
        ("score", (4, 2, 2)),
        ("divergence", (4,)),
        ("posterior", (4, 9)),
        ("denoise", (4, 2, 2)),
    ]:
        out = getattr(m, name)(xa, ta)
        assert type(out) is type(xa), name
        assert out.dtype == xa.dtype and tuple(out.shape) == shape, name
        expected = getattr(ref, name)(x, t)
        # same algorithm, different BLAS/reduction order: a few hundred eps of the
        # largest term (the score scales as 1/sigma^2 ~ 50 here)
        scale = 1.0 + np.max(np.abs(expected))
        np.testing.assert_allclose(to_numpy(out), expected, rtol=0, atol=256 * EPS64 * scale)


@given(n=st.integers(1, 20), case=st.data())
def test_posterior_sums_to_one_and_denoise_is_its_mean(n, case):
    # arrays through the conformance kit's strategies (entries in [-12, 12]: three
    # times the range of the normals they replace; the kit's times, endpoints often)
    data = case.draw(_values((n, 3), -12.0, 12.0))
    x = case.draw(_values((6, 3), -12.0, 12.0))
    t = case.draw(_times(6))
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.02)), data, chunk_size=3)
    w = m.posterior(x, t)
    assert np.all(w >= 0)
    # Error model (u = eps / 2). Rows are normalised by their own sum: each w_i =
    # fl(e_i / S) carries a relative error u, their sum a further (n - 1) u: |sum - 1|
    # <= n u (1 + O(u)); bound 2 n u = n eps.
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=n * EPS64)
    # denoise and posterior are computed from the same log-weights (their own errors,
    # of size eps * |x|^2 / sigma^2, are common to both and cancel here), so the
    # difference is rounding only: w @ data errs by <= (n + 1) u sum_i w_i |x1_i| (a
    # dot product of length n, plus w's own relative u); denoise = mean + y_a + first /
    # (1 + mass) errs by <= (n + 3) u (|mean| + max|y|) (the centring, the n-term sums of
    # first, its rebase and the division), with |mean|, max|y| <= 2 max|x1|. Sum:
    # <= (3 n + 7) u max|x1| <= 2 (n + 4) eps max|x1|.
    np.testing.assert_allclose(
        m.denoise(x, t), w @ data, rtol=0, atol=2 * (n + 4) * EPS64 * np.abs(data).max()
    )


def float32_logweight_bound(x, x1, c, d):
    """Error of the exactly recomputed float32 log-weight of point(s) x1 (float64 numbers).

    x, x1 and the centring carry rounding u32 * |x|_max per entry, so the residual
    r = x - alpha x1 has absolute error ~ 2 eps32 |x|_max per entry and |r|^2 / (2
    sigma^2) changes by ~ 2 eps32 |x|_max |r|_1 / sigma^2 (x4 margin); the d log sigma
    and log q terms add ~ eps32 d |log sigma| (x8 margin).
    """
    r = np.abs(x - c.alpha * x1).sum(axis=-1)
    xmax = np.abs(x).max(axis=-1)
    return 8 * EPS32 * xmax * r / c.sigma**2 + 8 * EPS32 * d * (abs(np.log(c.sigma)) + 1)


@pytest.mark.parametrize("d", [2, 16])
def test_float32_duplicated_data_gives_the_same_numbers(d):
    """Same distribution in, same numbers out: every point of the data given twice."""
    rng = np.random.default_rng(21)
    data = (1.0 + rng.normal(size=(100, d))).astype(np.float32)
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-4))
    once = fs.EmpiricalMarginal(path, data, chunk_size=7)
    twice = fs.EmpiricalMarginal(path, np.concatenate([data, data]), chunk_size=7)
    for t in (1.0, 0.999, 0.99):
        t32 = np.float32(t)
        c = path.schedule(np.float64(t32))
        # queries within ~1e-4 of a data point: the streamed form errs by eps32 |x|^2 /
        # sigma^2 (tens of nats here), the exact form by the inputs' own rounding
        x = (c.alpha * data[:10] + 1e-4 * rng.normal(size=(10, d))).astype(np.float32)
        bound = float32_logweight_bound(x.astype(np.float64), data[:10].astype(np.float64), c, d)
        assert np.all(np.abs(once.log_prob(x, t32) - twice.log_prob(x, t32)) <= bound)
        w1, w2 = once.posterior(x, t32), twice.posterior(x, t32)
        # the two copies of a point: the same exact log-weight, or both below the exact
        # band where a weight errs by at most u relative to the row maximum
        np.testing.assert_allclose(w2[:, :100], w2[:, 100:], rtol=0, atol=8 * EPS32)
        # and together the weight of the point given once (posterior error <= 2x the
        # log-weight error: the weight and the normaliser)
        assert np.all(np.abs(w2[:, :100] + w2[:, 100:] - w1) <= 2 * bound[:, None])


@pytest.mark.parametrize("d", [2, 16])
def test_float32_nearly_duplicated_data_against_float64(d):
    """Pairs of points 3e-6 apart, near t = 1: float32 against float64 on the same inputs."""
    rng = np.random.default_rng(22)
    base = (1.0 + rng.normal(size=(60, d))).astype(np.float32)
    near = base + (3e-6 * rng.normal(size=base.shape)).astype(np.float32)
    data = np.concatenate([base, near])
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-4))
    m = fs.EmpiricalMarginal(path, data, chunk_size=16)
    for t in (1.0, 0.999, 0.99):
        t32 = np.float32(t)
        c = path.schedule(np.float64(t32))
        x = (c.alpha * base[:8] + 1e-4 * rng.normal(size=(8, d))).astype(np.float32)
        ref, *_ = naive(path.schedule, data.astype(np.float64), x.astype(np.float64), float(t32))
        x64 = x.astype(np.float64)
        bound = np.maximum(
            float32_logweight_bound(x64, base[:8].astype(np.float64), c, d),
            float32_logweight_bound(x64, near[:8].astype(np.float64), c, d),
        )
        assert np.all(np.abs(m.log_prob(x, t32) - ref["log_prob"]) <= bound)
        assert np.all(np.abs(m.posterior(x, t32) - ref["posterior"]) <= 2 * bound[:, None])


@pytest.mark.parametrize("chunk", [None, 2, 1])
def test_far_queries_work_relative_to_the_row_maximum(chunk):
    """|x| = 1e8: absolute log-weights ~ 1e16 nats; only their differences matter."""
    rng = np.random.default_rng(23)
    data = rng.normal(size=(9, 2))
    schedule = fs.Cosine()
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data, chunk_size=chunk)
    x = np.array([[1e8, -3e7], [-2e8, 5e7]])
    for t in (0.0, 1e-9, 1e-7):
        c = schedule(t)
        # reference: the log-weight differences alpha x . y / sigma^2 - alpha^2 |y|^2 /
        # (2 sigma^2) (the |x|^2 term is common to a row), error eps * alpha |x| |y| /
        # sigma^2 <= 1e-7 here; at t = 0 (alpha = 0) the posterior is exactly uniform
        lw = c.alpha * x @ data.T / c.sigma**2 - c.alpha**2 * np.sum(data**2, 1) / (2 * c.sigma**2)
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        mean = w @ data
        # weights: that reference error plus a few ulp; the mean inherits it times max|x1|
        tol_w = 64 * EPS64 * (1 + np.abs(lw).max())
        np.testing.assert_allclose(m.posterior(x, t), w, rtol=0, atol=tol_w)
        np.testing.assert_allclose(m.denoise(x, t), mean, rtol=0, atol=tol_w * 4)
        v = (c.d_sigma / c.sigma) * (x - c.alpha * mean) + c.d_alpha * mean
        # velocity ~ (d_sigma / sigma) x: relative error a few ulp of that term
        np.testing.assert_allclose(m.velocity(x, t), v, rtol=0, atol=16 * EPS64 * np.abs(v).max())
    u = m.posterior(x, 0.0)
    assert np.all(u == u[:, :1]) and np.all(np.abs(u - 1 / 9) <= EPS64)


def test_weights_whose_sum_overflows():
    rng = np.random.default_rng(24)
    data = rng.normal(size=(5, 2))
    x = rng.normal(size=(3, 2))
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    huge = fs.EmpiricalMarginal(path, data, weights=np.full(5, 1e308))
    uniform = fs.EmpiricalMarginal(path, data)
    for name in ("log_prob", "velocity", "posterior", "denoise", "divergence"):
        a, b = getattr(huge, name)(x, 0.5), getattr(uniform, name)(x, 0.5)
        assert np.all(np.isfinite(a)), name
        # the same distribution: equal up to the rounding of log q (an ulp of log 5)
        np.testing.assert_allclose(a, b, rtol=0, atol=64 * EPS64 * (1 + np.abs(b).max()))
    tiny = fs.EmpiricalMarginal(path, data, weights=np.array([1.0, 2.0, 3.0, 4.0, 5.0]) * 1e-320)
    ref = fs.EmpiricalMarginal(path, data, weights=np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # subnormal weights carry ~ 1e-320 / 5e-324 = 2000 ulp of relative resolution
    np.testing.assert_allclose(tiny.posterior(x, 0.5), ref.posterior(x, 0.5), rtol=0, atol=1e-3)


def test_partials_merge_in_any_order():
    """The per-block partials and their merge: any grouping gives the same statistics."""
    from flowspec import marginal as mg

    rng = np.random.default_rng(25)
    data = rng.normal(size=(11, 3))
    x = rng.normal(size=(4, 3))
    t = np.array([0.2, 0.5, 0.9, 0.99])
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.01)), data, chunk_size=3)
    xp, _, rows, _, _ = m._stats(x, t)
    parts = [mg.block_partial(xp, rows, *b, offset=3 * i) for i, b in enumerate(m._blocks(4))]
    left = parts[0]
    for p in parts[1:]:
        left = mg.merge_partials(xp, rows, left, p)
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = mg.merge_partials(xp, rows, p, right)
    tree = mg.merge_partials(
        xp,
        rows,
        mg.merge_partials(xp, rows, parts[0], parts[1]),
        mg.merge_partials(xp, rows, parts[2], parts[3]),
    )
    for other in (right, tree):
        for name in ("anchor", "mass", "first", "second"):
            a, b = getattr(left, name), getattr(other, name)
            # regrouped sums of <= 11 terms of size <= (1 + |y|^2) each
            np.testing.assert_allclose(a, b, rtol=0, atol=64 * EPS64 * (1 + np.abs(b).max()))
        np.testing.assert_array_equal(left.index, other.index)


def test_score_is_gradient_and_divergence_is_fd_divergence(schedule):
    rng = np.random.default_rng(11)
    data = rng.normal(size=(7, 3))
    lo, hi = time_range(schedule)
    t = np.linspace(max(lo, 0.05), min(hi, 0.9), 5)
    c = schedule(t)
    x = c.alpha[:, None] * data[:5] + c.sigma[:, None] * rng.normal(size=(5, 3))
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    h = EPS64 ** (1 / 3) * np.maximum(1.0, np.abs(x).max())
    grad = np.zeros_like(x)
    div = np.zeros(5)
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        grad[:, i] = (m.log_prob(x + e, t) - m.log_prob(x - e, t)) / (2 * h)
        div += (m.velocity(x + e, t) - m.velocity(x - e, t))[:, i] / (2 * h)
    # central differences: truncation h^2/6 f''' with f''' ~ |f'| / sigma^2 (the mixture
    # varies on the scale sigma), rounding eps |f| / h; x2 margin each
    s2 = (c.sigma**2)[:, None]
    score = m.score(x, t)
    tol_g = (h**2 / s2) * (1 + np.abs(score)) + 4 * EPS64 * (1 + np.abs(m.log_prob(x, t)))[
        :, None
    ] / h
    assert np.all(np.abs(grad - score) <= tol_g)
    v = np.abs(m.velocity(x, t)).max(axis=1)
    tol_d = 3 * (h**2 / s2[:, 0]) * (1 + np.abs(m.divergence(x, t))) + 12 * EPS64 * (1 + v) / h
    assert np.all(np.abs(div - m.divergence(x, t)) <= tol_d)


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(50, 4))
    x = rng.normal(size=(7, 4))
    t = rng.uniform(0, 0.95, size=7)
    path = fs.GaussianPath(fs.Cosine())
    full = fs.EmpiricalMarginal(path, data, chunk_size=50)
    for chunk in (1, 7, 49):
        m = fs.EmpiricalMarginal(path, data, chunk_size=chunk)
        for name in ("log_prob", "velocity", "divergence", "posterior", "denoise", "score"):
            a, b = getattr(m, name)(x, t), getattr(full, name)(x, t)
            # same arithmetic, sums regrouped: O(N) eps of the magnitude
            np.testing.assert_allclose(a, b, rtol=0, atol=64 * EPS64 * (1 + np.abs(b).max()))


def test_integer_weights_equal_repeated_points_and_zero_weight_drops_a_point():
    rng = np.random.default_rng(6)
    data = rng.normal(size=(4, 2))
    counts = np.array([1.0, 3.0, 0.0, 2.0])
    repeated = np.repeat(data, counts.astype(int), axis=0)
    x = rng.normal(size=(5, 2))
    t = np.full(5, 0.6)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    w = fs.EmpiricalMarginal(path, data, weights=counts, chunk_size=2)
    r = fs.EmpiricalMarginal(path, repeated)
    for name in ("log_prob", "velocity", "divergence", "denoise", "score"):
        a, b = getattr(w, name)(x, t), getattr(r, name)(x, t)
        np.testing.assert_allclose(a, b, rtol=0, atol=64 * EPS64 * (1 + np.abs(b).max()))
    post = w.posterior(x, t)
    assert np.all(post[:, 2] == 0.0)
    ref, *_ = naive(path.schedule, data, x, t, weights=counts)
    np.testing.assert_allclose(post, ref["posterior"], rtol=0, atol=64 * EPS64)


def test_stable_when_every_log_weight_is_very_negative():
    # x far from every scaled point and sigma tiny: all log-weights ~ -1e12
    rng = np.random.default_rng(7)
    d = 256
    data = rng.normal(size=(30, d))
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-5))
    m = fs.EmpiricalMarginal(path, data, chunk_size=8)
    x = 50.0 + rng.normal(size=(3, d))
    t = 1.0
    ref, *_ = naive(path.schedule, data, x, t)
    for name in ("log_prob", "velocity", "score", "divergence", "posterior", "denoise"):
        out = getattr(m, name)(x, t)
        assert np.all(np.isfinite(out)), name
    np.testing.assert_allclose(m.log_prob(x, t), ref["log_prob"], rtol=1e-12)
    np.testing.assert_allclose(m.posterior(x, t), ref["posterior"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 64, 512])
def test_float32_near_t1_agrees_with_float64(d):
    """The cancellation guard: x within sigma of alpha x1_k, data far from the origin."""
    rng = np.random.default_rng(8)
    n = 40
    data = 5.0 + 3.0 * rng.normal(size=(n, d))
    schedule = fs.CondOT(sigma_min=1e-3)
    t = np.array([0.999, 0.9999, 1.0, 0.99])
    c = schedule(t)
    x = c.alpha[:, None] * data[:4] + c.sigma[:, None] * rng.normal(size=(4, d))
    path = fs.GaussianPath(schedule)
    m64 = fs.EmpiricalMarginal(path, data)
    m32 = fs.EmpiricalMarginal(path, data.astype(np.float32))
    x32, t32 = x.astype(np.float32), t.astype(np.float32)
    # Bounds, from the float32 rounding of the inputs themselves (x and data rounded
    # at eps32 * |x| ~ 1e-6 * |x|, i.e. far more than sigma ~ 1e-3 would tolerate in
    # relative terms): the exact residual r = x - alpha x1_k of the dominant point has
    # absolute error ~ 2 eps32 |x|_max per entry, so |r|^2 / (2 sigma^2) changes by
    # ~ 2 eps32 |x|_max |r|_1 / sigma^2; that is the log_prob bound (x4 margin).
    # Without the guard the matrix-product form errs by eps32 |x|^2 / sigma^2 (~ 1e3 here).
    s = c.sigma
    # t itself is rounded to float32: sigma_t then carries a relative error
    # eps32 * t |d_sigma| / sigma (kappa), which every 1/sigma factor passes on
    kappa = 1.0 + t * np.abs(c.d_sigma) / s
    r = np.abs(x - c.alpha[:, None] * data[:4])
    xmax = np.abs(x).max(axis=1)
    bound_lp = 8 * EPS32 * xmax * r.sum(axis=1) / s**2 + 8 * EPS32 * d * (np.abs(np.log(s)) + kappa)
    lp32, lp64 = m32.log_prob(x32, t32), m64.log_prob(x, t)
    assert lp32.dtype == np.float32
    assert np.all(np.abs(lp32.astype(np.float64) - lp64) <= bound_lp)
    # score = -r / sigma^2: per-entry error 4 eps32 |x|_max / sigma^2
    sc32, sc64 = m32.score(x32, t32), m64.score(x, t)
    assert np.all(
        np.abs(sc32 - sc64)
        <= (8 * EPS32 * xmax / s**2)[:, None] + 4 * EPS32 * kappa[:, None] * np.abs(sc64)
    )
    # velocity: (d_sigma / sigma) r + x1-hat: same per-entry error times |d_sigma / sigma|
    v32, v64 = m32.velocity(x32, t32), m64.velocity(x, t)
    gain = np.abs(c.d_sigma / c.sigma)
    assert np.all(
        np.abs(v32 - v64)
        <= (8 * EPS32 * xmax * (1 + gain))[:, None] + 4 * EPS32 * kappa[:, None] * np.abs(v64)
    )
    # divergence: the posterior is one-hot (other points are > 1e3 sigma away), the
    # covariance trace is exactly 0 in both precisions: only d * d_sigma / sigma is left
    div32, div64 = m32.divergence(x32, t32), m64.divergence(x, t)
    assert np.all(np.abs(div32 - div64) <= 8 * EPS32 * kappa * np.abs(div64))


def test_unguarded_form_would_fail_the_float32_bound():
    """Proves the test above can fail: the plain matrix-product form misses its bound."""
    rng = np.random.default_rng(8)
    d = 64
    data = (5.0 + 3.0 * rng.normal(size=(40, d))).astype(np.float32)
    t, s = 0.999, 1.0 - (1 - 1e-3) * 0.999
    x = (t * data[:1] + s * rng.normal(size=(1, d))).astype(np.float32)
    sq = np.sum(x * x, 1)[:, None] - 2 * t * x @ data.T + t * t * np.sum(data * data, 1)[None]
    exact = np.sum((x.astype(np.float64) - t * data[:1].astype(np.float64)) ** 2)
    err_logit = abs(float(sq[0, 0]) - exact) / (2 * s * s)
    r_sum = np.abs(x.astype(np.float64) - t * data[:1]).sum()
    assert err_logit > 8 * EPS32 * np.abs(x).max() * r_sum / s**2


def test_endpoint_one_hot_and_single_point():
    data = np.array([[0.0, 1.0]])
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.1)), data)
    x = np.array([[0.3, -0.2]])
    cond = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    x1 = np.broadcast_to(data, x.shape)
    for name in ("log_prob", "velocity", "score", "divergence"):
        np.testing.assert_allclose(
            getattr(m, name)(x, 0.4),
            getattr(cond, name)(x, x1, 0.4),
            rtol=4 * EPS64,
            atol=4 * EPS64,
        )
    assert m.posterior(x, 0.4).tolist() == [[1.0]]


def test_t_reshaped_explicitly_when_batch_equals_event():
    rng = np.random.default_rng(9)
    data = rng.normal(size=(5, 3))
    x = rng.normal(size=(3, 3))
    t = np.array([0.1, 0.5, 0.8])
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.1)), data)
    rows = np.concatenate([m.velocity(x[i : i + 1], float(t[i])) for i in range(3)])
    np.testing.assert_allclose(m.velocity(x, t), rows, rtol=0, atol=32 * EPS64 * 10)


def test_validation():
    path = fs.GaussianPath(fs.CondOT())
    data = np.zeros((4, 2))
    with pytest.raises(TypeError, match="`path`"):
        fs.EmpiricalMarginal(fs.CondOT(), data)
    with pytest.raises(TypeError, match="`data`"):
        fs.EmpiricalMarginal(path, [[0.0, 1.0]])
    with pytest.raises(TypeError, match="`data`"):
        fs.EmpiricalMarginal(path, np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="`data`"):
        fs.EmpiricalMarginal(path, np.zeros(4))
    with pytest.raises(ValueError, match="`weights`"):
        fs.EmpiricalMarginal(path, data, weights=np.array([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="`weights`"):
        fs.EmpiricalMarginal(path, data, weights=np.zeros(4))
    with pytest.raises(ValueError, match="`weights`"):
        fs.EmpiricalMarginal(path, data, weights=np.ones(3))
    with pytest.raises(TypeError, match="`weights`"):
        fs.EmpiricalMarginal(path, data, weights=np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match="`chunk_size`"):
        fs.EmpiricalMarginal(path, data, chunk_size=0)
    m = fs.EmpiricalMarginal(path, data)
    with pytest.raises(TypeError, match=r"`x`.*`data`.*float32.*float64"):
        m.velocity(np.zeros((1, 2), dtype=np.float32), 0.5)
    with pytest.raises(ValueError, match="event"):
        m.velocity(np.zeros((1, 3)), 0.5)
    with pytest.raises(ValueError, match="`t`"):
        m.velocity(np.zeros((2, 2)), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="`t`"):
        m.log_prob(np.zeros((1, 2)), 1.5)
    with pytest.raises(AttributeError):
        m.path = path


def test_mixed_namespaces_are_a_type_error(xp):
    if xp.__name__ == "array_api_compat.numpy":
        pytest.skip("needs a second library")
    path = fs.GaussianPath(fs.CondOT())
    m = fs.EmpiricalMarginal(path, np.zeros((4, 2)))
    with pytest.raises(TypeError, match=r"`x`.*`data`"):
        m.velocity(xp.zeros((1, 2), dtype=xp.float64), 0.5)


def test_log_prob_integrates_to_one_in_1d():
    data = np.array([[-1.0], [0.5], [2.0]])
    m = fs.EmpiricalMarginal(fs.GaussianPath(fs.CondOT(sigma_min=0.2)), data)
    grid = np.linspace(-8, 8, 4001)[:, None]
    p = np.exp(m.log_prob(grid, np.full(grid.shape[0], 0.7)))
    # trapezoid rule of a smooth, rapidly decaying density: error far below 1e-9
    assert math.isclose(np.trapezoid(p, grid[:, 0]), 1.0, abs_tol=1e-9)
