"""The CuPy backend on a CUDA device, against the NumPy reference (marker `gpu`).

Skipped, with the reason, where CuPy is not installed or no CUDA device is usable
(CI). Run them on a GPU machine with `scripts/gpu-check`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import CUPY_DTYPES as DTYPES
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.backends import _cupy_logic as L
from flowspec.conformance.properties import _times, _values
from flowspec.continuity import continuity_bound

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x)")
try:
    _DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:  # no driver, no device
    pytest.skip(f"no usable CUDA device: {exc}", allow_module_level=True)
if _DEVICES < 1:
    pytest.skip("no CUDA device", allow_module_level=True)

pytestmark = pytest.mark.gpu

fcp = fs.backends.get("cupy")


def _gpu(a):
    return cupy.asarray(a) if isinstance(a, np.ndarray) else a


# -- the compiled kernels equal their emulation ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_compiled_kernels_equal_the_numpy_emulation_bitwise(dtype):
    rng = np.random.default_rng(0)
    shape = (6, 5, 3)
    a = [rng.standard_normal(shape).astype(dtype) for _ in range(5)]
    coef = [rng.standard_normal(6).astype(dtype) for _ in range(4)]
    want = L.emulate(L.SAMPLE_AND_TARGET, a[0], a[1], *coef, 15)
    got = fcp._launch(L.SAMPLE_AND_TARGET, *map(_gpu, a[:2]), *map(_gpu, coef), 15)
    for g, w in zip(got, want, strict=True):
        # IEEE products and sums, no FMA contraction (--fmad=false): bit for bit
        np.testing.assert_array_equal(g.get(), w)
    c = rng.standard_normal(3).astype(dtype)
    for spec, n_in in ((L.AXPY, 2), (L.HEUN, 3), (L.RK4, 5)):
        want = L.emulate(spec, *a[:n_in], c, 1)
        got = fcp._launch(spec, *map(_gpu, a[:n_in]), _gpu(c), 1)
        np.testing.assert_array_equal(got.get(), want)


# -- training step ---------------------------------------------------------------------------


@st.composite
def training_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    batch = draw(st.integers(1, 64))
    event = tuple(draw(st.lists(st.integers(1, 8), min_size=0, max_size=3)))
    x0 = draw(_values((batch, *event), -4.0, 4.0)).astype(dtype)
    x1 = draw(_values((batch, *event), -12.0, 12.0)).astype(dtype)
    kind = draw(st.sampled_from(["float", "B"]))
    u = draw(_times(batch)).astype(dtype)
    t = float(u[0]) if kind == "float" else u
    strided = draw(st.booleans()) and len(event) >= 1
    return x0, x1, t, strided


@given(inputs=training_inputs())
def test_fused_sample_and_target_matches_core_on_cupy_and_numpy(schedule, inputs):
    x0, x1, t, strided = inputs
    path = fs.GaussianPath(schedule)
    g0, g1, gt = _gpu(x0), _gpu(x1), _gpu(t)
    if strided:
        g0 = cupy.repeat(g0, 2, axis=-1)[..., ::2]
    got = fcp.sample_and_target(path, g0, g1, gt)
    same_device = path.sample_and_target(g0, g1, gt)  # the Array API path on CuPy
    reference = path.sample_and_target(x0, x1, t)  # NumPy
    eps = np.finfo(x0.dtype).eps
    c = path.schedule(np.asarray(t, dtype=np.float64))
    for g, s, r, (ca, cb) in zip(
        got, same_device, reference, ((c.alpha, c.sigma), (c.d_alpha, c.d_sigma)), strict=True
    ):
        assert isinstance(g, cupy.ndarray) and g.dtype == r.dtype and g.shape == r.shape
        # same coefficients, same two products and sum: bit for bit
        np.testing.assert_array_equal(g.get(), s.get())
        # against NumPy the coefficients come from CUDA's libm (a few ulp from NumPy's):
        # each coefficient is a short chain of elementary functions, each within 2 ulp
        # (CUDA math guide) of a correctly rounded value: error <= 16 eps times the
        # two products' magnitudes
        ca = np.reshape(np.broadcast_to(ca, (x0.shape[0],)), (-1,) + (1,) * (x0.ndim - 1))
        cb = np.reshape(np.broadcast_to(cb, (x0.shape[0],)), (-1,) + (1,) * (x0.ndim - 1))
        scale = np.abs(ca * x1.astype(np.float64)) + np.abs(cb * x0.astype(np.float64))
        finite = np.isfinite(r)
        np.testing.assert_array_equal(np.isfinite(g.get()), finite)
        assert np.all(
            np.abs(g.get() - r)[finite] <= (16 * eps * scale)[finite] + np.finfo(x0.dtype).tiny
        )


def test_fused_sample_and_target_rejects_numpy_and_mixed_inputs():
    path = fs.GaussianPath(fs.CondOT())
    with pytest.raises(TypeError, match="`x0`"):
        fcp.sample_and_target(path, np.zeros((2, 2)), np.zeros((2, 2)), 0.5)
    with pytest.raises(TypeError, match="`x1`"):
        fcp.sample_and_target(path, cupy.zeros((2, 2)), np.zeros((2, 2)), 0.5)


# -- solvers -----------------------------------------------------------------------------------


def _field(t, x):
    tt = cupy.reshape(t, (-1,) + (1,) * (x.ndim - 1)) if isinstance(x, cupy.ndarray) else None
    if tt is None:
        tt = np.reshape(t, (-1,) + (1,) * (x.ndim - 1))
    xp = cupy if isinstance(x, cupy.ndarray) else np
    return xp.sin(x) * tt - 0.5 * x


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("return_path", [False, True])
def test_integrate_matches_core_on_cupy_and_numpy(method, dtype, return_path):
    x0 = np.random.default_rng(1).standard_normal((33, 2, 3)).astype(dtype)
    grid = [0.0, 0.1, 0.35, 0.7, 1.0]
    g0 = cupy.asarray(x0)
    got = fcp.integrate(_field, g0, grid, method=method, return_path=return_path)
    same_device = fs.integrate(_field, g0, grid, method=method, return_path=return_path)
    np.testing.assert_array_equal(got.get(), same_device.get())  # same ops, same order
    np.testing.assert_array_equal(g0.get(), x0)  # the input is not written
    want = fs.integrate(_field, x0, grid, method=method, return_path=return_path)
    # sin from CUDA's libm differs from NumPy's by a few ulp per evaluation; 4 steps of
    # at most 4 stages of an O(1)-Lipschitz field: error below 64 eps (1 + |x|)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got.get(), want, rtol=0, atol=64 * eps * (1 + np.abs(want).max()))


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
def test_integrate_with_a_grid_on_the_device(method):
    x0 = cupy.asarray(np.random.default_rng(2).standard_normal((8, 4)))
    grid = cupy.asarray([1.0, 0.6, 0.2, 0.0])
    got = fcp.integrate(_field, x0, grid, method=method)
    want = fs.integrate(_field, x0, grid, method=method)
    np.testing.assert_array_equal(got.get(), want.get())


@pytest.mark.parametrize("return_path", [False, True])
def test_euler_matches_the_reference(return_path):
    x0 = cupy.asarray(np.random.default_rng(3).standard_normal((16, 5)).astype(np.float32))
    got = fcp.euler(_field, x0, steps=13, t0=0.1, t1=0.9, return_path=return_path)
    want = fs.euler(_field, x0, steps=13, t0=0.1, t1=0.9, return_path=return_path)
    np.testing.assert_array_equal(got.get(), want.get())


class _CountAllocations(cupy.cuda.MemoryHook):
    name = "flowspec_count"

    def __init__(self):
        self.count = 0

    def malloc_preprocess(self, **kwargs):
        self.count += 1


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
def test_solvers_allocate_nothing_per_step(method):
    # a field that writes into its own buffers: then every allocation is the solver's
    x0 = cupy.asarray(np.random.default_rng(4).standard_normal((64, 32)).astype(np.float32))
    buffers = [cupy.empty_like(x0) for _ in range(4)]
    calls = [0]

    def field(t, x):
        out = buffers[calls[0] % 4]
        calls[0] += 1
        cupy.multiply(x, -0.5, out=out)
        return out

    counts = []
    for steps in (5, 50):
        grid = list(np.linspace(0.0, 1.0, steps + 1))
        fcp.integrate(field, x0, grid, method=method)  # compile outside the count
        with _CountAllocations() as hook:
            fcp.integrate(field, x0, grid, method=method)
        counts.append(hook.count)
    assert counts[0] == counts[1], counts


# -- the core on CuPy arrays: the exact marginal and the continuity residual ---------------------
# (the backend has no copies of these: the reference runs on CuPy through the Array API)


@st.composite
def marginal_inputs(draw):
    batch, n, d = draw(st.integers(1, 32)), draw(st.integers(1, 40)), draw(st.integers(1, 8))
    x = draw(_values((batch, d), -4.0, 4.0))
    data = draw(_values((n, d), -4.0, 5.0))
    t = draw(_times(batch, 0.05, 0.9))
    return x, data, t


@given(inputs=marginal_inputs(), chunk=st.integers(1, 50))
def test_empirical_marginal_on_cupy_matches_the_numpy_reference(schedule, inputs, chunk):
    x, data, t = inputs
    batch = x.shape[0]
    path = fs.GaussianPath(schedule)
    ref = fs.EmpiricalMarginal(path, data, chunk_size=chunk)
    gpu = fs.EmpiricalMarginal(path, cupy.asarray(data), chunk_size=chunk)
    gx, gt = cupy.asarray(x), cupy.asarray(t)
    for q in ("log_prob", "velocity", "score", "divergence", "posterior"):
        want = getattr(ref, q)(x, t)
        got = getattr(gpu, q)(gx, gt)
        assert isinstance(got, cupy.ndarray)
        # the same algorithm; cuBLAS may sum the matrix products in another order:
        # a few ulps of the logits' size, amplified by the exponentials' condition
        c = path.schedule(t)
        a, s = (np.broadcast_to(v, (batch,))[:, None] for v in c[:2])
        scale = np.max((x**2).sum(1)[:, None] + a**2 * (data**2).sum(1)[None]) / (
            2 * np.min(s) ** 2
        )
        tol = 64 * np.finfo(np.float64).eps * (1.0 + scale)
        np.testing.assert_allclose(got.get(), want, rtol=0, atol=tol * (1 + np.abs(want).max()))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_conditional_path_residual_vanishes_on_the_gpu(schedule, dtype):
    rng = np.random.default_rng(6)
    x = cupy.asarray(rng.standard_normal((16, 3)).astype(dtype))
    x1 = cupy.asarray(rng.standard_normal((16, 3)).astype(dtype))
    t = cupy.asarray(rng.uniform(0.15, 0.85, size=16).astype(dtype))
    path = fs.GaussianPath(schedule)
    r = fs.continuity_residual(
        lambda tt, xx: path.log_prob(xx, x1, tt), lambda tt, xx: path.velocity(xx, x1, tt), t, x
    )
    assert isinstance(r, cupy.ndarray) and r.shape == (16,) and r.dtype == dtype
    xn, x1n, tn = (v.get().astype(np.float64) for v in (x, x1, t))
    bound = continuity_bound(path, x1n, tn, xn, dtype=dtype)
    assert np.all(np.abs(r.get()) <= bound)


# -- random helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_random_helpers(dtype):
    t = fcp.sample_time(100_000, generator=cupy.random.default_rng(0), dtype=dtype)
    t2 = fcp.sample_time(100_000, generator=cupy.random.default_rng(0), dtype=dtype)
    assert t.shape == (100_000,) and t.dtype == dtype
    np.testing.assert_array_equal(t.get(), t2.get())  # reproducible from the seed
    tn = t.get()
    assert tn.min() >= 0.0 and tn.max() < 1.0
    # mean of U[0,1): sd sqrt(1/12)/sqrt(n); 6 sd gives a false failure below 1e-8
    assert abs(tn.mean() - 0.5) < 6 * math.sqrt(1 / 12) / math.sqrt(tn.size)
    lo = fcp.sample_time(1000, generator=cupy.random.default_rng(1), dtype=dtype, high=1 - 1e-5)
    assert lo.get().max() <= 1 - 1e-5
    # endpoints closer than the dtype's spacing: draws stay in [low, high) as represented
    # (float32: 1 - 1e-9 rounds to 1, 1e-9 * (1 - x) can round below 1e-9)
    edge = fcp.sample_time(
        100_000, generator=cupy.random.default_rng(3), dtype=dtype, low=1e-9, high=1 - 1e-9
    ).get()
    assert edge.astype(np.float64).min() >= 1e-9 and edge.astype(np.float64).max() < 1 - 1e-9
    z = fcp.sample_noise((5000, 20), generator=cupy.random.default_rng(2), dtype=dtype).get()
    assert z.shape == (5000, 20) and z.dtype == dtype
    # mean and variance of 1e5 standard normals: 6 sd bounds (sd 1/sqrt(n), sqrt(2/n))
    assert abs(z.mean()) < 6 / math.sqrt(z.size)
    assert abs(z.var() - 1.0) < 6 * math.sqrt(2 / z.size)
    with pytest.raises(TypeError, match="`generator`"):
        fcp.sample_time(3, generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="`dtype`"):
        fcp.sample_noise((3, 2), generator=cupy.random.default_rng(0), dtype=np.int32)
