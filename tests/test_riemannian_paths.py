"""The geodesic conditional path: endpoints, target (vs autodiff jvp), x-form field, loss, density.

Error model: the path is exp o (kappa log) of O(1) quantities: identities hold to a
small multiple of eps (constants next to the assertions).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import to_numpy
from riemannian_cases import IDS, MANIFOLDS, points, tangent

import flowspec as fs
from flowspec.riemannian import (
    SO3,
    Euclidean,
    FlatTorus,
    GeodesicPath,
    Hyperbolic,
    Sphere,
    check_kappa_schedule,
    riemannian_cfm_loss,
)
from flowspec.schedules import CATALOGUE

EPS64 = np.finfo(np.float64).eps


def _serves_as_kappa(schedule):
    try:
        check_kappa_schedule(schedule)
    except ValueError:
        return False
    return True


#: The catalogue's schedules a GeodesicPath accepts: kappa_t = sigma_t needs sigma_0 = 1
#: and sigma_1 = 0 (CondOT(sigma_min > 0), VP and VE are refused).
SCHEDULES = [s for s in CATALOGUE if _serves_as_kappa(s)]


def test_the_kappa_schedules_of_the_catalogue():
    # the selection is by the property; it keeps (at least) the schedules with sigma
    # falling from 1 to 0 that these tests were written for, and refuses the others
    assert {fs.CondOT(), fs.Cosine(), fs.Polynomial(2.0), fs.LinearVP()} <= set(SCHEDULES)
    for s in CATALOGUE:
        if s not in SCHEDULES:
            with pytest.raises(ValueError, match="`schedule`"):
                GeodesicPath(Sphere(2), s)


def _pair(m, seed=0, batch=12):
    rng = np.random.default_rng(seed)
    x1 = points(m, rng, batch)
    x0 = points(m, rng, batch)
    if isinstance(m, Sphere):  # away from the antipode of x1 (the cut locus)
        x0 = m.expmap(x1, tangent(m, x1, rng, 0.6))
    return x0, x1, rng


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_endpoints_and_field_identities(xp, m):
    x0, x1, rng = _pair(m)
    path = GeodesicPath(m, fs.Polynomial(2.0))
    X0, X1 = xp.asarray(x0), xp.asarray(x1)
    # x_{t=0} = x0 and x_{t=1} = x1 (the flowspec convention), to a few ulps; on the
    # hyperboloid the Minkowski products lose eps |x|^2 (entries of size cosh r)
    c = 1.0 + max(np.max(np.sum(x0 * x0, axis=1)), np.max(np.sum(x1 * x1, axis=1)))
    tol = 64 * EPS64 * c
    np.testing.assert_allclose(to_numpy(path.sample(X0, X1, 0.0)), x0, rtol=0, atol=tol)
    np.testing.assert_allclose(to_numpy(path.sample(X0, X1, 1.0)), x1, rtol=0, atol=0)
    t = rng.uniform(0.05, 0.95, size=12)
    x_t, u = path.sample_and_target(X0, X1, xp.asarray(t))
    assert type(x_t) is type(X0)
    x_t, u = to_numpy(x_t), to_numpy(u)
    # on the manifold, target tangent at x_t, x-form field equal to the target at x_t
    assert np.all(m.constraint_violation(x_t) <= tol)
    np.testing.assert_allclose(m.proju(x_t, u), u, rtol=0, atol=tol * (1 + np.abs(u).max()))
    v = to_numpy(path.velocity(xp.asarray(x_t), X1, xp.asarray(t)))
    np.testing.assert_allclose(m.proju(x_t, v), v, rtol=0, atol=tol * (1 + np.abs(v).max()))
    # kappa_dot/kappa * log: the log at x_t is recomputed: error a few eps times |u| / kappa
    scale = 1.0 / (1.0 - t**2)
    np.testing.assert_allclose(v, u, rtol=0, atol=16 * tol * scale.max() * (1 + np.abs(u).max()))
    # d(x_t, x1) = kappa_t d(x0, x1): the premetric condition of the construction
    np.testing.assert_allclose(m.dist(x_t, x1), (1 - t**2) * m.dist(x0, x1), rtol=0, atol=tol)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_target_is_the_time_derivative(m, schedule):
    x0, x1, rng = _pair(m, seed=1)
    path = GeodesicPath(m, schedule)
    t = rng.uniform(0.05, 0.95, size=12)
    u = path.target(x0, x1, t)
    h = 1e-5  # central difference: h^2 |x'''| + eps / h, both ~1e-10
    fd = (path.sample(x0, x1, t + h) - path.sample(x0, x1, t - h)) / (2 * h)
    if isinstance(m, FlatTorus):  # unwrap the angle difference
        fd = m.logmap(path.sample(x0, x1, t - h), path.sample(x0, x1, t + h)) / (2 * h)
    np.testing.assert_allclose(u, fd, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_target_against_torch_jvp(m):
    torch = pytest.importorskip("torch")
    x0, x1, rng = _pair(m, seed=2)
    path = GeodesicPath(m, fs.Cosine())
    t = torch.tensor(rng.uniform(0.05, 0.95, size=12), dtype=torch.float64)
    X0, X1 = torch.tensor(x0), torch.tensor(x1)
    _, jvp = torch.func.jvp(lambda s: path.sample(X0, X1, s), (t,), (torch.ones_like(t),))
    u = path.target(X0, X1, t)
    # forward-mode through exp o log: the same operations, a few ulps apart
    np.testing.assert_allclose(jvp.numpy(), u.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", MANIFOLDS, ids=IDS)
def test_target_against_jax_jvp(m):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    x0, x1, rng = _pair(m, seed=3)
    path = GeodesicPath(m, fs.Polynomial(2.0))
    t = jnp.asarray(rng.uniform(0.05, 0.95, size=12))
    X0, X1 = jnp.asarray(x0), jnp.asarray(x1)
    _, jvp = jax.jvp(lambda s: path.sample(X0, X1, s), (t,), (jnp.ones_like(t),))
    u = path.target(X0, X1, t)
    np.testing.assert_allclose(np.asarray(jvp), np.asarray(u), rtol=1e-12, atol=1e-12)


def test_euclidean_geodesic_path_is_the_gaussian_path():
    rng = np.random.default_rng(4)
    x0, x1 = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    t = rng.random(8)
    for s in (fs.CondOT(), fs.Polynomial(3.0)):
        g, a = GeodesicPath(Euclidean(3), s), fs.GaussianPath(s)
        np.testing.assert_allclose(g.sample(x0, x1, t), a.sample(x0, x1, t), atol=8 * EPS64)
        np.testing.assert_allclose(g.target(x0, x1, t), a.target(x0, x1, t), atol=8 * EPS64)


def test_loss_uses_the_manifold_norm_and_reduces_like_cfm_loss():
    rng = np.random.default_rng(5)
    h = Hyperbolic(2)
    x = points(h, rng, 6)
    v, u = tangent(h, x, rng), tangent(h, x, rng)
    per = riemannian_cfm_loss(h, x, v, u, reduction="none")
    np.testing.assert_allclose(per, h.norm(x, v - u) ** 2, rtol=1e-12)
    np.testing.assert_allclose(riemannian_cfm_loss(h, x, v, u), per.mean(), rtol=1e-15)
    np.testing.assert_allclose(riemannian_cfm_loss(h, x, v, u, "sum"), per.sum(), rtol=1e-15)
    e = Euclidean(2)
    y = rng.standard_normal((5, 2))
    np.testing.assert_allclose(riemannian_cfm_loss(e, y, y, 0 * y), fs.cfm_loss(y, 0 * y))


def test_validation_names_the_argument():
    with pytest.raises(TypeError, match="`manifold`"):
        GeodesicPath("sphere")
    with pytest.raises(ValueError, match="`schedule`"):
        GeodesicPath(Sphere(2), fs.CondOT(sigma_min=0.1))  # kappa_1 != 0
    with pytest.raises(ValueError, match="`schedule`"):
        GeodesicPath(Sphere(2), fs.VariancePreserving())  # kappa_0 != 1
    path = GeodesicPath(Sphere(2))
    x = np.ones((2, 3)) / np.sqrt(3)
    with pytest.raises(ValueError, match="`t`"):
        path.sample(x, x, np.ones(3) * 0.5)
    with pytest.raises(ValueError, match="`t`"):
        path.sample(x, x, 1.5)
    with pytest.raises(ValueError, match="`reduction`"):
        riemannian_cfm_loss(Sphere(2), x, x, x, reduction="max")


# -- the conditional density and the Riemannian continuity equation -----------------


@pytest.mark.parametrize("m", [Sphere(1), Sphere(2), Sphere(3), SO3(), FlatTorus(2)], ids=repr)
def test_conditional_density_is_the_pushforward(m):
    """Monte Carlo: p_t(. | x1) integrates to 1 and is positive only where x_t lands."""
    rng = np.random.default_rng(6)
    n = 4000
    x1 = np.repeat(points(m, rng, 1), n, axis=0)
    path = GeodesicPath(m)
    kappa = 0.6  # t = 0.4 with kappa_t = 1 - t
    # x uniform on the manifold (the source): E[p_t(x | x1) / p_0(x)] = int p_t dvol = 1,
    # Monte Carlo error 5 standard errors
    x = points(m, rng, n)
    ratio = np.exp(path.log_prob(x, x1, 0.4) - m.source_log_prob(x))
    assert abs(ratio.mean() - 1.0) < 5 * ratio.std() / math.sqrt(n), ratio.mean()
    # the path's samples all lie in the support
    x_t = path.sample(points(m, rng, n), x1, 0.4)
    assert np.all(np.isfinite(path.log_prob(x_t, x1, 0.4)))
    # and it vanishes beyond the support (distance >= kappa pi from x1)
    far = m.expmap(x1[:4], tangent(m, x1[:4], rng))
    out = path.log_prob(far, x1[:4], 0.4)
    if isinstance(m, FlatTorus):  # the support is the box |log_i| <= kappa pi
        inside = np.max(np.abs(m.logmap(x1[:4], far)), axis=1) <= kappa * np.pi
    else:  # the ball d(x, x1) < kappa pi
        inside = m.dist(far, x1[:4]) < kappa * np.pi
    np.testing.assert_array_equal(np.isneginf(out), ~inside)


@pytest.mark.parametrize("m", [Sphere(2), Sphere(3), SO3()], ids=repr)
def test_continuity_equation_of_the_conditional_path(m):
    """d/dt log p_t + div_g u_t + g(u_t, grad log p_t) = 0 on the support (torch autodiff)."""
    torch = pytest.importorskip("torch")
    from flowspec.backends.torch import riemannian_divergence

    rng = np.random.default_rng(7)
    x0, x1, _ = _pair(m, seed=8, batch=10)
    path = GeodesicPath(m, fs.Cosine())
    t = rng.uniform(0.1, 0.8, size=10)
    x = path.sample(x0, x1, t)
    X, X1, T = torch.tensor(x), torch.tensor(x1), torch.tensor(t)
    X.requires_grad_(True)
    lp = path.log_prob(X, X1, T)
    (grad,) = torch.autograd.grad(lp.sum(), X)
    grad_r = m.proju(X.detach(), grad)  # Riemannian gradient: the embedding metric restricted
    u = path.velocity(X.detach(), X1, T)
    div = riemannian_divergence(m, lambda s, y: path.velocity(y, X1, s), T, X.detach())
    h = 1e-5
    dt = (path.log_prob(X.detach(), X1, T + h) - path.log_prob(X.detach(), X1, T - h)) / (2 * h)
    inner = m.inner(X.detach(), u, grad_r)
    if isinstance(
        m, SO3
    ):  # the metric is (1/2) tr: the embedding gradient is twice the Riemannian one
        inner = 2 * inner
    residual = dt + div + inner
    # finite difference in t: h^2 |d^3 log p| + eps / h ~ 1e-10, times the O(10) terms
    np.testing.assert_allclose(residual.numpy(), 0.0, atol=1e-7)
