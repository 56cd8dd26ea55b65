"""The exact marginal at data-set scale: one process against a Dask LocalCluster, and fused kernels.

Run: ``PYTHONPATH=. python benchmarks/bench_marginal_scale.py [--sizes 1e5 1e6 2e6]
[--workers 2] [--repeats 3] [--json out.json] [--plot out.png]``

Part 1 (scaling). For each N: float32 data (N, D = 64), B = 1024 queries at t = 0.5
(CondOT, sigma_min = 0.01), the velocity of the exact marginal (eq. 8)

* in one process (``EmpiricalMarginal``, NumPy);
* on a ``dask.distributed.LocalCluster`` of ``--workers`` processes (one thread each),
  the data generated on the workers and persisted there (``DaskMarginal``);

against the GEMM floor: one NumPy matrix product (B, D) @ (D, N) of the same shape in
this process. Reported: median seconds, throughput in (query, point) pairs per second,
the ratio to the GEMM floor, and peak memory (resident set size) per worker and of this
process.

Part 2 (kernels, ``--kernels [--times ...]``). B = 1024, N = 50,000, D = 64, float32,
at t in {0.3, 0.5, 0.7, 0.9, 0.99} (``--tolerance``: the band tolerance of the torch and
JAX kernels, default the unit roundoff): the JAX scan (``fs.backends.get("jax").marginal``
under ``jax.jit``) against one jitted JAX matrix product of the same shape, the torch
kernel (compiled, ``compiled=True``, and eager) against one torch product and the NumPy
``EmpiricalMarginal`` (always exact to the unit roundoff) against one NumPy product; and
the floors on JAX: the ``exp`` over B x N alone, and a streamed softmax with no guard
(two GEMMs, max, exp, sum per block), each in JAX GEMMs. Every ratio is the median of
``--repeats`` calls over the median of as many GEMMs, the two timed alternately.

Part 3 (``--accuracy``): the largest error of the JAX and compiled torch velocities of
part 2, default band and tolerance 1e-3, against a float64 ``EmpiricalMarginal``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import flowspec as fs

D, B, T = 64, 1024, 0.5


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_ratio(fn: Callable[[], Any], gemm: Callable[[], Any], repeats: int) -> float:
    """median(fn) / median(gemm), the two timed alternately in the same window, so
    that a slow spell of a shared machine weighs on both alike."""
    ours, base = [], []
    for _ in range(repeats):
        for f, out in ((gemm, base), (fn, ours)):
            start = time.perf_counter()
            f()
            out.append(time.perf_counter() - start)
    return statistics.median(ours) / statistics.median(base)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scaling(sizes: list[int], workers: int, repeats: int) -> list[dict[str, Any]]:
    import dask.array as da
    import distributed

    from flowspec.distributed import DaskMarginal

    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, D)).astype(np.float32)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    rows = []
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        for n in sizes:
            reps = repeats if n <= 500_000 else 1
            data = rng.standard_normal((n, D), dtype=np.float32)
            data_t = np.ascontiguousarray(data.T)
            # the floor: three GEMMs before and three after the one-process run, so that it
            # is timed under the same load (the GEMM is a small fraction of that run)
            gemms = [median_time(lambda data_t=data_t: x @ data_t, 1) for _ in range(3)]
            single = fs.EmpiricalMarginal(path, data)
            one = median_time(lambda single=single: single.velocity(x, T), reps)
            gemms += [median_time(lambda data_t=data_t: x @ data_t, 1) for _ in range(3)]
            gemm = statistics.median(gemms)
            del single, data, data_t
            chunk = max(1, n // (8 * workers))
            lazy = da.random.default_rng(1).standard_normal(
                (n, D), chunks=(chunk, D), dtype=np.float32
            )
            lazy = client.persist(lazy)
            distributed.wait(lazy)
            client.run(lambda: __import__("gc").collect())
            dm = DaskMarginal(path, lazy)
            dm.velocity(x, T)  # warm-up: imports and the code on every worker
            dist = median_time(lambda dm=dm: dm.velocity(x, T), reps)
            worker_peak = client.run(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            del dm, lazy
            pairs = float(B) * n
            row = {
                "N": n,
                "repeats": reps,
                "gemm_s": gemm,
                "one_process_s": one,
                "cluster_s": dist,
                "one_process_pairs_per_s": pairs / one,
                "cluster_pairs_per_s": pairs / dist,
                "one_process_vs_gemm": one / gemm,
                "cluster_vs_gemm": dist / gemm,
                "peak_rss_worker_mib": max(worker_peak.values()),
                "peak_rss_client_mib": peak_rss_mib(),
            }
            rows.append(row)
            print(
                f"N={n:>9,}  gemm {gemm:7.2f}s  one process {one:7.2f}s ({one / gemm:4.2f}x, "
                f"{pairs / one:.3g} pairs/s)  cluster {dist:7.2f}s ({dist / gemm:4.2f}x, "
                f"{pairs / dist:.3g} pairs/s)  peak RSS/worker {row['peak_rss_worker_mib']:.0f} "
                f"MiB",
                flush=True,
            )
    return rows


def _softmax_floor(jnp: Any, jax: Any, q: Any, aug: Any, block: int) -> Any:
    """The streamed softmax with no guard at all: per block one GEMM for the logits, the
    max, exp and sum, and one GEMM for the weighted sum (the floor of any exact-softmax
    kernel of this shape; not a correct marginal in float32)."""
    n, width = aug.shape
    blocks = n // block
    stacked = jnp.reshape(aug[: blocks * block], (blocks, block, width))

    def step(carry: Any, rows: Any) -> Any:
        m0, s0, w0 = carry
        g = q @ rows.T
        m = jnp.maximum(m0, jnp.max(g, axis=1))
        e = jnp.exp(g - m[:, None])
        scale = jnp.exp(m0 - m)
        return (m, s0 * scale + jnp.sum(e, axis=1), w0 * scale[:, None] + e @ rows), None

    b = q.shape[0]
    init = (jnp.full((b,), -jnp.inf, q.dtype), jnp.zeros((b,), q.dtype), jnp.zeros((b, width)))
    out, _ = jax.lax.scan(step, init, stacked)
    return out


def kernels(repeats: int, times: list[float], tolerance: float | None) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp
    import torch

    fj = fs.backends.get("jax")
    ft = fs.backends.get("torch")
    rng = np.random.default_rng(0)
    n = 50_000
    data = rng.standard_normal((n, D), dtype=np.float32)
    x = rng.standard_normal((B, D), dtype=np.float32)
    data_t = np.ascontiguousarray(data.T)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    single = fs.EmpiricalMarginal(path, data)
    jd, jx, jdt = jnp.asarray(data), jnp.asarray(x), jnp.asarray(data_t)
    td, tx, tdt = torch.from_numpy(data), torch.from_numpy(x), torch.from_numpy(data_t)
    jgemm = jax.jit(lambda a, b: a @ b)
    jgemm(jx, jdt).block_until_ready()
    jax_gemm = lambda: jgemm(jx, jdt).block_until_ready()  # noqa: E731
    torch_gemm = lambda: tx @ tdt  # noqa: E731
    np_gemm = lambda: x @ data_t  # noqa: E731
    g_np, g_jax, g_torch = (median_time(g, repeats) for g in (np_gemm, jax_gemm, torch_gemm))
    # the floors on JAX: exp over B x N alone, and the unguarded streamed softmax
    block = (1 << 22) // B
    aug = jnp.concatenate([jd, jnp.ones((n, 2), jnp.float32)], axis=1)
    q = jnp.concatenate([jx, jnp.ones((B, 2), jnp.float32)], axis=1)
    floor = jax.jit(lambda q, a: _softmax_floor(jnp, jax, q, a, block))
    floor(q, aug)[0].block_until_ready()
    f_soft = interleaved_ratio(lambda: floor(q, aug)[0].block_until_ready(), jax_gemm, repeats)
    blk = jgemm(jx, jdt[:, :block])
    jexp = jax.jit(lambda g: jnp.sum(jnp.exp(g - jnp.max(g, axis=1, keepdims=True))))
    jexp(blk).block_until_ready()
    blocks = n // block  # the exp over B x N: that many blocks' worth, timed as one call
    f_exp = interleaved_ratio(
        lambda: [jexp(blk).block_until_ready() for _ in range(blocks)], jax_gemm, repeats
    )
    print(
        f"GEMM (B, D) @ (D, N): NumPy {g_np:.3f}s, JAX {g_jax:.3f}s, torch {g_torch:.3f}s; "
        f"JAX floors: exp over B x N {f_exp:4.2f}x, unguarded streamed softmax "
        f"{f_soft:4.2f}x one JAX GEMM",
        flush=True,
    )
    rows = [{"jax_exp_floor_vs_gemm": f_exp, "jax_softmax_floor_vs_gemm": f_soft}]
    for t in times:
        f = jax.jit(lambda d, q, t=t: fj.marginal(path, d, q, t, tolerance=tolerance))
        f(jd, jx).block_until_ready()
        fused = interleaved_ratio(lambda f=f: f(jd, jx).block_until_ready(), jax_gemm, repeats)
        ft.marginal(path, td, tx, t, tolerance=tolerance, compiled=True)  # compiles per tier
        compiled = interleaved_ratio(
            lambda t=t: ft.marginal(path, td, tx, t, tolerance=tolerance, compiled=True),
            torch_gemm,
            repeats,
        )
        eager = interleaved_ratio(
            lambda t=t: ft.marginal(path, td, tx, t, tolerance=tolerance), torch_gemm, repeats
        )
        ref = interleaved_ratio(lambda t=t: single.velocity(x, t), np_gemm, repeats)
        rows.append(
            {
                "t": t,
                "jax_vs_jax_gemm": fused,
                "torch_compiled_vs_torch_gemm": compiled,
                "torch_vs_torch_gemm": eager,
                "numpy_vs_numpy_gemm": ref,
            }
        )
        print(
            f"t={t:<5} JAX {fused:5.2f}x one JAX GEMM   torch compiled {compiled:5.2f}x, "
            f"eager {eager:5.2f}x one torch GEMM   NumPy reference {ref:5.2f}x one NumPy GEMM",
            flush=True,
        )
    return rows


def accuracy(times: list[float]) -> list[dict[str, Any]]:
    """The largest error of the JAX and compiled torch velocities, default band and
    tolerance 1e-3, against a float64 ``EmpiricalMarginal``, relative to its largest
    entry (the data and queries of :func:`kernels`)."""
    import jax
    import jax.numpy as jnp
    import torch

    fj = fs.backends.get("jax")
    ft = fs.backends.get("torch")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((50_000, D), dtype=np.float32)
    x = rng.standard_normal((B, D), dtype=np.float32)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    ref64 = fs.EmpiricalMarginal(path, data.astype(np.float64))
    rows = []
    for t in times:
        ref = ref64.velocity(x.astype(np.float64), t)
        row: dict[str, Any] = {"t": t}
        for tol in (None, 1e-3):
            f = jax.jit(lambda d, q, t=t, tol=tol: fj.marginal(path, d, q, t, tolerance=tol))
            j = np.asarray(f(jnp.asarray(data), jnp.asarray(x)))
            c = ft.marginal(
                path, torch.from_numpy(data), torch.from_numpy(x), t, tolerance=tol, compiled=True
            ).numpy()
            for name, v in (("jax", j), ("torch_compiled", c)):
                row[f"{name}_tol_{tol}"] = float(np.abs(v - ref).max() / np.abs(ref).max())
        rows.append(row)
        print(
            f"t={t:<5} max |v - v64| / max |v64|: default band JAX {row['jax_tol_None']:.1e}, "
            f"torch {row['torch_compiled_tol_None']:.1e}; tolerance 1e-3 JAX "
            f"{row['jax_tol_0.001']:.1e}, torch {row['torch_compiled_tol_0.001']:.1e}",
            flush=True,
        )
    return rows


def plot(rows: list[dict[str, Any]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["N"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.loglog(n, [r["one_process_pairs_per_s"] for r in rows], "o-", label="one process")
    ax.loglog(n, [r["cluster_pairs_per_s"] for r in rows], "s-", label="LocalCluster")
    ax.loglog(n, [B * r["N"] / r["gemm_s"] for r in rows], "k--", label="GEMM floor")
    ax.set_xlabel("data points N")
    ax.set_ylabel("(query, point) pairs / s")
    ax.set_title(f"exact marginal velocity, B = {B}, D = {D}, float32")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 3e5, 1e6, 2e6])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernels", action="store_true", help="part 2 only")
    parser.add_argument(
        "--accuracy", action="store_true", help="the kernels' errors against float64 only"
    )
    parser.add_argument("--times", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9, 0.99])
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="the torch and JAX kernels' band tolerance (default: the unit roundoff)",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.accuracy:
        result["accuracy"] = accuracy(args.times)
    elif args.kernels:
        result["kernels"] = kernels(args.repeats, args.times, args.tolerance)
    else:
        result["scaling"] = scaling([int(s) for s in args.sizes], args.workers, args.repeats)
        if args.plot:
            plot(result["scaling"], args.plot)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
