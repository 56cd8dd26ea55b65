"""EmpiricalMarginal.velocity: speed and peak extra memory against its lower bound.

Run: ``PYTHONPATH=. python benchmarks/marginal_velocity.py [--repeats 5]``

Compares, in one process, float32 NumPy:
  * ``EmpiricalMarginal.velocity`` at B = 1024 queries, N = 50,000 points, D = 64;
  * one matrix product of the same shape, (B, D) @ (D, N): the lower bound, since the
    streamed computation needs at least that product (and a second one of equal cost
    for the posterior-weighted sum of the data);
  * the naive broadcast implementation (a (B, N, D) difference tensor), at a size where
    it still fits (B = 128, N = 4,000), against ``velocity`` at that same size.
Peak extra memory is measured with tracemalloc (NumPy reports its buffers to it) while
one call runs, not counting the inputs and the stored data.

The same core code then runs on PyTorch CPU tensors (when torch is installed), against
torch's own matrix product: NumPy evaluates ``exp`` on one thread at about 5 ns per
float32 element, which alone costs more than two NumPy matrix products of this shape,
while torch's elementwise kernels are vectorised and threaded.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

import flowspec as fs


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_extra_mib(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return (peak - base) / 2**20


def naive_velocity(schedule, data, x, t):
    c = schedule(np.full((x.shape[0], 1), t, dtype=x.dtype))
    diff = x[:, None, :] - c.alpha[:, :, None] * data[None]
    logits = -np.sum(diff * diff, axis=2) / (2 * c.sigma**2)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    mean = w @ data
    return (c.d_sigma / c.sigma) * (x - c.alpha * mean) + c.d_alpha * mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    b, n, d = args.batch, args.points, args.dim
    data = rng.normal(size=(n, d)).astype(np.float32)
    x = rng.normal(size=(b, d)).astype(np.float32)
    t = 0.7
    schedule = fs.CondOT(sigma_min=0.01)
    m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
    data_t = np.ascontiguousarray(data.T)

    t_vel = median_time(lambda: m.velocity(x, t), args.repeats)
    t_mm = median_time(lambda: x @ data_t, args.repeats)
    mem_vel = peak_extra_mib(lambda: m.velocity(x, t))
    mem_mm = peak_extra_mib(lambda: x @ data_t)
    print(f"B={b} N={n} D={d} float32, numpy {np.__version__}, median of {args.repeats}")
    print(f"  velocity            {t_vel * 1e3:9.1f} ms   peak extra {mem_vel:8.1f} MiB")
    print(f"  one matmul (B,D)x(D,N) {t_mm * 1e3:6.1f} ms   peak extra {mem_mm:8.1f} MiB")
    print(f"  ratio velocity / one matmul: {t_vel / t_mm:.2f}")

    try:
        import torch
    except ImportError:
        print("  (torch is not installed: no torch row)")
    else:
        data_pt, x_pt = torch.from_numpy(data), torch.from_numpy(x)
        m_pt = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data_pt)
        data_pt_t = torch.from_numpy(data_t)
        t_vel_pt = median_time(lambda: m_pt.velocity(x_pt, t), args.repeats)
        t_mm_pt = median_time(lambda: x_pt @ data_pt_t, args.repeats)
        print(f"  the same on torch {torch.__version__} ({torch.get_num_threads()} threads):")
        print(f"  velocity            {t_vel_pt * 1e3:9.1f} ms")
        print(f"  one matmul (B,D)x(D,N) {t_mm_pt * 1e3:6.1f} ms")
        print(f"  ratio velocity / one matmul: {t_vel_pt / t_mm_pt:.2f}")

    bs, ns = 128, 4000
    xs, ds = x[:bs], data[:ns]
    ms = fs.EmpiricalMarginal(fs.GaussianPath(schedule), ds)
    ref = naive_velocity(schedule, ds, xs, t)
    err = float(np.max(np.abs(ms.velocity(xs, t) - ref)))
    t_small = median_time(lambda: ms.velocity(xs, t), args.repeats)
    t_naive = median_time(lambda: naive_velocity(schedule, ds, xs, t), args.repeats)
    mem_small = peak_extra_mib(lambda: ms.velocity(xs, t))
    mem_naive = peak_extra_mib(lambda: naive_velocity(schedule, ds, xs, t))
    print(f"B={bs} N={ns} D={d} float32 (naive broadcast fits; max |difference| {err:.1e})")
    print(f"  velocity            {t_small * 1e3:9.1f} ms   peak extra {mem_small:8.1f} MiB")
    print(f"  naive broadcast     {t_naive * 1e3:9.1f} ms   peak extra {mem_naive:8.1f} MiB")
    print(f"  ratio naive / velocity: {t_naive / t_small:.2f}")


if __name__ == "__main__":
    main()
