"""The JAX exact marginal: fused scan on one device, shard_map over 8 host devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import time_range
from test_marginal import conditioning, naive

import flowspec as fs

jax = pytest.importorskip("jax", reason="the JAX backend needs jax")
jnp = pytest.importorskip("jax.numpy")

HERE = Path(__file__).parent
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def fj():
    jax.config.update("jax_enable_x64", True)
    return fs.backends.get("jax")


def test_fused_marginal_equals_the_numpy_reference(fj, schedule):
    rng = np.random.default_rng(7)
    data = rng.normal(size=(53, 2, 2)) + 1.0
    x = rng.normal(size=(5, 2, 2)) * 1.5
    t = np.linspace(*time_range(schedule), 5)
    path = fs.GaussianPath(schedule)
    weights = rng.uniform(0.1, 1.0, size=53)
    ref, a, s, y = naive(schedule, data, x, t, weights=weights)
    # the error model of tests/test_marginal.py: absolute log-weight error of a few
    # eps * k, inherited with the gains of each quantity
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
    f = jax.jit(lambda d, w, x, t: fj.marginal(path, d, x, t, names, weights=w, block_size=8))
    outs = f(jnp.asarray(data), jnp.asarray(weights), jnp.asarray(x), jnp.asarray(t))
    for q, out in zip(names, outs, strict=True):
        tol = (gains[q] * err)[:, None] + 8 * EPS64 * np.abs(ref[q].reshape(5, -1))
        got = np.asarray(out).reshape(5, -1)
        assert np.all(np.abs(got - ref[q].reshape(5, -1)) <= 2 * tol), q


GUARD_SCHEDULE = fs.CondOT(sigma_min=1e-3)


@pytest.fixture(scope="module")
def guard_denoise(fj):
    """One compiled kernel for every t (t is traced)."""
    path = fs.GaussianPath(GUARD_SCHEDULE)
    return jax.jit(lambda d, x, t: fj.marginal(path, d, x, t, "denoise", block_size=32))


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7, 0.9, 0.99])
def test_fused_float32_keeps_the_guard(guard_denoise, t):
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(200, 8)) * 3 + 10).astype(np.float32)
    schedule = GUARD_SCHEDULE
    c = schedule(np.float64(t))
    x = (c.alpha * data[:6] + c.sigma * rng.normal(size=(6, 8))).astype(np.float32)
    out = np.asarray(guard_denoise(jnp.asarray(data), jnp.asarray(x), jnp.float32(t)))
    ref, a, s, y = naive(schedule, data.astype(np.float64), x.astype(np.float64), t)
    err = 64 * EPS32 * conditioning(x.astype(np.float64), a, s, y) * (1 + np.abs(y).max())
    assert np.all(
        np.abs(out - ref["denoise"]) <= err[:, None] + 16 * EPS32 * np.abs(ref["denoise"])
    )


@pytest.mark.parametrize("capacity", [1, 4])
@pytest.mark.parametrize("hard", ["diffuse", "pairs"])
def test_the_few_rows_that_overflow_are_recomputed_alone(fj, capacity, hard):
    # 14 of 16 rows near a data point at t = 0.99 (a band of one point) and two hard
    # ones: at t = 0.2 (every point of a block in the band) or near a point given twice
    # (a band of two): at most an eighth of the rows overflow, so only they take the
    # next capacity, and the exact path where they overflow that too
    rng = np.random.default_rng(5)
    schedule = fs.CondOT(sigma_min=1e-3)
    data = rng.normal(size=(64, 3))
    data[2] = data[1]
    t = np.array([0.2 if hard == "diffuse" else 0.99] * 2 + [0.99] * 14)
    c = schedule(t)
    x = c.alpha[:, None] * data[:16] + c.sigma[:, None] * rng.normal(size=(16, 3)) * 1e-3
    ref, a, s, y = naive(schedule, data, x, t)
    path = fs.GaussianPath(schedule)
    f = jax.jit(
        lambda d, q, tt: fj.marginal(
            path, d, q, tt, "denoise", block_size=32, band_capacity=capacity
        )
    )
    out = np.asarray(f(jnp.asarray(data), jnp.asarray(x), jnp.asarray(t)))
    err = 64 * EPS64 * conditioning(x, a, s, y) * (1 + np.abs(y).max())
    assert np.all(np.abs(out - ref["denoise"]) <= err[:, None] + 8 * EPS64 * np.abs(ref["denoise"]))


@pytest.mark.parametrize("tolerance", [1e-6, 1e-3])
def test_a_tolerance_bounds_the_error_of_every_weight(fj, tolerance):
    # as for torch (tests/test_torch_marginal.py): the posterior mean errs by at most
    # 2 N tolerance times the data's span beyond the float32 error model
    rng = np.random.default_rng(6)
    data = (rng.normal(size=(96, 8)) * 3 + 10).astype(np.float32)
    schedule = fs.CondOT(sigma_min=1e-3)
    t = np.array([0.3, 0.5, 0.7, 0.9, 0.99, 0.3]).astype(np.float32)
    c = schedule(t.astype(np.float64))
    x = (c.alpha[:, None] * data[:6] + c.sigma[:, None] * rng.normal(size=(6, 8))).astype(
        np.float32
    )
    path = fs.GaussianPath(schedule)
    f = jax.jit(
        lambda d, q, tt: fj.marginal(path, d, q, tt, "denoise", block_size=32, tolerance=tolerance)
    )
    out = np.asarray(f(jnp.asarray(data), jnp.asarray(x), jnp.asarray(t)))
    t64 = t.astype(np.float64)
    ref, a, s, y = naive(schedule, data.astype(np.float64), x.astype(np.float64), t64)
    span = 1 + np.abs(y).max()
    err = 64 * EPS32 * conditioning(x.astype(np.float64), a, s, y) * span
    bound = err[:, None] + 2 * 96 * tolerance * span + 16 * EPS32 * np.abs(ref["denoise"])
    assert np.all(np.abs(out - ref["denoise"]) <= bound)


def test_validation(fj):
    path = fs.GaussianPath(fs.CondOT())
    data, x = jnp.zeros((4, 2)), jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="`quantity`"):
        fj.marginal(path, data, x, 0.5, "speed")
    with pytest.raises(ValueError, match="`quantity`"):
        fj.marginal(path, data, x, 0.5, ("velocity", "speed"))
    with pytest.raises(ValueError, match="`data`"):
        fj.marginal(path, jnp.zeros((4, 3)), x, 0.5)
    with pytest.raises(ValueError, match="`block_size`"):
        fj.marginal(path, data, x, 0.5, block_size=0)
    with pytest.raises(ValueError, match="`band_capacity`"):
        fj.marginal(path, data, x, 0.5, band_capacity=0)
    with pytest.raises(ValueError, match="`tolerance`"):
        fj.marginal(path, data, x, 0.5, tolerance=2.0)
    with pytest.raises(TypeError, match="`x`"):
        fj.marginal(path, data, np.zeros((3, 2)), 0.5)


def test_sharded_marginal_matches_one_device_on_8_host_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = str(HERE.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(HERE / "jax_marginal_sharding_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK"), proc.stdout
