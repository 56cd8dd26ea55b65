"""torch and JAX for flowspec.riemannian: sources, autodiff divergences, likelihood, jit/vmap/grad.

Error model: autodiff computes the same quantities as the closed forms up to a few
eps of O(10) intermediates; the likelihood is an rk4 integration with 16 steps, whose
error C h^4 was measured (1.6e-5 on the sphere) and is bounded by 5e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from riemannian_cases import IDS, MANIFOLDS, points, tangent

import flowspec as fs
from flowspec.riemannian import GeodesicPath, Sphere, riemannian_cfm_loss

EPS64 = np.finfo(np.float64).eps
T_END = 0.8


def _rescaled(path, x1):
    """v(t, x) = T u_{T t}(x | x1): its flow maps p_0 to p_T(. | x1) over t in [0, 1]."""
    return lambda t, x: T_END * path.velocity(x, x1, T_END * t)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_torch_source_is_on_the_manifold_and_reproducible(torch, m):
    from flowspec.backends.torch import riemannian_source

    a = riemannian_source(m, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = riemannian_source(m, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(a, b) and a.shape == (8, *m.event_shape)
    assert float(m.constraint_violation(a).max()) <= 64 * EPS64 * float(1 + (a * a).sum(-1).max())


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_jax_source_is_on_the_manifold_under_jit(jax, m):
    from flowspec.backends.jax import riemannian_source

    f = jax.jit(riemannian_source, static_argnums=(0, 2))
    a = f(m, jax.random.key(1), 8)
    assert a.shape == (8, *m.event_shape) and a.dtype == jax.numpy.float64
    assert float(m.constraint_violation(a).max()) <= 64 * EPS64 * float(1 + (a * a).sum(-1).max())


def test_torch_and_jax_divergences_agree(torch, jax):
    """The same trace tr(P_x J) by torch.func.jvp and by jax.jvp (the closed-form check of
    the divergence is the continuity equation in test_riemannian_paths.py)."""
    from flowspec.backends.jax import riemannian_divergence as jdiv
    from flowspec.backends.torch import riemannian_divergence as tdiv

    jnp = jax.numpy
    m = Sphere(2)
    rng = np.random.default_rng(0)
    x1 = points(m, rng, 6)
    x = m.expmap(x1, tangent(m, x1, rng, 0.7))
    t = rng.uniform(0.1, 0.8, size=6)
    path = GeodesicPath(m, fs.Cosine())
    dt_ = tdiv(
        m, lambda s, y: path.velocity(y, torch.tensor(x1), s), torch.tensor(t), torch.tensor(x)
    )
    dj = jdiv(m, lambda s, y: path.velocity(y, jnp.asarray(x1), s), jnp.asarray(t), jnp.asarray(x))
    # the same products in a different order: a few eps of the O(10) Jacobian entries
    np.testing.assert_allclose(np.asarray(dj), dt_.numpy(), rtol=0, atol=1e3 * EPS64)


def test_torch_likelihood_of_the_conditional_flow(torch):
    from flowspec.backends.torch import riemannian_log_likelihood

    m = Sphere(2)
    rng = np.random.default_rng(1)
    x1 = torch.tensor(np.repeat(points(m, rng, 1), 5, axis=0))
    path = GeodesicPath(m)
    x = path.sample(torch.tensor(points(m, rng, 5)), x1, T_END)
    lp = riemannian_log_likelihood(
        m, _rescaled(path, x1), x, m.source_log_prob, steps=16, method="rk4"
    )
    # rk4 error C h^4: measured 2.3e-4, 1.6e-5, 1.0e-6 at 8, 16, 32 steps (order 4)
    np.testing.assert_allclose(lp.numpy(), path.log_prob(x, x1, T_END).numpy(), atol=5e-5)


def test_jax_likelihood_of_the_conditional_flow(jax):
    from flowspec.backends.jax import riemannian_log_likelihood

    jnp = jax.numpy
    m = Sphere(2)
    rng = np.random.default_rng(2)
    x1 = jnp.asarray(np.repeat(points(m, rng, 1), 4, axis=0))
    path = GeodesicPath(m)
    x = path.sample(jnp.asarray(points(m, rng, 4)), x1, T_END)
    lp = riemannian_log_likelihood(
        m, _rescaled(path, x1), x, m.source_log_prob, steps=16, method="rk4"
    )
    # rk4: C h^4, measured 6.9e-4 at 8 steps on these points, so ~4e-5 at 16
    np.testing.assert_allclose(np.asarray(lp), np.asarray(path.log_prob(x, x1, T_END)), atol=1e-4)


def test_jax_jit_vmap_grad_of_the_path_and_loss(jax):
    jnp = jax.numpy
    m = Sphere(2)
    rng = np.random.default_rng(3)
    x0, x1 = points(m, rng, 12), points(m, rng, 12)
    x1 = m.expmap(x0, tangent(m, x0, rng, 0.8))
    t = rng.random(12)
    path = GeodesicPath(m)
    X0, X1, T = jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(t)
    eager = path.sample_and_target(X0, X1, T)
    jitted = jax.jit(path.sample_and_target)(X0, X1, T)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-13)
    # vmap over an extra leading axis: each slice is one batch-first call
    stacked = jax.vmap(path.sample)(X0.reshape(3, 4, 3), X1.reshape(3, 4, 3), T.reshape(3, 4))
    np.testing.assert_allclose(np.asarray(stacked).reshape(12, 3), np.asarray(eager[0]), atol=1e-13)

    # grad of the Riemannian CFM loss of a one-parameter model v = w * (e_z - x)
    def loss(w):
        x_t, u = path.sample_and_target(X0, X1, T)
        v = m.proju(x_t, w * (jnp.asarray([0.0, 0.0, 1.0]) - x_t))
        return riemannian_cfm_loss(m, x_t, v, u)

    g = jax.grad(loss)(0.7)
    h = 1e-6  # central difference: h^2 |L'''| + eps / h
    np.testing.assert_allclose(
        float(g), float((loss(0.7 + h) - loss(0.7 - h)) / (2 * h)), rtol=1e-7
    )


def test_torch_loss_trains_through_autograd(torch):
    m = Sphere(2)
    rng = np.random.default_rng(4)
    x0 = torch.tensor(points(m, rng, 8))
    x1 = torch.tensor(m.projx(np.array([[0.0, 0.0, 1.0]]) + 0.1 * rng.standard_normal((8, 3))))
    path = GeodesicPath(m)
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x_t, u = path.sample_and_target(x0, x1, torch.tensor(rng.random(8)))
    v = m.proju(x_t, w * (x1 - x_t))
    loss = riemannian_cfm_loss(m, x_t, v, u)
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad)
