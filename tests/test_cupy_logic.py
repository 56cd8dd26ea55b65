"""The CuPy backend's logic, checked on the CPU (CI has no GPU).

The fused kernels are declared once (flowspec/backends/_cupy_logic.py) in a language
that is both CUDA C++ and Python; here they run through a NumPy emulation of
``cupy.ElementwiseKernel`` with the same index arithmetic (flat C-order index ``i``,
sample ``b = i / n``), inside the same drivers the CuPy module uses. The GPU test file
(test_backend_cupy.py) checks that the compiled kernels agree with this emulation.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from helpers import CUPY_DTYPES as DTYPES
from helpers import CUPY_SCHEDULE_IDS as IDS
from helpers import CUPY_SCHEDULES as SCHEDULES
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec import ode
from flowspec.backends import _cupy_logic as L

XP = array_api_compat.array_namespace(np.zeros(1))


def test_import_does_not_need_cupy():
    import sys

    assert "flowspec.backends._cupy_logic" in sys.modules
    # the logic module itself must not have imported CuPy
    assert not hasattr(L, "cupy")


def test_sample_and_target_source_is_one_generic_affine_kernel():
    in_params, out_params, op = L.SAMPLE_AND_TARGET.cuda()
    assert in_params == (
        "T x0, T x1, raw T alpha, raw T sigma, raw T d_alpha, raw T d_sigma, int64 n"
    )
    assert out_params == "T x_t, T target"
    assert op.splitlines() == [
        "const ptrdiff_t b = i / n;",
        "x_t = alpha[b] * x1 + sigma[b] * x0;",
        "target = d_alpha[b] * x1 + d_sigma[b] * x0;",
    ]
    # solver kernels index a per-step coefficient, never a per-sample one
    for spec in (L.AXPY, L.HEUN, L.RK4):
        assert "i / n" not in spec.cuda()[2]
        assert "raw T c" in spec.cuda()[0]


@pytest.mark.parametrize(
    "expr", ["x ** 2", "x + 2.0", "exp(x)", "x[i]", "x if x else x", "T(x)", "x % 2"]
)
def test_emulator_rejects_expressions_outside_the_kernel_language(expr):
    spec = L.KernelSpec("bad", ("x",), (), (), ("y",), (("y", expr),))
    with pytest.raises((ValueError, KeyError)):
        L.emulate(spec, np.ones(3))


def test_emulator_index_arithmetic_reads_one_coefficient_per_sample():
    # coefficient b of sample b, event (2, 3): every entry of sample b gets alpha[b]
    x0 = np.zeros((4, 2, 3))
    x1 = np.ones((4, 2, 3))
    alpha = np.arange(4.0)
    zeros = np.zeros(4)
    x_t, target = L.emulate(L.SAMPLE_AND_TARGET, x0, x1, alpha, zeros, zeros, zeros, 6)
    assert np.array_equal(x_t, alpha[:, None, None] * np.ones((4, 2, 3)))
    assert np.array_equal(target, np.zeros((4, 2, 3)))


@st.composite
def training_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    batch = draw(st.integers(1, 6))
    event = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    if draw(st.booleans()) and event:
        event = (batch, *event[1:])  # an event axis equal to B: no silent broadcast
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((batch, *event)).astype(dtype)
    x1 = (3.0 * rng.standard_normal((batch, *event))).astype(dtype)
    if draw(st.booleans()) and len(event) >= 1:
        # non-contiguous inputs: a strided view
        x0 = np.repeat(x0, 2, axis=-1)[..., ::2]
    kind = draw(st.sampled_from(["float", "0d", "B", "B11"]))
    u = rng.uniform(0.0, 1.0, size=batch)
    if kind == "float":
        t = float(u[0])
    elif kind == "0d":
        t = np.asarray(u[0], dtype=dtype)
    elif kind == "B":
        t = u.astype(dtype)
    else:
        t = u.astype(dtype).reshape((batch,) + (1,) * len(event))
    return x0, x1, t


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@given(inputs=training_inputs())
def test_fused_sample_and_target_equals_the_reference_bitwise(schedule, inputs):
    x0, x1, t = inputs
    path = fs.GaussianPath(schedule)
    got = L.sample_and_target(L.emulate, path, x0, x1, t)
    want = path.sample_and_target(x0, x1, t)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        # Same IEEE operations in the same order (two products, one sum; the CUDA
        # kernel is compiled with --fmad=false): equal bit for bit, NaN/inf included.
        np.testing.assert_array_equal(g, w)


def test_fused_sample_and_target_validates_like_the_reference():
    path = fs.GaussianPath(fs.CondOT())
    with pytest.raises(ValueError, match="`x0` and `x1`"):
        L.sample_and_target(L.emulate, path, np.zeros((2, 3)), np.zeros((2, 4)), 0.5)
    with pytest.raises(TypeError, match="`x1`"):
        L.sample_and_target(
            L.emulate, path, np.zeros((2, 3)), np.zeros((2, 3), dtype=np.float32), 0.5
        )
    with pytest.raises(TypeError, match="`path`"):
        L.sample_and_target(L.emulate, fs.CondOT(), np.zeros((2, 3)), np.zeros((2, 3)), 0.5)


def _field(t, x):
    # a nonlinear, time-dependent field; t has shape (B,)
    tt = np.reshape(t, (-1,) + (1,) * (x.ndim - 1))
    return np.sin(x) * tt - 0.5 * x


GRIDS = [[0.0, 0.3, 0.7, 1.0], [1.0, 0.6, 0.25, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
@pytest.mark.parametrize("grid", GRIDS, ids=["up", "down", "one-step"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("return_path", [False, True])
def test_buffered_solver_equals_the_reference_bitwise(method, grid, dtype, return_path):
    x0 = np.random.default_rng(3).standard_normal((5, 2, 3)).astype(dtype)
    before = x0.copy()
    got = L.run_solver(L.emulate, XP, _field, x0, L.solver_plan(XP, method, grid, x0), return_path)
    want = fs.integrate(_field, x0, grid, method=method, return_path=return_path)
    # stage times and step coefficients are rounded as the reference rounds them and
    # every update is the reference's expression: equal bit for bit
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x0, before)  # the input is never written


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
def test_buffered_solver_with_a_device_style_grid_matches_the_reference_arithmetic(method):
    # a grid of 0-d arrays in x's dtype: the reference does its time arithmetic in
    # that dtype (the path for grids on a device); the plan must do the same
    x0 = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    grid = [np.asarray(v, dtype=np.float32) for v in (0.0, 0.1, 0.45, 1.0)]
    got = L.run_solver(L.emulate, XP, _field, x0, L.solver_plan(XP, method, grid, x0), False)
    want = x0
    for k in range(len(grid) - 1):
        want = ode.step(_field, XP, method, grid[k], grid[k + 1] - grid[k], want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("steps", [1, 7, 30])
@pytest.mark.parametrize("return_path", [False, True])
def test_buffered_euler_equals_the_reference_bitwise(steps, return_path):
    x0 = np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)
    plan = L.euler_plan(XP, 0.2, -0.9, steps, x0)
    got = L.run_solver(L.emulate, XP, _field, x0, plan, return_path)
    want = fs.euler(_field, x0, steps=steps, t0=0.2, t1=-0.9, return_path=return_path)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
def test_field_returning_its_input_does_not_corrupt_the_stages(method):
    # v(t, x) = x returns the stage buffer itself; the driver must copy it before the
    # stage is overwritten (otherwise rk4 reads k2 after it changed)
    x0 = np.linspace(-1.0, 1.0, 6).reshape(3, 2)
    grid = [0.0, 0.5, 1.0]
    got = L.run_solver(
        L.emulate, XP, lambda t, x: x, x0, L.solver_plan(XP, method, grid, x0), False
    )
    want = fs.integrate(lambda t, x: x, x0, grid, method=method)
    np.testing.assert_array_equal(got, want)


# -- marginal ---------------------------------------------------------------------------


def _naive_marginal(path, data, x, t, weights):
    """Independent oracle: the (B, N, D) broadcast form of eq. 6 and 8, in float64."""
    b, n = x.shape[0], data.shape[0]
    d = math.prod(x.shape[1:])
    xf, yf = x.reshape(b, d), data.reshape(n, d)
    c = path.schedule(np.asarray(t, dtype=np.float64))
    a, s, da, ds = (np.broadcast_to(v, (b,))[:, None] for v in c)
    logq = np.log(weights / weights.sum()) if weights is not None else np.full(n, -math.log(n))
    diff = xf[:, None, :] - a[:, :, None] * yf[None]
    logits = -(diff**2).sum(-1) / (2 * s**2) + logq
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    w = np.exp(logits - lse[:, None])
    mean = w @ yf
    var = (w * (yf**2).sum(1)).sum(1) - (mean**2).sum(1)
    out = {
        "log_prob": lse - d * np.log(s[:, 0]) - 0.5 * d * math.log(2 * math.pi),
        "posterior": w,
        "denoise": mean.reshape(x.shape),
        "score": (-(xf - a * mean) / s**2).reshape(x.shape),
        "velocity": ((ds / s) * (xf - a * mean) + da * mean).reshape(x.shape),
        "divergence": d * (ds / s)[:, 0] + ((da - a * ds / s) * a / s**2)[:, 0] * var,
    }
    # conditioning of the matrix-product form: the largest logit magnitude it cancels
    scale = float(
        np.max((xf**2).sum(1)[:, None] + (a**2) * (yf**2).sum(1)[None]) / (2 * np.min(s) ** 2)
    )
    return out, scale


QUANTITIES = ["log_prob", "velocity", "score", "divergence", "denoise", "posterior"]


@pytest.mark.parametrize("schedule", SCHEDULES[1:], ids=IDS[1:])
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 5),
    n=st.integers(1, 9),
    event=st.sampled_from([(1,), (3,), (2, 2)]),
    chunk=st.integers(1, 10),
    weighted=st.booleans(),
)
def test_streamed_marginal_matches_the_broadcast_oracle(
    schedule, seed, batch, n, event, chunk, weighted
):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *event))
    data = 1.5 * rng.standard_normal((n, *event)) + 0.5
    t = rng.uniform(0.05, 0.9, size=batch)  # sigma_t bounded away from 0
    weights = rng.uniform(0.1, 1.0, size=n) if weighted else None
    path = fs.GaussianPath(schedule)
    want, scale = _naive_marginal(path, data, x, t, weights)
    eps = np.finfo(np.float64).eps
    # Each logit carries a rounding error of a few eps times the terms the matrix-product
    # form cancels (`scale`); the posterior weights inherit it as a relative error and
    # every quantity is a weighted sum of O(1)-conditioned terms. 64 covers the few
    # roundings per logit and the sums over <= 9 points and <= 4 coordinates.
    tol = 64 * eps * (1.0 + scale)
    for q in QUANTITIES:
        got = L.marginal_quantity(XP, q, path, data, x, t, weights, chunk)
        assert got.shape == want[q].shape and got.dtype == np.float64
        mag = 1.0 + np.max(np.abs(want[q]))
        np.testing.assert_allclose(got, want[q], rtol=0, atol=tol * mag, err_msg=q)


def test_streamed_marginal_posterior_rows_sum_to_one_and_chunking_is_invisible():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3))
    data = rng.standard_normal((11, 3))
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    t = np.array([0.0, 0.5, 0.99, 1.0])
    full = L.marginal_quantity(XP, "posterior", path, data, x, t, None, 11)
    # a sum of 11 weights in [0, 1]: rounding below 11 eps
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=0, atol=11 * np.finfo(float).eps)
    for chunk in (1, 2, 5):
        for q in ("velocity", "log_prob"):
            a = L.marginal_quantity(XP, q, path, data, x, t, None, chunk)
            b = L.marginal_quantity(XP, q, path, data, x, t, None, 11)
            # the running rescale exp(m_old - m_new) adds one rounding per chunk
            tol = 32 * np.finfo(float).eps * (1.0 + np.max(np.abs(b)))
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def test_streamed_marginal_is_finite_where_every_logit_underflows():
    # t = 1 with sigma_min = 1e-3 in 64 dimensions: every exp(logit) underflows in
    # float64 unless the maximum is subtracted first
    rng = np.random.default_rng(8)
    data = rng.standard_normal((6, 64))
    x = data[:3] + 0.5
    path = fs.GaussianPath(fs.CondOT(sigma_min=1e-3))
    for q in QUANTITIES:
        out = L.marginal_quantity(XP, q, path, data, x, 1.0, None, 4)
        assert np.all(np.isfinite(out)), q


def test_marginal_validation_names_the_argument():
    path = fs.GaussianPath(fs.CondOT())
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`data`"):
        L.marginal_quantity(XP, "velocity", path, np.zeros((4, 2)), x, 0.5, None, None)
    with pytest.raises(TypeError, match="`x`"):
        L.marginal_quantity(XP, "velocity", path, np.zeros((4, 3), np.float32), x, 0.5, None, None)
    with pytest.raises(ValueError, match="`weights`"):
        L.marginal_quantity(XP, "velocity", path, np.zeros((4, 3)), x, 0.5, np.ones(3), None)
    with pytest.raises(ValueError, match="`chunk`"):
        L.marginal_quantity(XP, "velocity", path, np.zeros((4, 3)), x, 0.5, None, 0)


# -- continuity residual with analytic parts ----------------------------------------------


def _parts(path, x1):
    return dict(
        log_prob=lambda t, x: path.log_prob(x, x1, t),
        velocity=lambda t, x: path.velocity(x, x1, t),
        divergence=lambda t, x: path.divergence(x, x1, t),
        score=lambda t, x: path.score(x, x1, t),
    )


def _term_scale(f, t, x):
    """Magnitudes of the residual's three terms, per sample (float64 reference FD)."""
    lp = f["log_prob"]
    h = 1e-4
    dt = np.abs((lp(t + h, x) - lp(t - h, x)) / (2 * h))
    div = np.abs(f["divergence"](t, x))
    tr = np.abs(np.sum((f["velocity"](t, x) * f["score"](t, x)).reshape(x.shape[0], -1), axis=1))
    return 1.0 + dt + div + tr


# The central difference in t with h = eps^(1/3) has truncation h^2/6 |d^3/dt^3 log p|
# and rounding eps |log p| / h, both O(eps^(2/3)) times the size of log p and of its
# third time derivative. On t in [0.15, 0.85] the schedules' derivatives up to third
# order are at most a few hundred times the terms themselves (VP with beta_max = 20 and
# VE with sigma_max / sigma_min = 8000 dominate), hence the factor 1e3.
CONDITIONING = 1e3


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 4), d=st.integers(1, 3))
def test_residual_with_analytic_parts_vanishes_for_every_conditional_path(schedule, seed, batch, d):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, d))
    x1 = rng.standard_normal((batch, d))
    t = rng.uniform(0.15, 0.85, size=batch)
    f = _parts(fs.GaussianPath(schedule), x1)
    r = L.residual_with_parts(XP, f["log_prob"], f["velocity"], t, x, f["divergence"], f["score"])
    bound = CONDITIONING * np.finfo(np.float64).eps ** (2 / 3) * _term_scale(f, t, x)
    assert r.shape == (batch,)
    assert np.all(np.abs(r) <= bound), (r, bound)


def test_residual_with_only_one_analytic_part_agrees_with_the_reference():
    rng = np.random.default_rng(9)
    x, x1 = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    t = np.array([0.2, 0.5, 0.8])
    f = _parts(fs.GaussianPath(fs.Cosine()), x1)
    ref = fs.continuity_residual(f["log_prob"], f["velocity"], t, x)
    none = L.residual_with_parts(XP, f["log_prob"], f["velocity"], t, x, None, None)
    # no analytic part: the reference's arithmetic exactly
    np.testing.assert_array_equal(none, ref)
    bound = CONDITIONING * np.finfo(np.float64).eps ** (2 / 3) * _term_scale(f, t, x)
    for div, score in ((f["divergence"], None), (None, f["score"])):
        r = L.residual_with_parts(XP, f["log_prob"], f["velocity"], t, x, div, score)
        assert np.all(np.abs(r - ref) <= 2 * bound)


class _WrongDerivative(fs.CondOT):
    """CondOT with d_sigma off by 10%: the residual must notice."""

    def coefficients(self, xp, t):
        c = super().coefficients(xp, t)
        return fs.Coefficients(c.alpha, c.sigma, c.d_alpha, 1.1 * c.d_sigma)


def test_residual_detects_a_wrong_schedule_derivative():
    rng = np.random.default_rng(10)
    x, x1 = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    t = np.full(4, 0.5)
    f = _parts(fs.GaussianPath(_WrongDerivative(sigma_min=0.1)), x1)
    r = L.residual_with_parts(XP, f["log_prob"], f["velocity"], t, x, f["divergence"], f["score"])
    bound = CONDITIONING * np.finfo(np.float64).eps ** (2 / 3) * _term_scale(f, t, x)
    assert np.all(np.abs(r) > 100 * bound)


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_residual_of_the_streamed_marginal_vanishes(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 2))
    data = rng.standard_normal((n, 2))
    t = rng.uniform(0.15, 0.85, size=3)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.05))

    def q(name):
        return lambda tt, xx: L.marginal_quantity(XP, name, path, data, xx, tt, None, 2)

    f = {k: q(k) for k in ("log_prob", "velocity", "divergence", "score")}
    r = L.residual_with_parts(XP, f["log_prob"], f["velocity"], t, x, f["divergence"], f["score"])
    bound = CONDITIONING * np.finfo(np.float64).eps ** (2 / 3) * _term_scale(f, t, x)
    assert np.all(np.abs(r) <= bound), (r, bound)
