"""Run in a subprocess by tests/test_jax_marginal.py, with 8 host devices.

The exact marginal with the data sharded over 8 devices (shard_map, all-gathered
partials, one merge) equals the one-device fused scan and the NumPy reference. Prints
"OK" after every check passed.
"""

from __future__ import annotations

import os

import numpy as np

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from test_marginal import conditioning, naive  # noqa: E402

import flowspec as fs  # noqa: E402

fj = fs.backends.get("jax")
assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
EPS64 = float(np.finfo(np.float64).eps)

rng = np.random.default_rng(0)
N, B, D = 8 * 37, 6, 3
data_host = rng.normal(size=(N, D)) * 2
x_host = rng.normal(size=(B, D)) * 2
t_host = np.linspace(0.1, 0.9, B)
data_8 = jax.device_put(jnp.asarray(data_host), NamedSharding(mesh, P("data")))
assert {s.data.shape[0] for s in data_8.addressable_shards} == {N // 8}
x, t = jnp.asarray(x_host), jnp.asarray(t_host)

ALL = ("velocity", "denoise", "score", "log_prob", "divergence")
for schedule in (fs.VariancePreserving(),):
    path = fs.GaussianPath(schedule)
    ref = fs.EmpiricalMarginal(path, data_host)
    one = jax.jit(lambda d, x, t, path=path: fj.marginal(path, d, x, t, ALL, block_size=16))
    many = jax.jit(
        lambda d, x, t, path=path: fj.sharded_marginal(
            path, d, x, t, mesh, "data", ALL, block_size=16
        )
    )
    outs_8 = many(data_8, x, t)
    outs_1 = one(jnp.asarray(data_host), x, t)
    ref, a_t, s_t, y = naive(schedule, data_host, x_host, t_host)
    # the error model of tests/test_marginal.py: the log-weights carry an absolute
    # error of a few eps * k (k: their size); each quantity inherits it with its gain
    err = 64 * EPS64 * conditioning(x_host, a_t, s_t, y)
    span = 1.0 + np.abs(y).max()
    c = schedule(t_host)
    gains = {
        "log_prob": np.ones_like(a_t),
        "denoise": span * np.ones_like(a_t),
        "velocity": span * (np.abs(c.d_sigma / c.sigma) * a_t + np.abs(c.d_alpha)),
        "score": span * a_t / s_t**2,
        "divergence": 4 * span**2 * np.abs((c.d_alpha - a_t * c.d_sigma / c.sigma) * a_t / s_t**2),
    }
    for quantity, a, b in zip(ALL, outs_8, outs_1, strict=True):
        exact = ref[quantity].reshape(B, -1)
        tol = (gains[quantity] * err)[:, None] + 8 * EPS64 * np.abs(exact)
        for name, got in (("sharded vs one device", a), ("one device vs numpy", b)):
            diff = np.abs(np.asarray(got).reshape(B, -1) - exact)
            assert np.all(diff <= 2 * tol), (schedule, quantity, name, diff.max())

print("OK")
