"""The torch exact marginal (hand-fused blocks) against the NumPy reference core."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import time_range
from test_marginal import conditioning, naive

import flowspec as fs

torch = pytest.importorskip("torch", reason="the torch backend needs torch")

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def ft():
    return fs.backends.get("torch")


#: The eager kernel, the compiled one with its capacity tiers, and the compiled one at
#: capacity 1, where most rows overflow and are recomputed by the eager path.
KERNELS = {
    "eager": {},
    "compiled": {"compiled": True},
    "compiled-capacity-1": {"compiled": True, "band_capacity": 1},
}


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "weighted"])
def test_fused_marginal_equals_the_numpy_reference(ft, schedule, weighted, kernel):
    rng = np.random.default_rng(8)
    data = rng.normal(size=(45, 2, 2)) + 1.0
    x = rng.normal(size=(5, 2, 2)) * 1.5
    t = np.linspace(*time_range(schedule), 5)
    weights = rng.uniform(0.1, 1.0, size=45) if weighted else None
    ref, a, s, y = naive(schedule, data, x, t, weights=weights)
    # the error model of tests/test_marginal.py (absolute log-weight error a few eps * k,
    # inherited with each quantity's gain); the clamp of exp's argument adds at most
    # N e^8 tiny to a row sum >= 1, far below eps
    err = 64 * EPS64 * conditioning(x, a, s, y)
    span = 1.0 + np.abs(y).max()
    c = schedule(t)
    gains = {
        "log_prob": np.ones_like(a),
        "denoise": span * np.ones_like(a),
        "velocity": span * (np.abs(c.d_sigma / c.sigma) * a + np.abs(c.d_alpha)),
        "score": span * a / s**2,
        "divergence": 4 * span**2 * np.abs((c.d_alpha - a * c.d_sigma / c.sigma) * a / s**2),
    }
    names = tuple(gains)
    outs = ft.marginal(
        fs.GaussianPath(schedule),
        torch.from_numpy(data),
        torch.from_numpy(x),
        torch.from_numpy(t),
        names,
        weights=None if weights is None else torch.from_numpy(weights),
        # the compiled kernel takes whole groups of 16 columns: two blocks, then 13 eager
        block_size=16 if KERNELS[kernel] else 7,
        **KERNELS[kernel],
    )
    for q, out in zip(names, outs, strict=True):
        assert out.dtype == torch.float64 and tuple(out.shape) == ref[q].shape, q
        tol = (gains[q] * err)[:, None] + 8 * EPS64 * np.abs(ref[q].reshape(5, -1))
        got = out.numpy().reshape(5, -1)
        assert np.all(np.abs(got - ref[q].reshape(5, -1)) <= 2 * tol), q


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("t", [0.3, 0.5, 0.7, 0.9, 0.99])
def test_fused_float32_keeps_the_guard_and_underflows_cleanly(ft, t, kernel):
    rng = np.random.default_rng(4)
    data = (rng.normal(size=(300, 8)) * 3 + 10).astype(np.float32)
    schedule = fs.CondOT(sigma_min=1e-3)
    c = schedule(np.float64(t))
    x = (c.alpha * data[:6] + c.sigma * rng.normal(size=(6, 8))).astype(np.float32)
    path = fs.GaussianPath(schedule)
    out = ft.marginal(
        path,
        torch.from_numpy(data),
        torch.from_numpy(x),
        t,
        "denoise",
        block_size=64,
        **KERNELS[kernel],
    )
    ref, a, s, y = naive(schedule, data.astype(np.float64), x.astype(np.float64), t)
    err = 64 * EPS32 * conditioning(x.astype(np.float64), a, s, y) * (1 + np.abs(y).max())
    bound = err[:, None] + 16 * EPS32 * np.abs(ref["denoise"])
    assert np.all(np.abs(out.numpy() - ref["denoise"]) <= bound)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("tolerance", [1e-6, 1e-3])
def test_a_tolerance_bounds_the_error_of_every_weight(ft, tolerance, kernel):
    # each streamed weight outside the band errs by at most `tolerance` times the
    # largest weight of its block, so the posterior mean by at most 2 N tolerance times
    # the data's span, beyond the float32 error model of the exact band
    rng = np.random.default_rng(6)
    data = (rng.normal(size=(96, 8)) * 3 + 10).astype(np.float32)
    schedule = fs.CondOT(sigma_min=1e-3)
    t = np.array([0.3, 0.5, 0.7, 0.9, 0.99, 0.3])
    c = schedule(t)
    x = (c.alpha[:, None] * data[:6] + c.sigma[:, None] * rng.normal(size=(6, 8))).astype(
        np.float32
    )
    path = fs.GaussianPath(schedule)
    out = ft.marginal(
        path,
        torch.from_numpy(data),
        torch.from_numpy(x),
        torch.from_numpy(t.astype(np.float32)),
        "denoise",
        block_size=32,
        tolerance=tolerance,
        **KERNELS[kernel],
    )
    t32 = t.astype(np.float32).astype(np.float64)
    ref, a, s, y = naive(schedule, data.astype(np.float64), x.astype(np.float64), t32)
    span = 1 + np.abs(y).max()
    err = 64 * EPS32 * conditioning(x.astype(np.float64), a, s, y) * span
    bound = err[:, None] + 2 * 96 * tolerance * span + 16 * EPS32 * np.abs(ref["denoise"])
    assert np.all(np.abs(out.numpy() - ref["denoise"]) <= bound)


def test_compiled_kernel_spills_a_few_overflowing_rows_to_the_top_capacity(ft, monkeypatch):
    # rows 0 and 1 sit on a point held 8 times (a band of 8 > the first capacity, 4);
    # with B = 64 the compiled block redoes the first such row at the top capacity
    # itself and leaves only the second to the eager path, then moves up a capacity
    import flowspec.backends.torch as kernel

    rng = np.random.default_rng(3)
    data = rng.normal(size=(64, 3)) * 4.0
    data[1:8] = data[0]
    schedule = fs.CondOT(sigma_min=1e-3)
    t = 0.99
    c = schedule(np.float64(t))
    x = c.alpha * data[rng.integers(8, 64, size=64)] + c.sigma * rng.normal(size=(64, 3))
    x[:2] = c.alpha * data[0] + c.sigma * 1e-3 * rng.normal(size=(2, 3))
    seen = []
    exact_rows = kernel._exact_rows

    def spy(rows, p, overflow, blk, start):
        seen.append((start, torch.nonzero(overflow).reshape(-1).tolist()))
        return exact_rows(rows, p, overflow, blk, start)

    monkeypatch.setattr(kernel, "_exact_rows", spy)
    path = fs.GaussianPath(schedule)
    args = (path, torch.from_numpy(data), torch.from_numpy(x), t, ("denoise", "divergence"))
    got = ft.marginal(*args, block_size=32, compiled=True)
    assert seen == [(0, [1])]
    want = ft.marginal(*args, block_size=32)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    ref = fs.EmpiricalMarginal(path, data).denoise(x, t)
    np.testing.assert_allclose(got[0].numpy()[:2], ref[:2], rtol=1e-12, atol=1e-12)


def test_validation(ft):
    path = fs.GaussianPath(fs.CondOT())
    data, x = torch.zeros(4, 2), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="`quantity`"):
        ft.marginal(path, data, x, 0.5, "speed")
    with pytest.raises(ValueError, match="`data`"):
        ft.marginal(path, torch.zeros(4, 3), x, 0.5)
    with pytest.raises(ValueError, match="`block_size`"):
        ft.marginal(path, data, x, 0.5, block_size=0)
    with pytest.raises(TypeError, match="`x`"):
        ft.marginal(path, data, np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="`weights`"):
        ft.marginal(path, data, x, 0.5, weights=torch.ones(3))
    with pytest.raises(ValueError, match="`band_capacity`"):
        ft.marginal(path, data, x, 0.5, compiled=True, band_capacity=0)
    with pytest.raises(TypeError, match="`compiled`"):
        ft.marginal(path, data, x, 0.5, compiled=1)
    with pytest.raises(ValueError, match="`tolerance`"):
        ft.marginal(path, data, x, 0.5, tolerance=0.0)
    with pytest.raises(TypeError, match="`tolerance`"):
        ft.marginal(path, data, x, 0.5, tolerance="1e-3")
    with pytest.raises(ValueError, match="`compiled=True` is for inference"):
        ft.marginal(path, data, x.requires_grad_(), 0.5, compiled=True)
