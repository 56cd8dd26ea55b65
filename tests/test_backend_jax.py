"""The JAX backend, and the core under jax.jit / jax.vmap / jax.grad.

Oracles: the NumPy reference (float64, and float32 against float64 at float32-rounded
inputs), closed forms (linear fields, Gaussian log-densities), identities (the
continuity equation by autodiff), and probability bounds for Hutchinson's estimator.
x64 is enabled for the whole module; float32 cases build float32 arrays explicitly.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the JAX backend needs jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from helpers import normal_range  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import flowspec as fs  # noqa: E402
from flowspec.conformance.properties import _times, _values  # noqa: E402
from flowspec.schedules import CATALOGUE  # noqa: E402

fj = fs.backends.get("jax")

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def _np(x):
    return np.asarray(x)


def _close(actual, expected, tol, what=""):
    actual, expected = _np(actual), _np(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= tol)
    assert not np.any(bad), (
        f"{what}: max error {err.max():.3e} above tolerance, e.g. {np.max(tol):.3e}"
    )


# ======================================================================================
# 1. every public function of the core on JAX arrays under jit, vmap and grad
# ======================================================================================
def _mlp_params(rng, d):
    return rng.normal(size=(d, d)) / math.sqrt(d), rng.normal(size=(d,))


def _mlp(w, b):
    def field(t, x):
        xp = fs.validation.namespace(x=x)
        h = xp.reshape(t, (-1, 1)) * b + x @ w
        return xp.tanh(h) - 0.5 * x

    return field


def _core_cases():
    """name -> (fn(*arrays) -> array, make(rng) -> tuple of float64 NumPy arrays)."""
    cases = {}
    b, d = 3, 2

    def xs(rng):
        return rng.normal(size=(b, d))

    def ts(rng):
        return rng.uniform(0.2, 0.8, size=(b,))

    for sched in CATALOGUE:
        sid = repr(sched)
        cases[f"schedule-{sid}"] = (
            lambda t, s=sched: tuple(s(t)),
            lambda rng: (ts(rng),),
        )
        path = fs.GaussianPath(sched)
        for meth in ("sample", "target", "sample_and_target"):
            cases[f"path.{meth}-{sid}"] = (
                lambda x0, x1, t, p=path, m=meth: getattr(p, m)(x0, x1, t),
                lambda rng: (xs(rng), xs(rng), ts(rng)),
            )
        for meth in ("velocity", "log_prob", "score", "divergence"):
            cases[f"path.{meth}-{sid}"] = (
                lambda x, x1, t, p=path, m=meth: getattr(p, m)(x, x1, t),
                lambda rng: (xs(rng), xs(rng), ts(rng)),
            )
    for red in ("mean", "sum", "none"):
        cases[f"cfm_loss-{red}"] = (
            lambda v, u, r=red: fs.cfm_loss(v, u, reduction=r),
            lambda rng: (xs(rng), xs(rng)),
        )
    cases["euler"] = (
        lambda x0, w, bias: fs.euler(_mlp(w, bias), x0, steps=5),
        lambda rng: (xs(rng), *_mlp_params(rng, d)),
    )
    cases["euler-path-backward"] = (
        lambda x0, w, bias: fs.euler(_mlp(w, bias), x0, steps=3, t0=1.0, t1=0.0, return_path=True),
        lambda rng: (xs(rng), *_mlp_params(rng, d)),
    )
    for method in fs.ode.METHODS:
        cases[f"integrate-{method}"] = (
            lambda x0, w, bias, m=method: fs.integrate(
                _mlp(w, bias), x0, [0.0, 0.3, 0.7, 1.0], method=m
            ),
            lambda rng: (xs(rng), *_mlp_params(rng, d)),
        )
    cases["integrate-array-grid"] = (
        lambda x0, w, bias, grid: fs.integrate(_mlp(w, bias), x0, grid, method="rk4"),
        lambda rng: (xs(rng), *_mlp_params(rng, d), np.sort(rng.uniform(0.0, 1.0, size=4))),
    )
    # a (log_prob, velocity) pair that does NOT satisfy the continuity equation (the field
    # is doubled), so the residual is O(1) and smooth, and its derivatives are testable
    cond = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    cases["continuity_residual"] = (
        lambda x, x1, t: fs.continuity_residual(
            lambda tt, xx: cond.log_prob(xx, x1, tt),
            lambda tt, xx: 2.0 * cond.velocity(xx, x1, tt),
            t,
            x,
        ),
        lambda rng: (xs(rng), xs(rng), ts(rng)),
    )
    # the exact marginal of a small data set, the data themselves differentiable
    for meth in ("log_prob", "velocity", "score", "divergence", "posterior", "denoise"):
        cases[f"EmpiricalMarginal.{meth}"] = (
            lambda x, t, data, m=meth: getattr(fs.EmpiricalMarginal(cond, data), m)(x, t),
            lambda rng: (xs(rng), ts(rng), rng.normal(size=(5, d))),
        )

    def _lik(x1, data):
        m = fs.EmpiricalMarginal(cond, data)
        xp = fs.validation.namespace(x=x1)
        log_p0 = lambda x: -0.5 * xp.sum(x * x, axis=1) - d * 0.5 * math.log(2 * math.pi)  # noqa: E731
        return fs.log_likelihood(
            lambda t, x: m.velocity(x, t),
            x1,
            log_p0,
            [1.0, 0.6, 0.3, 0.0],
            "heun",
            lambda t, x: m.divergence(x, t),
        )

    cases["log_likelihood"] = (_lik, lambda rng: (xs(rng), rng.normal(size=(5, d))))
    return cases


CORE_CASES = _core_cases()


# The core's continuity residual is a central difference with step eps^(1/3): an ulp-level
# difference between XLA's and NumPy's log/exp becomes eps / eps^(1/3) in the residual.
AMPLIFICATION = {"continuity_residual": EPS64 ** (-1 / 3)}


def _outputs(out):
    return tuple(out) if isinstance(out, tuple) else (out,)


def _mag(out):
    return max(float(np.max(np.abs(_np(o)))) for o in _outputs(out)) + 1.0


@pytest.mark.parametrize("name", list(CORE_CASES))
def test_core_under_jit_matches_numpy(name):
    fn, make = CORE_CASES[name]
    args = make(np.random.default_rng(0))
    expected = fn(*args)
    actual = jax.jit(fn)(*map(jnp.asarray, args))
    # Same formulas in the same order; XLA's exp/log/sin/tanh differ from NumPy's by a
    # few ulps, amplified at most by the number of chained operations (< 64) relative to
    # the largest value involved (times the finite-difference amplification, if any).
    tol = 64 * EPS64 * _mag(expected) * AMPLIFICATION.get(name, 1.0)
    for a, e in zip(_outputs(actual), _outputs(expected), strict=True):
        assert isinstance(a, jax.Array)
        _close(a, e, tol, name)


@pytest.mark.parametrize("name", list(CORE_CASES))
def test_core_under_vmap_matches_loop(name):
    fn, make = CORE_CASES[name]
    rng = np.random.default_rng(1)
    sets = [make(rng) for _ in range(3)]
    stacked = [jnp.stack([jnp.asarray(s[i]) for s in sets]) for i in range(len(sets[0]))]
    batched = _outputs(jax.jit(jax.vmap(fn))(*stacked))
    for k, s in enumerate(sets):
        expected = fn(*s)
        tol = 64 * EPS64 * _mag(expected) * AMPLIFICATION.get(name, 1.0)  # as for jit
        for a, e in zip(batched, _outputs(expected), strict=True):
            _close(a[k], e, tol, f"{name}[{k}]")


@pytest.mark.parametrize("name", list(CORE_CASES))
def test_core_under_grad_matches_finite_differences_of_numpy(name):
    fn, make = CORE_CASES[name]
    rng = np.random.default_rng(2)
    args = make(rng)
    weights = [rng.normal(size=np.shape(o)) for o in _outputs(fn(*args))]

    def scalar(*a):
        return sum(jnp.sum(w * o) for w, o in zip(weights, _outputs(fn(*a)), strict=True))

    grads = jax.jit(jax.grad(scalar, argnums=tuple(range(len(args)))))(*map(jnp.asarray, args))
    direction = [rng.normal(size=np.shape(a)) for a in args]
    directional = sum(float(jnp.sum(g * v)) for g, v in zip(grads, direction, strict=True))

    def scalar_np(h):
        moved = [a + h * v for a, v in zip(args, direction, strict=True)]
        return sum(float(np.sum(w * o)) for w, o in zip(weights, _outputs(fn(*moved)), strict=True))

    h = EPS64 ** (1 / 3)
    fd = (scalar_np(h) - scalar_np(-h)) / (2 * h)
    # central difference: truncation O(h^2 f''') + rounding O(eps f / h), both
    # ~ eps^(2/3) ~ 4e-11 relative to the function's scale; 1e4 allows third
    # derivatives up to 1e4 times the function's scale (VE: d_sigma ~ 9 sigma).
    scale = abs(scalar_np(0.0)) + abs(directional) + 1.0
    assert abs(directional - fd) <= 1e4 * EPS64 ** (2 / 3) * scale, (name, directional, fd)


# ======================================================================================
# 2. the backend against the NumPy reference (Hypothesis), float64 and float32
# ======================================================================================
shapes = st.sampled_from([(1, 1), (3, 2), (4, 2, 3)])


@st.composite
def path_inputs(draw):
    sched = draw(st.sampled_from(CATALOGUE))
    shape = draw(shapes)
    # entries in [-4, 4], the range of the normals they replace
    x0, x1 = draw(_values(shape, -4.0, 4.0)), draw(_values(shape, -4.0, 4.0))
    t_kind = draw(st.sampled_from(["float", "scalar", "batch", "column"]))
    t = draw(_times(shape[0], 0.02, 0.98))
    if t_kind == "float":
        t = float(t[0])
    elif t_kind == "scalar":
        t = np.asarray(t[0])
    elif t_kind == "column":
        t = t.reshape((shape[0],) + (1,) * (len(shape) - 1))
    return sched, x0, x1, t


PATH_FUNCTIONS = ("sample", "target", "velocity", "log_prob", "score", "divergence")


@functools.cache
def _jitted_path_function(fname, sched):
    """One jitted function per (function, schedule): examples reuse its compilations."""
    path = fs.GaussianPath(sched)
    return jax.jit(lambda a, b, t: getattr(fj, fname)(path, a, b, t))


def _path_magnitude(fname, sched, a, x1, t):
    """A running-error scale M: sum of absolute values of the terms of the formula."""
    c = sched(np.reshape(np.asarray(t, dtype=np.float64), (-1,) + (1,) * (a.ndim - 1)))
    al, si, dal, dsi = (np.abs(v) for v in c)
    if fname == "sample":
        return al * np.abs(x1) + si * np.abs(a)
    if fname == "target":
        return dal * np.abs(x1) + dsi * np.abs(a)
    spread = np.abs(a) + al * np.abs(x1)
    if fname == "velocity":
        return dsi / si * spread + dal * np.abs(x1)
    if fname == "score":
        return spread / si**2
    d = a[0].size
    sig = si.reshape(-1)
    if fname == "log_prob":
        sq = np.sum((spread**2).reshape(a.shape[0], -1), axis=1)
        return sq / sig**2 + d * np.abs(np.log(sig)) + d * 2.0
    return d * (dsi / si).reshape(-1)  # divergence


@pytest.mark.parametrize("fname", PATH_FUNCTIONS)
@settings(max_examples=12)
@given(data=path_inputs())
def test_path_functions_match_reference_float64(fname, data):
    sched, a, x1, t = data
    a, x1 = normal_range(a, np.float64), normal_range(x1, np.float64)
    path = fs.GaussianPath(sched)
    expected = getattr(path, fname)(a, x1, t)
    tj = t if isinstance(t, float) else jnp.asarray(t)
    actual = _jitted_path_function(fname, sched)(jnp.asarray(a), jnp.asarray(x1), tj)
    assert actual.dtype == jnp.float64
    # same formula, same coefficients (the core's schedules): a few roundings per
    # operation, amplified by the schedules' exp/log (VP: exponent up to T(1) ~ 10),
    # relative to the running-error scale of the formula.
    tol = 64 * EPS64 * _path_magnitude(fname, sched, a, x1, t)
    _close(actual, expected, tol, fname)


@pytest.mark.parametrize("fname", PATH_FUNCTIONS)
@settings(max_examples=12)
@given(data=path_inputs())
def test_path_functions_float32_within_bound_of_float64(fname, data):
    sched, a, x1, t = data
    a, x1 = normal_range(a, np.float32), normal_range(x1, np.float32)
    # the float64 reference at the float32-rounded inputs isolates the arithmetic error
    a32, x132 = a.astype(np.float32), x1.astype(np.float32)
    t32 = float(np.float32(t)) if isinstance(t, float) else np.asarray(t, dtype=np.float32)
    path = fs.GaussianPath(sched)
    expected = getattr(path, fname)(
        a32.astype(np.float64),
        x132.astype(np.float64),
        t32 if isinstance(t32, float) else t32.astype(np.float64),
    )
    tj = t32 if isinstance(t32, float) else jnp.asarray(t32)
    actual = _jitted_path_function(fname, sched)(jnp.asarray(a32), jnp.asarray(x132), tj)
    assert actual.dtype == jnp.float32
    # float32 arithmetic: relative error eps32 per operation; 64 covers the chained
    # operations and the schedules' amplification (as in float64), in units of the
    # running-error scale. A (B,) t given as float is rounded to float32 inside too.
    tol = 64 * EPS32 * _path_magnitude(fname, sched, a, x1, t)
    _close(actual, expected, tol, fname)


@settings(max_examples=12)
@given(data=path_inputs())
def test_sample_and_target_is_sample_and_target(data):
    sched, x0, x1, t = data
    path = fs.GaussianPath(sched)
    tj = t if isinstance(t, float) else jnp.asarray(t)
    a, b = map(jnp.asarray, (x0, x1))
    x_t, u = fj.sample_and_target(path, a, b, tj)
    # the fused call performs exactly the same operations: bitwise equal
    np.testing.assert_array_equal(_np(x_t), _np(fj.sample(path, a, b, tj)))
    np.testing.assert_array_equal(_np(u), _np(fj.target(path, a, b, tj)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cfm_loss_matches_reference(reduction):
    rng = np.random.default_rng(3)
    v, u = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 3))
    expected = fs.cfm_loss(v, u, reduction=reduction)
    actual = jax.jit(lambda a, b: fj.cfm_loss(a, b, reduction))(jnp.asarray(v), jnp.asarray(u))
    # sum of 6 squares per sample then a mean over 5: ~11 roundings of O(|v-u|^2)
    _close(actual, expected, 16 * EPS64 * (np.max(np.abs(expected)) + 1.0), reduction)


def test_path_functions_trace_under_vmap_and_grad():
    path = fs.GaussianPath(fs.Cosine())
    rng = np.random.default_rng(4)
    x0, x1 = jnp.asarray(rng.normal(size=(4, 3))), jnp.asarray(rng.normal(size=(4, 3)))
    t = jnp.asarray(rng.uniform(0.1, 0.9, size=(4,)))
    # d/dt sample == target (eq. 13), per sample, by forward mode on t
    _, dx = jax.jvp(lambda tt: fj.sample(path, x0, x1, tt), (t,), (jnp.ones_like(t),))
    _close(dx, fj.target(path, x0, x1, t), 8 * EPS64 * 4.0, "d/dt sample")
    # grad_x log_prob == score
    g = jax.grad(lambda x: jnp.sum(fj.log_prob(path, x, x1, t)))(x0)
    _close(g, fj.score(path, x0, x1, t), 16 * EPS64 * (np.max(np.abs(_np(g))) + 1), "score")
    # vmap over a stack of batches equals the loop
    stack = jnp.stack([x0, x1, -x0])
    out = jax.vmap(lambda a: fj.velocity(path, a, x1, t))(stack)
    for k in range(3):
        np.testing.assert_array_equal(_np(out[k]), _np(fj.velocity(path, stack[k], x1, t)))
    # the path divergence (closed form) == trace of the autodiff Jacobian of the velocity
    closed = fj.divergence(path, x0, x1, t)
    auto = fj.divergence(lambda tt, xx: fj.velocity(path, xx, x1, tt), t, x0)
    _close(auto, closed, 64 * EPS64 * (np.max(np.abs(_np(closed))) + 1), "divergence")


# ======================================================================================
# 3. solvers on lax.scan
# ======================================================================================
def _mlp_jax(rng, d, dtype=np.float64):
    w, b = _mlp_params(rng, d)
    return w.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("grid", ["up", "down", "uneven"])
def test_integrate_matches_reference(method, dtype, grid):
    rng = np.random.default_rng(5)
    w, b = _mlp_jax(rng, 3, dtype)
    x0 = rng.normal(size=(4, 3)).astype(dtype)
    grids = {
        "up": np.linspace(0.0, 1.0, 7),
        "down": np.linspace(1.0, 0.0, 7),
        "uneven": np.array([0.0, 0.05, 0.3, 0.31, 0.9, 1.0]),
    }
    expected = fs.integrate(_mlp(w, b), x0, grids[grid], method=method, return_path=True)
    run = jax.jit(
        lambda x, w, b: fj.integrate(_mlp(w, b), x, grids[grid], method=method, return_path=True)
    )
    actual = run(jnp.asarray(x0), jnp.asarray(w), jnp.asarray(b))
    assert actual.shape == (len(grids[grid]), 4, 3) and actual.dtype == dtype
    # identical step times and factors (float64 on the host, rounded once) and the same
    # arithmetic: differences come from tanh/matmul rounding (a few ulps per stage),
    # propagated over <= 6 steps of a 1-Lipschitz-ish field: 256 ulps of the state scale.
    eps = float(np.finfo(dtype).eps)
    _close(actual, expected, 256 * eps * (np.max(np.abs(expected)) + 1), method)


def test_euler_matches_reference_and_times():
    rng = np.random.default_rng(6)
    x0 = rng.normal(size=(3, 2))
    seen = []

    def field(t, x):
        seen.append(t)
        return x * 0.0 + jnp.reshape(t, (-1, 1))

    out = fj.euler(field, jnp.asarray(x0), steps=7, t0=0.1, t1=0.8, return_path=True)
    ref = fs.euler(lambda t, x: x * 0.0 + t[:, None], x0, steps=7, t0=0.1, t1=0.8, return_path=True)
    # t_k = t0 + k h exactly as the core (host float64): x gains sum_k h t_k, identical
    # up to the summation rounding (7 additions)
    _close(out, ref, 8 * EPS64 * (np.max(np.abs(ref)) + 1), "euler")
    assert len(seen) == 1, "one traced step, whatever `steps` is"


def test_scan_compiles_one_step_whatever_the_number_of_steps():
    f = lambda t, x: -x  # noqa: E731
    x0 = jnp.ones((2, 2))
    small = jax.make_jaxpr(lambda x: fj.euler(f, x, steps=3))(x0)
    big = jax.make_jaxpr(lambda x: fj.euler(f, x, steps=3000))(x0)
    assert len(small.eqns) == len(big.eqns)
    assert any(e.primitive.name == "scan" for e in big.eqns)


def test_euler_reverse_mode_through_trajectory_closed_form():
    # v = a x: Euler gives x_n = (1 + a h)^n x0, so d x_n / d a = n h (1 + a h)^(n-1) x0
    n, a = 50, -0.7
    x0 = jnp.asarray([[1.0, -2.0]])
    grad = jax.grad(lambda a: jnp.sum(fj.euler(lambda t, x: a * x, x0, steps=n)))(a)
    h = 1.0 / n
    expected = n * h * (1 + a * h) ** (n - 1) * float(jnp.sum(x0))
    # n multiplications forward and backward: ~2n roundings
    assert abs(float(grad) - expected) <= 4 * n * EPS64 * (abs(expected) + 1)


@pytest.mark.parametrize("method", list(fs.ode.METHODS))
def test_integrate_order_of_accuracy(method):
    # dx/dt = -t x, x(0) = 1 => x(1) = exp(-1/2); fit the slope of log error vs log h
    order = fs.ode.METHODS[method]
    x0 = jnp.ones((1, 1))
    errors, hs = [], []
    for n in (8, 16, 32, 64):
        grid = np.linspace(0.0, 1.0, n + 1)
        x = fj.integrate(lambda t, x: -t[:, None] * x, x0, grid, method=method)
        errors.append(abs(float(x[0, 0]) - math.exp(-0.5)))
        hs.append(1.0 / n)
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    # asymptotic slope equals the order; +-0.3 absorbs the pre-asymptotic regime
    assert abs(slope - order) < 0.3, (method, slope)


def test_integrate_traced_grid_and_grad_wrt_grid():
    x0 = jnp.ones((2, 1))

    @jax.jit
    def final(t1):
        grid = jnp.linspace(0.0, 1.0, 65) * t1
        return jnp.sum(fj.integrate(lambda t, x: -x, x0, grid, method="rk4"))

    # x(t1) = exp(-t1) per sample: d/dt1 sum = -2 exp(-t1); rk4 with h = t1/64 is
    # accurate to ~h^4 ~ 6e-8 relative
    g = jax.grad(final)(0.7)
    assert abs(float(g) + 2 * math.exp(-0.7)) <= 1e-6


# ======================================================================================
# 4. divergence, continuity residual by autodiff
# ======================================================================================
@pytest.mark.parametrize("event", [(3,), (2, 3)], ids=["flat", "image-like"])
def test_exact_divergence_of_linear_field_is_trace(event):
    rng = np.random.default_rng(7)
    d = math.prod(event)
    mats = jnp.asarray(rng.normal(size=(4, d, d)))
    x = jnp.asarray(rng.normal(size=(4, *event)))

    def field(t, x):
        flat = jnp.reshape(x, (4, d))
        return jnp.reshape(jnp.einsum("bij,bj->bi", mats, flat) * (1 + t[:, None]), x.shape)

    t = jnp.asarray([0.0, 0.25, 0.5, 1.0])
    div = jax.jit(lambda t, x: fj.divergence(field, t, x))(t, x)
    expected = np.trace(_np(mats), axis1=1, axis2=2) * (1 + _np(t))
    _close(div, expected, 8 * d * EPS64 * (np.abs(expected) + d), "trace")


def test_hutchinson_is_exact_for_diagonal_jacobian():
    x = jnp.asarray(np.random.default_rng(8).normal(size=(5, 4)))
    f = lambda t, x: jnp.sin(x) * t[:, None]  # noqa: E731
    exact = fj.divergence(f, 0.3, x)
    hutch = fj.divergence(f, 0.3, x, method="hutchinson", key=jax.random.key(0))
    # z_i^2 = 1 for Rademacher probes: the estimator equals the trace for a diagonal J
    _close(hutch, exact, 8 * EPS64 * 4, "diagonal")


def test_hutchinson_converges_to_exact_within_hoeffding_bound():
    rng = np.random.default_rng(9)
    w, b = _mlp_params(rng, 4)
    field = _mlp(jnp.asarray(w), jnp.asarray(b))
    x = jnp.asarray(rng.normal(size=(3, 4)))
    t = 0.4
    exact = _np(jax.jit(lambda x: fj.divergence(field, t, x))(x))
    jac = _np(jax.jit(jax.vmap(jax.jacfwd(lambda xi: field(jnp.full((1,), t), xi[None])[0])))(x))
    # z^T J z - tr J = sum_{i<j} (J_ij + J_ji) z_i z_j, bounded by R = sum_{i<j} |J_ij + J_ji|;
    # Hoeffding: P(|mean_K - tr| >= eps) <= 2 exp(-K eps^2 / (2 R^2)); we take the eps
    # whose false-failure probability is 1e-9 per sample (the key is fixed, so the test
    # is deterministic; the bound states how unlikely a failing key is).
    sym = np.abs(jac + np.swapaxes(jac, 1, 2))
    radius = np.triu(sym, k=1).sum(axis=(1, 2))
    errors = []
    for k in (16, 256, 4096):
        est = _np(
            jax.jit(
                lambda x, key, k=k: fj.divergence(
                    field, t, x, method="hutchinson", key=key, n_probes=k
                )
            )(x, jax.random.key(k))
        )
        bound = radius * math.sqrt(2 * math.log(2 / 1e-9) / k)
        assert np.all(np.abs(est - exact) <= bound), (k, est, exact, bound)
        errors.append(np.max(np.abs(est - exact) / radius))
    # and the bound itself shrinks like 1/sqrt(K): 4096 probes are 16x tighter than 16
    assert errors[-1] <= radius.max() * math.sqrt(2 * math.log(2 / 1e-9) / 4096)


@functools.cache
def _continuity_terms(sched):
    """Jitted (residual, |d_t log p| + |div u| + |u . grad log p|) of a conditional path."""
    path = fs.GaussianPath(sched)

    def run(x1, t, x):
        def lp(tt, xx):
            return fj.log_prob(path, xx, x1, tt)

        def u(tt, xx):
            return fj.velocity(path, xx, x1, tt)

        res = fj.continuity_residual(lp, u, t, x)
        _, dt = jax.jvp(lambda tt: lp(tt, x), (t,), (jnp.ones_like(t),))
        grad = jax.grad(lambda xx: jnp.sum(lp(t, xx)))(x)
        transport = jnp.sum(jnp.reshape(u(t, x) * grad, (x.shape[0], -1)), axis=1)
        terms = jnp.abs(dt) + jnp.abs(fj.divergence(path, x, x1, t)) + jnp.abs(transport)
        return res, terms

    return jax.jit(run)


@settings(max_examples=10)
@given(shape=st.sampled_from([(3, 2), (2, 2, 2)]), case=st.data())
def test_continuity_residual_by_autodiff_vanishes_for_conditional_paths(schedule, shape, case):
    x1 = jnp.asarray(case.draw(_values(shape, -4.0, 4.0)))
    x = jnp.asarray(case.draw(_values(shape, -4.0, 4.0)))
    t = jnp.asarray(case.draw(_times(shape[0], 0.05, 0.95)))
    res, terms = map(_np, _continuity_terms(schedule)(x1, t, x))
    # autodiff is exact: the residual is rounding only, relative to the size of the three
    # terms it cancels (|d_t log p| + |div u| + |u . grad log p|); 256 ulps of that
    assert np.all(np.abs(res) <= 256 * EPS64 * (terms + 1)), (res, terms)


def test_continuity_residual_detects_a_wrong_field():
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    x1, x = jnp.ones((2, 2)), jnp.zeros((2, 2))
    res = fj.continuity_residual(
        lambda t, x: fj.log_prob(path, x, x1, t),
        lambda t, x: 1.1 * fj.velocity(path, x, x1, t),
        0.5,
        x,
    )
    ref = fs.continuity_residual(
        lambda t, x: path.log_prob(x, np.ones((2, 2)), t),
        lambda t, x: 1.1 * path.velocity(x, np.ones((2, 2)), t),
        0.5,
        np.zeros((2, 2)),
    )
    assert np.all(np.abs(_np(res)) > 0.1)
    # the reference's central differences carry O(eps^(2/3)) error per term
    _close(res, ref, 1e3 * EPS64 ** (2 / 3) * (np.abs(ref) + 1), "wrong field")


# ======================================================================================
# 5. log-likelihood
# ======================================================================================
def _std_normal_log_prob(x):
    flat = jnp.reshape(x, (x.shape[0], -1))
    return -0.5 * jnp.sum(flat * flat, axis=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


@pytest.mark.parametrize("div", ["exact", "hutchinson", "callable"])
def test_log_likelihood_linear_field_closed_form(div):
    # v = a x: x(0) = x1 exp(-a), int_0^1 div v dt = a d  =>  log p1 = log p0(x1 e^-a) - a d
    a = 0.8
    x1 = jnp.asarray(np.random.default_rng(10).normal(size=(4, 3)))
    kw = {"key": jax.random.key(1)} if div == "hutchinson" else {}
    divergence = (lambda t, x: jnp.full((x.shape[0],), 3 * a)) if div == "callable" else div
    grid = np.linspace(1.0, 0.0, 41)
    lp = jax.jit(
        lambda x: fj.log_likelihood(
            lambda t, x: a * x, x, _std_normal_log_prob, grid, "rk4", divergence, **kw
        )
    )(x1)
    expected = _std_normal_log_prob(x1 * math.exp(-a)) - a * 3
    # rk4, h = 1/40: global error ~ h^4 |x| ~ 4e-7 relative to |log p0|
    _close(lp, expected, 1e-6 * (np.abs(_np(expected)) + 1), div)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_log_likelihood_of_single_point_marginal_matches_log_prob(method):
    # q = delta_{x*}: the conditional path IS the marginal, and its velocity the marginal
    # field; integrating from t = 1 to 0 must reproduce log p_1 = log N(x | x*, s_min^2 I)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.2))
    star = jnp.asarray([[0.5, -1.0]])
    x = jnp.asarray(np.random.default_rng(11).normal(size=(5, 2)) * 0.3 + _np(star))
    field = lambda t, x: fj.velocity(path, x, jnp.broadcast_to(star, x.shape), t)  # noqa: E731
    expected = _np(fj.log_prob(path, x, jnp.broadcast_to(star, x.shape), 1.0))
    errs = []
    for n in (16, 64):
        lp = fj.log_likelihood(field, x, _std_normal_log_prob, np.linspace(1.0, 0.0, n + 1), method)
        errs.append(np.max(np.abs(_np(lp) - expected)))
    order = fs.ode.METHODS[method]
    # 4x more steps cut the error by ~4^order (we require at least 4^order / 2): the
    # error is the solver's, converging to 0 at the method's order
    assert errs[1] <= errs[0] / (4**order / 2), errs
    if order == 4:
        # rk4 with h = 1/64: error ~ h^4 ~ 6e-8 relative to |log p|
        assert errs[1] <= 1e-6 * (np.max(np.abs(expected)) + 1), errs


def test_log_likelihood_grad_matches_finite_differences():
    x1 = jnp.asarray(np.random.default_rng(12).normal(size=(3, 2)))
    grid = np.linspace(1.0, 0.0, 17)

    def nll(a):
        field = lambda t, x: jnp.tanh(a * x) - 0.3 * x  # noqa: E731
        return -jnp.mean(fj.log_likelihood(field, x1, _std_normal_log_prob, grid, "heun"))

    g = float(jax.jit(jax.grad(nll))(0.9))
    h = EPS64 ** (1 / 3)
    fd = (float(nll(0.9 + h)) - float(nll(0.9 - h))) / (2 * h)
    # central difference error ~ eps^(2/3) times the function's scale (O(1)); x100 margin
    assert abs(g - fd) <= 100 * EPS64 ** (2 / 3) * (abs(fd) + 1), (g, fd)


def test_log_likelihood_hutchinson_is_unbiased():
    rng = np.random.default_rng(13)
    w, b = _mlp_params(rng, 3)
    field = _mlp(jnp.asarray(w), jnp.asarray(b))
    x1 = jnp.asarray(rng.normal(size=(2, 3)))
    grid = np.linspace(1.0, 0.0, 9)
    exact = _np(fj.log_likelihood(field, x1, _std_normal_log_prob, grid, "euler", "exact"))
    keys = jax.random.split(jax.random.key(2), 400)
    ests = _np(
        jax.vmap(
            lambda k: fj.log_likelihood(
                field, x1, _std_normal_log_prob, grid, "euler", "hutchinson", key=k
            )
        )(keys)
    )
    # 400 independent estimates: the mean is within 6 standard errors of the exact value
    # (normal approximation, two-sided false-failure probability ~2e-9 per sample)
    se = ests.std(axis=0, ddof=1) / math.sqrt(len(keys))
    assert np.all(np.abs(ests.mean(axis=0) - exact) <= 6 * se + 8 * EPS64), (exact, se)


# ======================================================================================
# 6. random helpers and validation
# ======================================================================================
def test_random_helpers():
    like = jnp.zeros((2000, 3), dtype=jnp.float32)
    t = fj.sample_time(jax.random.key(0), like, low=0.1, high=0.9)
    assert t.shape == (2000,) and t.dtype == jnp.float32
    assert float(t.min()) >= 0.1 and float(t.max()) < 0.9
    # mean of U(0.1, 0.9) is 0.5 with sd 0.8/sqrt(12)/sqrt(2000) ~ 5.2e-3: 6 sd
    assert abs(float(t.mean()) - 0.5) <= 6 * 0.8 / math.sqrt(12 * 2000)
    np.testing.assert_array_equal(
        _np(t), _np(fj.sample_time(jax.random.key(0), like, low=0.1, high=0.9))
    )
    assert fj.sample_time(jax.random.key(0), 5, dtype=jnp.float64).dtype == jnp.float64
    z = fj.sample_noise(jax.random.key(1), like)
    assert z.shape == like.shape and z.dtype == jnp.float32
    # 6000 standard normals: mean within 6/sqrt(6000), variance within 6 sqrt(2/6000)
    assert abs(float(z.mean())) <= 6 / math.sqrt(6000)
    assert abs(float(z.var()) - 1) <= 6 * math.sqrt(2 / 6000)


def test_validation_errors_name_the_argument():
    path = fs.GaussianPath(fs.CondOT())
    x = jnp.zeros((2, 2))
    with pytest.raises(TypeError, match="`x1`"):
        fj.sample(path, x, np.zeros((2, 2)), 0.5)
    with pytest.raises(TypeError, match="`x1`"):
        fj.sample(path, x, jnp.zeros((2, 2), dtype=jnp.float32), 0.5)
    with pytest.raises(ValueError, match="`t`"):
        fj.sample(path, x, x, 1.5)
    with pytest.raises(ValueError, match="`t`"):
        fj.sample(path, x, x, jnp.zeros((3,)))
    with pytest.raises(TypeError, match="`path`"):
        fj.sample(fs.CondOT(), x, x, 0.5)
    with pytest.raises(ValueError, match="`steps`"):
        fj.euler(lambda t, x: x, x, steps=0)
    with pytest.raises(ValueError, match="`method`"):
        fj.integrate(lambda t, x: x, x, [0.0, 1.0], method="dopri5")
    with pytest.raises(ValueError, match="`time_grid`"):
        fj.integrate(lambda t, x: x, x, [0.0, 0.5, 0.2])
    with pytest.raises(TypeError, match="field"):
        fj.euler(lambda t, x: x[:, :1], x, steps=2)
    with pytest.raises(TypeError, match="`key`"):
        fj.divergence(lambda t, x: x, 0.5, x, method="hutchinson")
    with pytest.raises(ValueError, match="`n_probes`"):
        fj.divergence(
            lambda t, x: x, 0.5, x, method="hutchinson", key=jax.random.key(0), n_probes=0
        )
    with pytest.raises(ValueError, match="`time_grid`"):
        fj.log_likelihood(lambda t, x: x, x, _std_normal_log_prob, [0.0, 1.0])
    with pytest.raises(ValueError, match="`divergence`"):
        fj.log_likelihood(lambda t, x: x, x, _std_normal_log_prob, [1.0, 0.0], divergence="fd")
    with pytest.raises(ValueError, match="`low`"):
        fj.sample_time(jax.random.key(0), x, low=0.5, high=0.5)


def test_backend_is_registered():
    assert "jax" in fs.backends.available()
    assert fs.backends.get("jax") is fj


# ======================================================================================
# 7. the exact marginal (EmpiricalMarginal) through the backend
# ======================================================================================
@functools.cache
def _marginal_continuity(sched):
    path = fs.GaussianPath(sched)

    def run(data, t, x):
        m = fs.EmpiricalMarginal(path, data)
        res = fj.continuity_residual(
            lambda tt, xx: m.log_prob(xx, tt), lambda tt, xx: m.velocity(xx, tt), t, x
        )
        _, dt = jax.jvp(lambda tt: m.log_prob(x, tt), (t,), (jnp.ones_like(t),))
        transport = jnp.sum(jnp.reshape(m.velocity(x, t) * m.score(x, t), (x.shape[0], -1)), axis=1)
        return res, jnp.abs(dt) + jnp.abs(m.divergence(x, t)) + jnp.abs(transport)

    return jax.jit(run)


@settings(max_examples=5)
@given(data=_values((4, 2), -4.0, 4.0), x=_values((3, 2), -4.0, 4.0), t=_times(3, 0.05, 0.95))
def test_continuity_residual_by_autodiff_vanishes_for_empirical_marginal(schedule, data, x, t):
    # Theorem 1 by autodiff: the exact marginal pair (eq. 6, 8) satisfies the continuity
    # equation, so the residual is rounding only
    data, x, t = jnp.asarray(data), jnp.asarray(x), jnp.asarray(t)
    res, terms = map(_np, _marginal_continuity(schedule)(data, t, x))
    # relative to the terms it cancels; the marginal's log-sum-exp adds a few roundings
    # per data point (4 here), hence 1024 ulps rather than 256
    assert np.all(np.abs(res) <= 1024 * EPS64 * (terms + 1)), (res, terms)


def test_marginal_divergence_closed_form_equals_autodiff():
    rng = np.random.default_rng(14)
    m = fs.EmpiricalMarginal(
        fs.GaussianPath(fs.VariancePreserving()), jnp.asarray(rng.normal(size=(6, 2, 2)))
    )
    x, t = jnp.asarray(rng.normal(size=(3, 2, 2))), jnp.asarray([0.2, 0.5, 0.8])
    auto = jax.jit(lambda x, t: fj.divergence(lambda tt, xx: m.velocity(xx, tt), t, x))(x, t)
    closed = m.divergence(x, t)
    _close(auto, closed, 1024 * EPS64 * (np.abs(_np(closed)) + 1), "marginal divergence")


@pytest.mark.parametrize(
    ("schedule", "divergence", "t_a"),
    # t_a: where the marginal is not too stiff for rk4 at h = t_a / 16 (VE: sigma_t is
    # 0.89 at t = 0.5 but 0.025 at 0.9, where random x would sit ~40 sigma from the
    # data; Cosine: sigma_t is 0.59 at 0.6 but 0.16 at 0.9)
    [
        (fs.CondOT(sigma_min=0.2), "exact", 0.9),
        (fs.VarianceExploding(), "exact", 0.5),
        (fs.Cosine(), "closed", 0.6),
    ],
    ids=lambda v: repr(v) if isinstance(v, fs.Schedule) else None,
)
def test_log_likelihood_of_exact_marginal_reproduces_log_prob(schedule, divergence, t_a):
    # the exact marginal field transports p_0 to p_t, so integrating the instantaneous
    # change of variables from t_a down to 0 must give EmpiricalMarginal.log_prob(x, t_a)
    # up to the solver's error, which falls at rk4's order with the number of steps
    rng = np.random.default_rng(15)
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), jnp.asarray(rng.normal(size=(4, 2))))
    x = jnp.asarray(rng.normal(size=(5, 2)))
    # log p_0 of the marginal itself (VE and VP start near, not at, N(0, I))
    log_p0 = lambda x0: m.log_prob(x0, 0.0)  # noqa: E731
    field = lambda t, x: m.velocity(x, t)  # noqa: E731
    div = (lambda t, x: m.divergence(x, t)) if divergence == "closed" else divergence
    run = jax.jit(
        lambda x, n: fj.log_likelihood(field, x, log_p0, jnp.linspace(t_a, 0.0, n + 1), "rk4", div),
        static_argnums=1,
    )
    expected = _np(m.log_prob(x, t_a))
    errs = [np.max(np.abs(_np(run(x, n)) - expected)) for n in (16, 64)]
    # 4x more steps: rk4 error down by ~4^4 (we require 4^4 / 4, allowing pre-asymptotic
    # behaviour); the finest error is small against |log p|
    assert errs[1] <= errs[0] / 64 or errs[1] <= 1e3 * EPS64 * np.max(np.abs(expected)), errs
    assert errs[1] <= 1e-5 * (np.max(np.abs(expected)) + 1), errs


def test_log_likelihood_matches_reference_with_the_same_divergence():
    rng = np.random.default_rng(16)
    data = rng.normal(size=(4, 3))
    grid = np.linspace(1.0, 0.0, 9)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.1))
    x1 = rng.normal(size=(5, 3))
    results = []
    for xp_data, xp_x1, lib in ((data, x1, np), (jnp.asarray(data), jnp.asarray(x1), jnp)):
        m = fs.EmpiricalMarginal(path, xp_data)
        log_p0 = lambda x, lib=lib: -0.5 * lib.sum(x * x, axis=1) - 1.5 * math.log(2 * math.pi)  # noqa: E731
        fn = fs.log_likelihood if lib is np else fj.log_likelihood
        results.append(
            fn(
                lambda t, x, m=m: m.velocity(x, t),
                xp_x1,
                log_p0,
                grid,
                "rk4",
                lambda t, x, m=m: m.divergence(x, t),
            )
        )
    # same augmented system, same step times, same arithmetic: rounding only, ~8 steps
    # x 4 stages x a few ulps of the marginal's evaluation
    _close(results[1], results[0], 1024 * EPS64 * (np.abs(results[0]) + 1), "reference")
