"""The CuPy backend's logic, checked on the CPU (CI has no GPU).

The fused kernels are declared once (flowspec/backends/_cupy_logic.py) in a language
that is both CUDA C++ and Python; here they run through a NumPy emulation of
``cupy.ElementwiseKernel`` with the same index arithmetic (flat C-order index ``i``,
sample ``b = i / n``), inside the same drivers the CuPy module uses. The GPU test file
(test_backend_cupy.py) checks that the compiled kernels agree with this emulation.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from helpers import CUPY_DTYPES as DTYPES
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec import ode
from flowspec.backends import _cupy_logic as L
from flowspec.conformance.properties import _times, _values

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
    x0 = draw(_values((batch, *event), -4.0, 4.0)).astype(dtype)
    x1 = draw(_values((batch, *event), -12.0, 12.0)).astype(dtype)
    if draw(st.booleans()) and len(event) >= 1:
        # non-contiguous inputs: a strided view
        x0 = np.repeat(x0, 2, axis=-1)[..., ::2]
    kind = draw(st.sampled_from(["float", "0d", "B", "B11"]))
    u = draw(_times(batch))
    if kind == "float":
        t = float(u[0])
    elif kind == "0d":
        t = np.asarray(u[0], dtype=dtype)
    elif kind == "B":
        t = u.astype(dtype)
    else:
        t = u.astype(dtype).reshape((batch,) + (1,) * len(event))
    return x0, x1, t


@given(inputs=training_inputs())
def test_fused_sample_and_target_equals_the_reference_bitwise(schedule, inputs):
    x0, x1, t = inputs
    path = fs.GaussianPath(schedule)
    # the drawn times include t = 0 and t = 1, where some coefficients are infinite
    # (the inf and NaN they give are compared too)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
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
