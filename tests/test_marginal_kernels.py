"""The torch and JAX marginal kernels keep the exact band of the NumPy reference.

Duplicated float32 data near t = 1 (every point given twice: the same numbers as the
data given once) and far queries (|x| = 1e8), each kernel against the NumPy
``EmpiricalMarginal``; for JAX also with a band capacity of 1, so that every block
overflows its fixed-capacity band (duplicates: at least 2 points) and takes the next
tier (capacity 16 where the block holds more than 16 points) or the exact fallback.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_marginal import float32_logweight_bound

import flowspec as fs

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
TIMES = (1.0, 0.999, 0.99)


def _torch_kernel(**options):
    torch = pytest.importorskip("torch", reason="the torch kernel needs torch")
    ft = fs.backends.get("torch")

    def run(path, data, x, t, names, block_size=None):
        # the compiled kernel takes whole groups of 16 columns: blocks of 32 for it
        block_size = 32 if options else block_size
        out = ft.marginal(
            path,
            torch.from_numpy(data),
            torch.from_numpy(x),
            t,
            names,
            block_size=block_size,
            **options,
        )
        return tuple(o.numpy() for o in out)

    return run


def _jax_kernel(capacity, block=None):
    jax = pytest.importorskip("jax", reason="the JAX kernel needs jax")
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)  # float64 for the far queries
    fj = fs.backends.get("jax")
    cache = {}

    def run(path, data, x, t, names, block_size=None):
        block_size = block or block_size
        key = (id(path), data.shape, data.dtype.str, x.shape, names, block_size)
        if key not in cache:  # one compilation per shape; t is traced
            cache[key] = jax.jit(
                lambda d, q, s: fj.marginal(
                    path, d, q, s, names, block_size=block_size, band_capacity=capacity
                )
            )
        out = cache[key](jnp.asarray(data), jnp.asarray(x), jnp.asarray(t, dtype=x.dtype))
        return tuple(np.asarray(o) for o in out)

    return run


KERNELS = {
    "torch": _torch_kernel,
    "torch-compiled": lambda: _torch_kernel(compiled=True),
    # most rows overflow: recomputed row by row by the eager path
    "torch-compiled-capacity-1": lambda: _torch_kernel(compiled=True, band_capacity=1),
    "jax-capacity-16": lambda: _jax_kernel(16),
    "jax-capacity-1": lambda: _jax_kernel(1),  # blocks of 7: the exact fallback
    "jax-capacity-1-blocks-of-20": lambda: _jax_kernel(1, 20),  # then capacities 4 and 16
}


@pytest.fixture(params=list(KERNELS), scope="module")
def kernel(request):
    return KERNELS[request.param]()


def test_float32_duplicated_data_gives_the_numbers_of_the_data_given_once(kernel):
    d = 16
    rng = np.random.default_rng(21)
    data = (1.0 + rng.normal(size=(100, d))).astype(np.float32)
    twice = np.concatenate([data, data])
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-4))
    once = fs.EmpiricalMarginal(path, data, chunk_size=7)
    names = ("log_prob", "denoise")
    for t in TIMES:
        t32 = np.float32(t)
        c = path.schedule(np.float64(t32))
        # queries within ~1e-4 of a data point: the streamed (matrix-product) form errs
        # by eps32 |x|^2 / sigma^2, tens of nats here, so a second copy of the dominant
        # point outside the exact band would get a weight off by e^tens; the exact
        # form errs by the inputs' own rounding, the bound of tests/test_marginal.py
        x = (c.alpha * data[:10] + 1e-4 * rng.normal(size=(10, d))).astype(np.float32)
        bound = float32_logweight_bound(x.astype(np.float64), data[:10].astype(np.float64), c, d)
        lp2, den2 = kernel(path, twice, x, t32, names, block_size=7)
        lp1, den1 = kernel(path, data, x, t32, names, block_size=7)
        # the posterior mean moves by at most (weight errors, each <= 2 bound relative)
        # times the data's diameter, plus its own float32 rounding
        diameter = 2 * np.abs(data - data.mean(axis=0)).sum(axis=1).max()
        tol = (2 * bound * diameter)[:, None] + 16 * EPS32 * np.abs(den1).max()
        for lp, den in ((lp2, den2), (lp1, den1)):
            assert np.all(np.abs(lp - once.log_prob(x, t32)) <= bound)
            assert np.all(np.abs(den - once.denoise(x, t32)) <= tol)
        assert np.all(np.abs(lp2 - lp1) <= bound)
        assert np.all(np.abs(den2 - den1) <= tol)


def test_far_queries_work_relative_to_the_row_maximum(kernel):
    """|x| = 1e8: absolute log-weights ~ 1e16 nats; only their differences matter."""
    rng = np.random.default_rng(23)
    data = rng.normal(size=(9, 2))
    schedule = fs.Cosine()
    path = fs.GaussianPath(schedule)
    m = fs.EmpiricalMarginal(path, data, chunk_size=2)
    x = np.array([[1e8, -3e7], [-2e8, 5e7]])
    for t in (0.0, 1e-9, 1e-7):
        c = schedule(t)
        # the reference of tests/test_marginal.py: the log-weight differences, error
        # eps * alpha |x| |y| / sigma^2 <= 1e-7 here; the mean inherits it times max|x1|
        lw = c.alpha * x @ data.T / c.sigma**2 - c.alpha**2 * np.sum(data**2, 1) / (2 * c.sigma**2)
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        mean = (w / w.sum(axis=1, keepdims=True)) @ data
        tol_w = 64 * EPS64 * (1 + np.abs(lw).max())
        den, vel = kernel(path, data, x, np.float64(t), ("denoise", "velocity"), block_size=2)
        np.testing.assert_allclose(den, mean, rtol=0, atol=tol_w * 4)
        np.testing.assert_allclose(den, m.denoise(x, t), rtol=0, atol=tol_w * 8)
        v = (c.d_sigma / c.sigma) * (x - c.alpha * mean) + c.d_alpha * mean
        # velocity ~ (d_sigma / sigma) x: relative error a few ulp of that term
        np.testing.assert_allclose(vel, v, rtol=0, atol=16 * EPS64 * np.abs(v).max())
