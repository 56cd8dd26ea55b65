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

Part 2 (fused kernels, ``--kernels``). B = 1024, N = 50,000, D = 64, float32, at
t in {0.3, 0.5, 0.7, 0.9, 0.99}: the JAX fused scan (``fs.backends.get("jax").marginal``
under ``jax.jit``) against one jitted JAX matrix product of the same shape, and the
NumPy ``EmpiricalMarginal`` against one NumPy product.
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
            gemm = median_time(lambda data_t=data_t: x @ data_t, reps)
            del data_t
            single = fs.EmpiricalMarginal(path, data)
            one = median_time(lambda single=single: single.velocity(x, T), reps)
            del single, data
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


def kernels(repeats: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    fj = fs.backends.get("jax")
    rng = np.random.default_rng(0)
    n = 50_000
    data = rng.standard_normal((n, D), dtype=np.float32)
    x = rng.standard_normal((B, D), dtype=np.float32)
    data_t = np.ascontiguousarray(data.T)
    path = fs.GaussianPath(fs.CondOT(sigma_min=0.01))
    single = fs.EmpiricalMarginal(path, data)
    jd, jx, jdt = jnp.asarray(data), jnp.asarray(x), jnp.asarray(data_t)
    jgemm = jax.jit(lambda a, b: a @ b)
    jgemm(jx, jdt).block_until_ready()
    g_np = median_time(lambda: x @ data_t, repeats)
    g_jax = median_time(lambda: jgemm(jx, jdt).block_until_ready(), repeats)
    rows = []
    for t in (0.3, 0.5, 0.7, 0.9, 0.99):
        f = jax.jit(lambda d, q, t=t: fj.marginal(path, d, q, t))
        f(jd, jx).block_until_ready()
        fused = median_time(lambda f=f: f(jd, jx).block_until_ready(), repeats)
        ref = median_time(lambda t=t: single.velocity(x, t), repeats)
        rows.append(
            {"t": t, "jax_fused_vs_jax_gemm": fused / g_jax, "numpy_vs_numpy_gemm": ref / g_np}
        )
        print(
            f"t={t:<5} JAX fused {fused / g_jax:4.2f}x one JAX GEMM   NumPy reference "
            f"{ref / g_np:4.2f}x one NumPy GEMM",
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
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.kernels:
        result["kernels"] = kernels(args.repeats)
    else:
        result["scaling"] = scaling([int(s) for s in args.sizes], args.workers, args.repeats)
        if args.plot:
            plot(result["scaling"], args.plot)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
