"""The paper's straight-paths claim, reproduced with the exact marginal field.

Run: ``PYTHONPATH=. python benchmarks/straight_paths.py [--points 500] [--png PATH]``
(about a minute on two cores).

For two 2-D data sets (8 gaussians, checkerboard) of N points, the exact marginal field
of :class:`flowspec.EmpiricalMarginal` is Euler-sampled from N standard-normal points with
1, 2, 4, ..., 128 steps, for the CondOT (sigma_min = 0), VP and Cosine paths. Since the
field is exact, any error at the end is the solver's, i.e. a measure of how curved the
trajectories are. The 2-Wasserstein distance between the N samples and the N data points
is computed exactly by an optimal assignment (scipy.optimize.linear_sum_assignment).
Prints a Markdown table and writes a PNG plot.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

import flowspec as fs

STEPS = [1, 2, 4, 8, 16, 32, 64, 128]
SCHEDULES = {
    "CondOT": fs.CondOT(sigma_min=0.0),
    "VP": fs.VariancePreserving(),
    "Cosine": fs.Cosine(),
}


def eight_gaussians(rng, n):
    angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.4 * rng.normal(size=(n, 2))


def checkerboard(rng, n):
    # uniform on the 8 dark squares of a 4 x 4 board on [-4, 4]^2
    cells = rng.integers(0, 8, size=n)
    row = cells // 2
    col = 2 * (cells % 2) + (row % 2)
    u = rng.uniform(size=(n, 2))
    return np.stack([col + u[:, 0], row + u[:, 1]], axis=1) * 2.0 - 4.0


def w2(a, b):
    cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=2)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="docs/img/straight_paths.png")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.points
    datasets = {"8 gaussians": eight_gaussians(rng, n), "checkerboard": checkerboard(rng, n)}
    x0 = rng.normal(size=(n, 2))
    start = time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    for dname, data in datasets.items():
        results[dname] = {}
        for sname, schedule in SCHEDULES.items():
            m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)

            def field(t, x, m=m):
                return m.velocity(x, t)

            results[dname][sname] = [w2(fs.euler(field, x0, steps=k), data) for k in STEPS]
    elapsed = time.perf_counter() - start

    print(f"W2(samples, data), N = {n} points per set, seed {args.seed} ({elapsed:.0f} s)\n")
    header = "| data | path | " + " | ".join(f"{k}" for k in STEPS) + " |"
    print(header)
    print("|" + "---|" * (len(STEPS) + 2))
    for dname, per in results.items():
        for sname, vals in per.items():
            print(f"| {dname} | {sname} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        for ax, (dname, per) in zip(axes, results.items(), strict=True):
            for sname, vals in per.items():
                ax.loglog(STEPS, vals, marker="o", label=sname)
            ax.set_title(dname)
            ax.set_xlabel("Euler steps")
            ax.set_xticks(STEPS, [str(k) for k in STEPS])
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("W2(samples, data)")
        axes[0].legend()
        fig.suptitle("Exact marginal field, Euler sampling: error vs steps")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
