"""The torch and JAX backends' coupled-path training step and entropic pairs, against the core."""

from __future__ import annotations

import numpy as np
import pytest

import flowspec as fs
from flowspec import couplings as C
from flowspec.coupled_paths import BrownianBridgeNoise, ConstantNoise, CoupledPath, NoNoise

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)

PATHS = [
    CoupledPath(fs.CondOT(), NoNoise()),
    CoupledPath(fs.CondOT(), ConstantNoise(0.1)),
    CoupledPath(fs.CondOT(sigma_min=0.1), BrownianBridgeNoise(1.0)),
    CoupledPath(fs.Cosine(), ConstantNoise(0.3)),
    CoupledPath(fs.VariancePreserving(), BrownianBridgeNoise(0.5)),
]


def _inputs(shape=(5, 3, 2)):
    rng = np.random.default_rng(0)
    x0, x1, eps = (rng.standard_normal(shape) for _ in range(3))
    t = np.array([0.0, 0.1, 0.5, 0.9, 1.0])[: shape[0]]
    return x0, x1, eps, t


def _bound(path, x0, x1, eps, t, unit):
    # a sum of three products: a few ulps of the sum of the terms' magnitudes, with
    # the coefficients themselves (transcendental in t) good to a few ulps each
    c = path.schedule(t)
    n = path.noise(t)
    col = (t.shape[0],) + (1,) * (x0.ndim - 1)
    with np.errstate(all="ignore"):
        terms_x = sum(
            np.abs(np.reshape(a, col) * b)
            for a, b in ((c.alpha, x1), (c.sigma, x0), (n.gamma, eps))
        )
        terms_u = sum(
            np.abs(np.reshape(a, col) * b)
            for a, b in ((c.d_alpha, x1), (c.d_sigma, x0), (n.d_gamma, eps))
        )
    return 16 * unit * terms_x, 16 * unit * terms_u


def _interior(path, t):
    # the bridge's d_gamma is infinite at t = 0 and 1, VP's d_sigma at t = 1
    bad = set(path.noise.divergent_at) | set(path.schedule.divergent_at)
    return np.array([s not in bad for s in t])


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_torch_coupled_sample_and_target(path):
    torch = pytest.importorskip("torch")
    fst = fs.backends.get("torch")
    x0, x1, eps, t = _inputs()
    with np.errstate(all="ignore"):
        want_x, want_u = path.sample_and_target(x0, x1, eps, t)
    ok = _interior(path, t)
    for dtype, unit in ((torch.float64, EPS64), (torch.float32, EPS32)):
        args = [torch.from_numpy(a).to(dtype) for a in (x0, x1, eps, t)]
        got_x, got_u = fst.coupled_sample_and_target(path, *args)
        assert got_x.dtype == dtype and got_u.dtype == dtype
        # float32 inputs are the rounded float64 ones: their rounding adds 1 ulp per term
        bx, bu = _bound(path, x0, x1, eps, t, unit)
        assert np.all(np.abs(got_x.double().numpy() - want_x)[ok] <= bx[ok])
        assert np.all(np.abs(got_u.double().numpy() - want_u)[ok] <= bu[ok])
        for a in args[:3]:
            assert got_x.data_ptr() != a.data_ptr() and got_u.data_ptr() != a.data_ptr()


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_jax_coupled_sample_and_target_under_jit(path):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    fj = fs.backends.get("jax")
    x0, x1, eps, t = _inputs()
    with np.errstate(all="ignore"):
        want_x, want_u = path.sample_and_target(x0, x1, eps, t)
    ok = _interior(path, t)
    step = jax.jit(lambda a, b, e, s: fj.coupled_sample_and_target(path, a, b, e, s))
    got_x, got_u = step(*(jnp.asarray(a) for a in (x0, x1, eps, t)))
    bx, bu = _bound(path, x0, x1, eps, t, EPS64)
    assert np.all(np.abs(np.asarray(got_x) - want_x)[ok] <= bx[ok])
    assert np.all(np.abs(np.asarray(got_u) - want_u)[ok] <= bu[ok])


def test_backends_reject_a_gaussian_path():
    torch = pytest.importorskip("torch")
    fst = fs.backends.get("torch")
    x = torch.zeros(2, 2)
    with pytest.raises(TypeError, match="`path`"):
        fst.coupled_sample_and_target(fs.GaussianPath(fs.CondOT()), x, x, x, 0.5)
    with pytest.raises(ValueError, match="`eps`"):
        fst.coupled_sample_and_target(PATHS[1], x, x, torch.zeros(2, 3), 0.5)


def test_torch_entropic_pairs_follow_the_generator():
    torch = pytest.importorskip("torch")
    pytest.importorskip("scipy")
    fst = fs.backends.get("torch")
    rng = np.random.default_rng(1)
    x0, x1 = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    a0, a1 = torch.from_numpy(x0), torch.from_numpy(x1)
    got = fst.entropic_pairs(a0, a1, 0.5, generator=torch.Generator().manual_seed(3))
    u = torch.rand(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = C.entropic_pairs(x0, x1, 0.5, u.numpy())
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    np.testing.assert_array_equal(got[1].numpy(), want[1])


@pytest.fixture
def jax_x64():
    """JAX with 64-bit types, and its flowspec backend."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax, fs.backends.get("jax")


def test_jax_entropic_pairs_follow_the_key(jax_x64):
    jax, fj = jax_x64
    rng = np.random.default_rng(2)
    x0, x1 = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    key = jax.random.key(4)
    # eager JAX dispatches each op: few iterations (a large reg, no warm start)
    opts = {"scaling_stages": 0, "tol": 1e-6}
    got = fj.entropic_pairs(key, jax.numpy.asarray(x0), jax.numpy.asarray(x1), 3.0, **opts)
    u = np.asarray(jax.random.uniform(key, (6,), dtype=jax.numpy.float64))
    want = C.entropic_pairs(x0, x1, 3.0, u, **opts)
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])


@pytest.mark.parametrize("stages,check_every", [(0, 7), (3, 4)])
def test_jax_sinkhorn_while_loop_stops_where_the_core_does(jax_x64, stages, check_every):
    jax, fj = jax_x64
    rng = np.random.default_rng(5)
    x0, x1 = rng.standard_normal((12, 2)), rng.standard_normal((9, 2)) + 0.5
    opts = {"tol": 1e-10, "max_iter": 5000, "check_every": check_every, "scaling_stages": stages}
    got = jax.jit(lambda a, b: fj.sinkhorn(a, b, 0.3, **opts))(x0, x1)
    want = C.sinkhorn(x0, x1, 0.3, **opts)
    # the same iterates (log domain here, stabilised scaling in the core) and the same
    # stopping rule: the same iteration count, plans equal to rounding (potentials ~
    # eps max C / reg absolute, the plan that relative; a factor 8 of margin)
    assert int(got.iterations) == want.iterations
    assert float(got.error) <= 1e-10
    cost = C.cost_matrix(x0, x1)
    bound = 8 * EPS64 * (1 + cost.max() / 0.3) * want.plan.max()
    assert np.abs(np.asarray(got.plan) - want.plan).max() <= bound
    # tol=None is the core's fixed number of iterations
    fixed = jax.jit(lambda a, b: fj.sinkhorn(a, b, 0.3, tol=None, max_iter=9))(x0, x1)
    assert int(fixed.iterations) == 9 + 8 * 10


def test_jax_sinkhorn_fails_loudly_under_jit(jax_x64):
    jax, fj = jax_x64
    rng = np.random.default_rng(6)
    x0, x1 = (
        jax.numpy.asarray(rng.standard_normal((6, 2))),
        jax.numpy.asarray(rng.standard_normal((6, 2))),
    )
    opts = {"tol": 1e-12, "max_iter": 3, "scaling_stages": 0}
    with pytest.raises(RuntimeError, match=r"did not converge.*max_iter=3"):
        fj.sinkhorn(x0, x1, 0.01, **opts)  # eager: raised at once
    jitted = jax.jit(lambda a, b: fj.sinkhorn(a, b, 0.01, **opts).plan)
    with pytest.raises(Exception, match=r"did not converge.*max_iter=3"):  # JAX's wrapper
        jitted(x0, x1).block_until_ready()
    warned = jax.jit(lambda a, b: fj.sinkhorn(a, b, 0.01, on_failure="warn", **opts))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = warned(x0, x1)
        jax.effects_barrier()
    assert int(res.iterations) == 3 and float(res.error) > 1e-12
    with pytest.raises(ValueError, match="`tol`"):
        fj.sinkhorn(x0, x1, 0.1, tol=0.0)


def test_jax_entropic_pairs_under_jit_with_a_tol(jax_x64):
    jax, fj = jax_x64
    rng = np.random.default_rng(7)
    x0, x1 = rng.standard_normal((8, 2)), rng.standard_normal((8, 2))
    key = jax.random.key(1)
    got = jax.jit(lambda k, a, b: fj.entropic_pairs(k, a, b, 0.5, tol=1e-9))(key, x0, x1)
    u = np.asarray(jax.random.uniform(key, (8,), dtype=jax.numpy.float64))
    want = C.entropic_pairs(x0, x1, 0.5, u, tol=1e-9)
    np.testing.assert_array_equal(np.asarray(got[0]), want[0])
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])
