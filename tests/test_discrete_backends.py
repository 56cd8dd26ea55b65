"""flowspec.discrete on the torch and JAX backends: autodiff, jit/vmap, random wrappers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowspec import discrete as fd

EPS64 = float(np.finfo(np.float64).eps)


# -- torch ---------------------------------------------------------------------------


def test_torch_losses_are_differentiable():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((3, 4, 5), generator=gen, dtype=torch.float64, requires_grad=True)
    x1 = torch.randint(0, 5, (3, 4), generator=gen)
    x = torch.where(
        torch.rand((3, 4), generator=gen) < 0.5, x1, torch.randint(0, 5, (3, 4), generator=gen)
    )
    t = torch.rand(3, generator=gen, dtype=torch.float64) * 0.9
    ce = fd.cross_entropy(x1, logits=logits, reduction="sum")
    (grad,) = torch.autograd.grad(ce, logits)
    # d/dlogits of -log softmax(logits)[x1] = softmax - onehot(x1)
    want = torch.softmax(logits, -1) - torch.nn.functional.one_hot(x1, 5)
    assert torch.allclose(grad, want, atol=16 * EPS64)
    # the generalised KL against central finite differences (float64)
    assert torch.autograd.gradcheck(
        lambda z: fd.generalized_kl(fd.Cosine(), x1, x, t, logits=z, reduction="none"), (logits,)
    )


def test_torch_random_wrappers():
    torch = pytest.importorskip("torch")
    from flowspec.backends import torch as fst

    path = fd.MixturePath(fd.Linear(), 6)
    gen = torch.Generator().manual_seed(1)
    x0 = fst.discrete_source_sample(path, (4000, 8), generator=gen)
    assert x0.dtype == torch.int64 and tuple(x0.shape) == (4000, 8)
    counts = torch.bincount(x0.flatten(), minlength=6).double() / x0.numel()
    # 32000 uniform draws over 6 values: each frequency within 5 sigma of 1/6
    assert torch.all((counts - 1 / 6).abs() < 5 * math.sqrt((1 / 6) * (5 / 6) / x0.numel()))
    x1 = torch.full_like(x0, 5)
    x0 = torch.zeros_like(x0)
    t = torch.full((4000,), 0.3, dtype=torch.float64)
    xt = fst.discrete_sample(path, x0, x1, t, generator=gen)
    frac = (xt == 5).double().mean().item()
    assert abs(frac - 0.3) < 5 * math.sqrt(0.3 * 0.7 / x0.numel())
    a = fst.discrete_sample(path, x0, x1, t, generator=torch.Generator().manual_seed(7))
    b = fst.discrete_sample(path, x0, x1, t, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    m = fd.EmpiricalMarginal(path, torch.tensor([[0, 1], [2, 3]]))
    out = fst.discrete_euler(
        lambda t, x: m.rate(x, t),
        torch.zeros((5, 2), dtype=torch.int64),
        steps=4,
        generator=gen,
        dtype=torch.float64,
    )
    assert tuple(out.shape) == (5, 2) and out.dtype == torch.int64
    with pytest.raises(TypeError, match="`generator`"):
        fst.discrete_sample(path, x0, x1, t, generator=3)


# -- JAX -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def test_jax_jit_matches_eager(jax):
    jnp = jax.numpy
    path = fd.MixturePath(fd.Polynomial(2.0), 5, mask_token=4)
    rng = np.random.default_rng(0)
    x1 = jnp.asarray(rng.integers(0, 4, (6, 3)))
    x0 = jnp.full((6, 3), 4)
    t = jnp.asarray(rng.uniform(0, 0.95, 6))
    u = jnp.asarray(rng.random((6, 3)))
    logits = jnp.asarray(rng.standard_normal((6, 3, 5)))

    def step(x0, x1, t, u, logits):
        xt = path.sample(x0, x1, t, u)
        loss = fd.generalized_kl(path.schedule, x1, xt, t, logits=logits)
        rate = path.posterior_to_rate(xt, t, logits=logits)
        return xt, loss, rate

    eager = step(x0, x1, t, u, logits)
    jitted = jax.jit(step)(x0, x1, t, u, logits)
    for a, b in zip(eager, jitted, strict=True):
        # the same operations, possibly fused: a few ulps of values of size <= 20 / 0.05
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=64 * EPS64, atol=64 * EPS64)


def test_jax_vmap_and_grad(jax):
    jnp = jax.numpy
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.standard_normal((4, 2, 3, 5)))
    x1 = jnp.asarray(rng.integers(0, 5, (4, 2, 3)))
    per = jax.vmap(lambda z, y: fd.cross_entropy(y, logits=z, reduction="none"))(logits, x1)
    flat = fd.cross_entropy(
        jnp.reshape(x1, (8, 3)), logits=jnp.reshape(logits, (8, 3, 5)), reduction="none"
    )
    np.testing.assert_allclose(np.asarray(per).ravel(), np.asarray(flat), rtol=8 * EPS64)
    x = jnp.asarray(rng.integers(0, 5, (2, 3)))
    t = jnp.asarray([0.3, 0.6])

    @jax.jit
    def loss(z):
        return fd.generalized_kl(fd.Linear(), x1[0], x, t, logits=z)

    g = jax.jit(jax.grad(loss))(logits[0])
    # central differences in float64, step eps^(1/3): error O(eps^(2/3)) on O(1) values
    h = EPS64 ** (1 / 3)
    z0 = np.asarray(logits[0])
    for idx in [(0, 0, 0), (1, 2, 4), (0, 1, 3)]:
        e = np.zeros_like(z0)
        e[idx] = h
        fdiff = (float(loss(jnp.asarray(z0 + e))) - float(loss(jnp.asarray(z0 - e)))) / (2 * h)
        assert abs(float(g[idx]) - fdiff) < 1e3 * EPS64 ** (2 / 3)


def test_jax_random_wrappers_under_jit(jax):
    from flowspec.backends import jax as fsj

    jnp = jax.numpy
    path = fd.MixturePath(fd.Linear(), 4, mask_token=3)
    m = fd.EmpiricalMarginal(path, jnp.asarray([[0, 1], [2, 2]]))
    key = jax.random.PRNGKey(0)
    x0 = fsj.discrete_source_sample(path, key, (16, 2))
    assert bool(jnp.all(x0 == 3))

    def run(key, x0):
        return fsj.discrete_euler(lambda t, x: m.rate(x, t), key, x0, steps=3)

    eager = run(key, x0)
    jitted = jax.jit(run)(key, x0)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    # the linear schedule's last step draws each token from its posterior: data values only
    assert set(np.asarray(eager)[:, 0].tolist()) <= {0, 2}
    xt = fsj.discrete_sample(path, key, x0, jnp.asarray([[0, 1]] * 16), 1.0)
    np.testing.assert_array_equal(np.asarray(xt), np.tile([0, 1], (16, 1)))
