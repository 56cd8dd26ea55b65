"""JAX backend benchmarks: ratios against hand-written JAX and diffrax (medians, one process).

1. A jitted CFM training step (sample t and noise, path, model, loss, gradient, SGD
   update) written with flowspec's JAX backend, against the same step hand-written in
   JAX, at batch shapes (8, 2), (4096, 2) and (256, 3, 32, 32).
2. 100 Euler steps of a small MLP field: ``fj.euler`` against a hand-written
   ``jax.lax.scan`` loop and against diffrax's ``Euler`` solver (constant step).

Compile time (lower + compile of the jitted function) is reported separately from the
run time; run times are medians over interleaved repeats (A, B, A, B, ...) so that load
on a shared machine affects both sides alike.

    python benchmarks/bench_jax.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import flowspec as fs

fj = fs.backends.get("jax")
SIGMA_MIN = 0.0


def mlp_init(key, d_in, hidden, d_out):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (d_in + 1, hidden)) / math.sqrt(d_in + 1),
        "w2": jax.random.normal(k2, (hidden, d_out)) / math.sqrt(hidden),
    }


def mlp(p, t, x):
    flat = jnp.reshape(x, (x.shape[0], -1))
    h = jnp.tanh(jnp.concatenate([flat, t[:, None]], axis=1) @ p["w1"])
    return jnp.reshape(h @ p["w2"], x.shape)


# -- 1. training step ---------------------------------------------------------------------
PATH = fs.GaussianPath(fs.CondOT(sigma_min=SIGMA_MIN))


def loss_flowspec(p, x1, key):
    k_t, k_n = jax.random.split(key)
    t = fj.sample_time(k_t, x1)
    x0 = fj.sample_noise(k_n, x1)
    x_t, u = fj.sample_and_target(PATH, x0, x1, t)
    return fj.cfm_loss(mlp(p, t, x_t), u)


def loss_hand(p, x1, key):
    k_t, k_n = jax.random.split(key)
    t = jax.random.uniform(k_t, (x1.shape[0],), dtype=x1.dtype)
    x0 = jax.random.normal(k_n, x1.shape, dtype=x1.dtype)
    tb = jnp.reshape(t, (-1,) + (1,) * (x1.ndim - 1))
    x_t = tb * x1 + (1.0 - (1.0 - SIGMA_MIN) * tb) * x0
    u = x1 - (1.0 - SIGMA_MIN) * x0
    diff = mlp(p, t, x_t) - u
    return jnp.mean(jnp.sum(jnp.reshape(diff * diff, (x1.shape[0], -1)), axis=1))


def make_step(loss):
    @jax.jit
    def step(p, x1, key):
        value, grads = jax.value_and_grad(loss)(p, x1, key)
        return value, jax.tree_util.tree_map(lambda a, g: a - 1e-3 * g, p, grads)

    return step


# -- 2. Euler sampling ----------------------------------------------------------------------
STEPS = 100


def euler_flowspec(p, x0):
    return fj.euler(lambda t, x: mlp(p, t, x), x0, steps=STEPS)


def euler_hand(p, x0):
    h = 1.0 / STEPS

    def body(x, k):
        t = jnp.full((x.shape[0],), k * h, dtype=x.dtype)
        return x + h * mlp(p, t, x), None

    return jax.lax.scan(body, x0, jnp.arange(STEPS, dtype=x0.dtype))[0]


def euler_diffrax(p, x0):
    import diffrax

    term = diffrax.ODETerm(lambda t, x, args: mlp(p, jnp.full((x.shape[0],), t, x.dtype), x))
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Euler(),
        t0=0.0,
        t1=1.0,
        dt0=1.0 / STEPS,
        y0=x0,
        saveat=diffrax.SaveAt(t1=True),
        max_steps=STEPS,
    )
    return sol.ys[0]


# -- timing ---------------------------------------------------------------------------------
def compile_time(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start, compiled


def interleaved_medians(fns, args, repeats):
    times = [[] for _ in fns]
    for f in fns:  # warm up
        jax.block_until_ready(f(*args))
    for _ in range(repeats):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}, float32, {args.repeats} repeats")

    print("\n1. jitted training step (sample t, noise, path, MLP, loss, grad, SGD)")
    print(
        f"{'shape':>18} {'flowspec ms':>12} {'hand ms':>9} {'ratio':>6} {'compile fs/hand s':>18}"
    )
    key = jax.random.key(0)
    for shape, hidden in (((8, 2), 64), ((4096, 2), 64), ((256, 3, 32, 32), 256)):
        d = math.prod(shape[1:])
        p = mlp_init(jax.random.key(1), d, hidden, d)
        x1 = jax.random.normal(jax.random.key(2), shape)
        c_fs, step_fs = compile_time(make_step(loss_flowspec), p, x1, key)
        c_hand, step_hand = compile_time(make_step(loss_hand), p, x1, key)
        v_fs, v_hand = step_fs(p, x1, key)[0], step_hand(p, x1, key)[0]
        assert abs(float(v_fs) - float(v_hand)) <= 1e-4 * abs(float(v_hand)), (v_fs, v_hand)
        reps = max(5, args.repeats // (10 if d > 100 else 1))
        t_fs, t_hand = interleaved_medians([step_fs, step_hand], (p, x1, key), reps)
        print(
            f"{shape!s:>18} {1e3 * t_fs:12.3f} {1e3 * t_hand:9.3f} {t_fs / t_hand:6.3f} "
            f"{c_fs:8.3f} / {c_hand:.3f}"
        )

    print(f"\n2. {STEPS} Euler steps of an MLP field (2 -> 64 -> 2), batch 1024")
    p = mlp_init(jax.random.key(3), 2, 64, 2)
    x0 = jax.random.normal(jax.random.key(4), (1024, 2))
    fns, compiles = [], []
    for fn in (euler_flowspec, euler_hand, euler_diffrax):
        c, compiled = compile_time(fn, p, x0)
        fns.append(compiled)
        compiles.append(c)
    outs = [np.asarray(f(p, x0)) for f in fns]
    for o in outs[1:]:
        assert np.allclose(o, outs[0], atol=1e-5), np.abs(o - outs[0]).max()
    times = interleaved_medians(fns, (p, x0), args.repeats)
    names = ("flowspec fj.euler", "hand lax.scan", "diffrax Euler")
    print(f"{'':>20} {'run ms':>8} {'vs hand':>8} {'compile s':>10}")
    for name, t, c in zip(names, times, compiles, strict=True):
        print(f"{name:>20} {1e3 * t:8.3f} {t / times[1]:8.3f} {c:10.3f}")
    print(f"flowspec / diffrax run-time ratio: {times[0] / times[2]:.3f}")


if __name__ == "__main__":
    main()
