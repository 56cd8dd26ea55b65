"""Run in a subprocess by tests/test_jax_sharding.py, with 8 host devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported,
which is why this is a separate process. Prints "OK" after every check passed.
"""

from __future__ import annotations

import math
import os

import numpy as np

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import flowspec as fs  # noqa: E402

fj = fs.backends.get("jax")
assert jax.device_count() == 8, jax.devices()

mesh = Mesh(np.array(jax.devices()), ("batch",))
batch_sharding = NamedSharding(mesh, P("batch"))
replicated = NamedSharding(mesh, P())

rng = np.random.default_rng(0)
B, D, H = 64, 3, 16
params = {
    "w1": jnp.asarray(rng.normal(size=(D + 1, H)) / math.sqrt(D + 1)),
    "w2": jnp.asarray(rng.normal(size=(H, D)) / math.sqrt(H)),
}
x1_host = rng.normal(size=(B, D))
path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))


def model(p, t, x):
    h = jnp.tanh(jnp.concatenate([x, t[:, None]], axis=1) @ p["w1"])
    return h @ p["w2"]


def loss_fn(p, x1, key):
    k_t, k_n = jax.random.split(key)
    t = fj.sample_time(k_t, x1)
    x0 = fj.sample_noise(k_n, x1)
    x_t, u = fj.sample_and_target(path, x0, x1, t)
    return fj.cfm_loss(model(p, t, x_t), u)


@jax.jit
def train_step(p, x1, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, x1, key)
    return loss, jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, p, grads)


@jax.jit
def per_sample(x0, x1, t):
    return fj.sample_and_target(path, x0, x1, t)


@jax.jit
def sample(p, x0):
    return fj.euler(lambda t, x: model(p, t, x), x0, steps=20)


def check(name, sharded, single, tol):
    a, b = np.asarray(sharded), np.asarray(single)
    err = float(np.max(np.abs(a - b)))
    assert err <= tol * (float(np.max(np.abs(b))) + 1.0), (name, err)


# float64, 64 rows over 8 devices: XLA reduces the batch mean in a different order
# (per-device partial sums then an all-reduce), so sums agree to ~B ulps, not bitwise;
# row-wise results (the path, Euler) do not depend on the layout.
tol_sum = 4 * B * float(np.finfo(np.float64).eps)
tol_row = 16 * float(np.finfo(np.float64).eps)

key = jax.random.key(1)
x1_single = jax.device_put(jnp.asarray(x1_host), jax.devices()[0])
x1_sharded = jax.device_put(jnp.asarray(x1_host), batch_sharding)
p_rep = jax.device_put(params, replicated)

loss_1, new_1 = train_step(params, x1_single, key)
loss_8, new_8 = train_step(p_rep, x1_sharded, key)
check("loss", loss_8, loss_1, tol_sum)
for k in params:
    check(f"update {k}", new_8[k], new_1[k], tol_sum)

x0 = jnp.asarray(rng.normal(size=(B, D)))
t = jnp.asarray(rng.uniform(size=B))
xt_1, u_1 = per_sample(*(jax.device_put(a, jax.devices()[0]) for a in (x0, x1_single, t)))
xt_8, u_8 = per_sample(*(jax.device_put(a, batch_sharding) for a in (x0, x1_sharded, t)))
check("x_t", xt_8, xt_1, tol_row)
check("target", u_8, u_1, tol_row)
for name, out in (("x_t", xt_8), ("target", u_8)):
    assert out.sharding.is_equivalent_to(batch_sharding, out.ndim), (name, out.sharding)

x0_sharded = jax.device_put(x0, batch_sharding)
out_1 = sample(params, jax.device_put(x0, jax.devices()[0]))
out_8 = sample(p_rep, x0_sharded)
check("euler", out_8, out_1, tol_row)
assert out_8.sharding.is_equivalent_to(batch_sharding, out_8.ndim), out_8.sharding
# each device holds B / 8 rows of the result
shard_rows = {s.data.shape[0] for s in out_8.addressable_shards}
assert shard_rows == {B // 8}, shard_rows

print("OK")
