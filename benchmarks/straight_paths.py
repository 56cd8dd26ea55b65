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

Couplings (``--couplings``, on by default; ``--only-couplings`` skips the first table):
the same Euler experiment for the coupled path ``CoupledPath(CondOT(), ConstantNoise(0.1))``
conditioned on N pairs (x0_i, x1_i) drawn by a coupling of N standard-normal points with
the N data points: independent (the pairs as drawn), entropic (rows of the log-domain
Sinkhorn plan, reg = 2 sigma_SB^2 with sigma_SB = 1, in units of the data) and exact OT
(the optimal assignment). The exact marginal field of N pairs is the posterior-weighted
mean of the conditional fields, ``sum_i w_i(x) u_t(x | z_i)`` with
``w_i ∝ N(x | mu_t(z_i), gamma_t^2 I)``; it is sampled by Euler from N fresh
standard-normal points. The row "independent, all x0" is the limit of infinitely many
noise points: the exact marginal of ``GaussianPath(NoisySchedule(CondOT(), ConstantNoise(0.1)))``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

import flowspec as fs
from flowspec import couplings
from flowspec.coupled_paths import ConstantNoise, CoupledPath, NoisySchedule

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


def pair_field(path, z0, z1):
    """The exact marginal field of the coupled path over the N pairs (z0_i, z1_i)."""

    def field(t, x):
        tt = float(np.asarray(t).reshape(-1)[0])
        c = path.schedule(np.asarray(tt))
        n = path.noise(np.asarray(tt))
        mu = float(c.alpha) * z1 + float(c.sigma) * z0  # (N, d)
        d_mu = float(c.d_alpha) * z1 + float(c.d_sigma) * z0
        g = float(n.gamma)
        logits = -np.sum((x[:, None, :] - mu[None, :, :]) ** 2, axis=2) / (2 * g * g)
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        # sum_i w_i (d_mu_i + ratio (x - mu_i)) = w d_mu + ratio (x - w mu)
        return w @ d_mu + float(n.ratio) * (x - w @ mu)

    return field


COUPLED_STEPS = [1, 2, 4, 8, 16, 128]


def coupled_table(datasets, rng, n, sigma_sb=1.0):
    path = CoupledPath(fs.CondOT(), ConstantNoise(0.1))
    z0 = rng.normal(size=(n, 2))
    x0 = rng.normal(size=(n, 2))  # fresh noise for sampling
    u = rng.uniform(size=n)
    rows = {}
    for dname, data in datasets.items():
        m = fs.EmpiricalMarginal(fs.GaussianPath(NoisySchedule(path.schedule, path.noise)), data)
        fields = {
            "independent, all x0 (exact marginal)": lambda t, x, m=m: m.velocity(x, t),
            "independent, N pairs": pair_field(path, *couplings.independent(z0, data)),
            f"entropic (SB plan, reg = {2 * sigma_sb**2:g})": pair_field(
                path,
                *couplings.entropic_pairs(z0, data, 2 * sigma_sb**2, u, tol=1e-6, max_iter=20000),
            ),
            "exact OT": pair_field(path, *couplings.exact_ot_pairs(z0, data)),
        }
        for cname, field in fields.items():
            rows[(dname, cname)] = [w2(fs.euler(field, x0, steps=k), data) for k in COUPLED_STEPS]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="docs/img/straight_paths.png")
    parser.add_argument("--only-couplings", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.points
    datasets = {"8 gaussians": eight_gaussians(rng, n), "checkerboard": checkerboard(rng, n)}
    x0 = rng.normal(size=(n, 2))
    if args.only_couplings:
        print_coupled(datasets, n, args.seed)
        return
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
    print()
    print_coupled(datasets, n, args.seed)


def print_coupled(datasets, n, seed):
    start = time.perf_counter()
    rows = coupled_table(datasets, np.random.default_rng(seed + 1), n)
    elapsed = time.perf_counter() - start
    print(
        f"W2(samples, data), coupled path CondOT + ConstantNoise(0.1), N = {n} pairs, "
        f"seed {seed} ({elapsed:.0f} s)\n"
    )
    print("| data | coupling | " + " | ".join(f"{k}" for k in COUPLED_STEPS) + " |")
    print("|" + "---|" * (len(COUPLED_STEPS) + 2))
    for (dname, cname), vals in rows.items():
        print(f"| {dname} | {cname} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


if __name__ == "__main__":
    main()
