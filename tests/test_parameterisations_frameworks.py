"""The conversions, the SNR inverse and the schedule change under JAX and torch transforms.

The core is pure Array API, so no backend code is needed: these tests prove that it
traces (jax.jit, jax.vmap), differentiates (jax.grad, torch.autograd) and compiles in
one graph (torch.compile(fullgraph=True)), and that the results equal the NumPy
reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import namespace_of

import flowspec as fs
from flowspec.schedules import bisect_snr_inverse

EPS = float(np.finfo(np.float64).eps)


class _Quadratic(fs.Schedule):
    """A user's schedule (alpha = t^2, sigma = 1 - t^2): its SNR inverse is the bisection."""

    degenerate_at = (1.0,)

    def coefficients(self, xp, t):
        return fs.Coefficients(t * t, 1.0 - t * t, 2.0 * t, -2.0 * t)


def _inputs():
    rng = np.random.default_rng(11)
    return rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), np.array([0.0, 0.2, 0.5, 0.8, 1.0])


def test_jax_jit_vmap_grad():
    jax = pytest.importorskip("jax")
    jnp = namespace_of("jax")  # x64 on, as in the `xp` fixture
    p, x, t = _inputs()
    s = fs.Cosine()
    ref = fs.convert(s, p, x, t, source="velocity", target="x1")

    conv = jax.jit(lambda p, x, t: fs.convert(s, p, x, t, source="velocity", target="x1"))
    np.testing.assert_allclose(
        conv(jnp.asarray(p), jnp.asarray(x), jnp.asarray(t)), ref, rtol=4 * EPS, atol=4 * EPS
    )

    one = lambda p, x, t: fs.convert(s, p[None], x[None], t, source="velocity", target="x1")[0]  # noqa: E731
    batched = jax.vmap(one)(jnp.asarray(p), jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(batched, ref, rtol=4 * EPS, atol=4 * EPS)

    # d/dp of sum(a x + b p) is b, the Table 1 coefficient
    grad = jax.grad(lambda p: jnp.sum(conv(p, jnp.asarray(x), jnp.asarray(t))))(jnp.asarray(p))
    _, b = fs.formulas.conversion_coefficients(s(t[:, None]), "velocity", "x1")
    np.testing.assert_allclose(grad, np.broadcast_to(b, p.shape), rtol=4 * EPS, atol=4 * EPS)


def test_jax_jit_of_the_bisection_and_the_schedule_change():
    """The numerical SNR inverse is a fixed number of Array API steps: it traces.

    (The schedule change is jitted with built-in schedules, whose inverses are closed
    forms: with the 80 inline bisection steps feeding several consumers, XLA's CPU
    compile takes minutes, see docs/parameterisations.md.)"""
    jax = pytest.importorskip("jax")
    jnp = namespace_of("jax")
    rho = np.array([0.0, 0.1, 1.0, 7.5, np.inf])
    got = jax.jit(lambda r: bisect_snr_inverse(_Quadratic(), r))(jnp.asarray(rho))
    np.testing.assert_allclose(got, bisect_snr_inverse(_Quadratic(), rho), rtol=0, atol=2 * EPS)

    _, x, r = _inputs()
    a, b = fs.VariancePreserving(), fs.VarianceExploding()
    field = fs.change_schedule(lambda t, z: -z * (1.0 + t[:, None]), a, b)
    got = jax.jit(field)(jnp.asarray(r), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), field(r, x), rtol=64 * EPS, atol=64 * EPS)


def test_torch_autograd_through_convert_and_time():
    torch = pytest.importorskip("torch")
    p, x, t = _inputs()
    s = fs.VariancePreserving()
    pt = torch.tensor(p, requires_grad=True)
    tt = torch.tensor(t[1:4], requires_grad=True)
    out = fs.convert(s, pt[1:4], torch.tensor(x[1:4]), tt, source="x1", target="velocity")
    out.sum().backward()
    _, b = fs.formulas.conversion_coefficients(s(t[1:4, None]), "x1", "velocity")
    np.testing.assert_allclose(pt.grad[1:4].numpy(), np.broadcast_to(b, (3, 3)), rtol=4 * EPS)
    # d/dt against a central difference (h = 1e-6: truncation h^2 ~ 1e-12, rounding
    # eps |v| / h ~ 1e-10 relative)
    h = 1e-6
    f = lambda tv: fs.convert(s, p[1:4], x[1:4], tv, source="x1", target="velocity").sum(axis=1)  # noqa: E731
    fd = (f(t[1:4] + h) - f(t[1:4] - h)) / (2 * h)
    np.testing.assert_allclose(tt.grad.numpy(), fd, rtol=1e-6)


@pytest.mark.slow
def test_torch_compile_fullgraph_of_a_changed_denoiser():
    """One graph: a CondOT denoiser converted to a velocity, guided, moved to Cosine."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    a, b = fs.CondOT(), fs.Cosine()
    w = torch.tensor([[0.5, -0.2], [0.1, 0.3]], dtype=torch.float64)

    def denoiser(t, x):
        return torch.tanh(x @ w) * (1.0 + t[:, None])

    velocity = fs.convert_field(denoiser, a, source="x1", target="velocity")
    guided = fs.guided_field(velocity, lambda t, x: -x, 1.5)
    field = fs.change_schedule(guided, a, b)
    r = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x = torch.tensor([[0.3, -1.0], [1.0, 0.5], [-0.5, 2.0]], dtype=torch.float64)
    compiled = torch.compile(field, fullgraph=True)
    # Inductor may fuse and reorder: a few ulps of the O(10) terms
    torch.testing.assert_close(compiled(r, x), field(r, x), rtol=64 * EPS, atol=64 * EPS * 10)
