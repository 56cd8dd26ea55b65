"""Coupling cost per training step: flowspec's exact OT and Sinkhorn against torchcfm's OTPlanSampler.

For batches x0, x1 of B = 256 and 1024 samples of shape (2,) and (3, 32, 32), float32
torch tensors on the CPU (what a training step hands to the coupling), the time to turn
the minibatch into paired batches:

- exact OT: ``flowspec.couplings.exact_ot_pairs`` with ``solver="auto"`` (cost matrix
  of the centred clouds in torch, SciPy's ``linear_sum_assignment`` on the host, a
  gather) against torchcfm's ``OTPlanSampler("exact").sample_plan`` (cost by
  ``torch.cdist``, POT's ``emd`` on the host, B draws with replacement from the
  flattened plan);
- entropic OT: ``flowspec.backends.get("torch").entropic_pairs`` (the stabilised
  scaling Sinkhorn in torch, ``tol=1e-5`` L1 marginal error, no warm start since reg is
  large here, one draw per row) against ``OTPlanSampler("sinkhorn", reg).sample_plan``
  (POT's ``sinkhorn`` in the exp domain on the host, POT's defaults: stop at 1e-9, at
  most 1000 iterations). Both use ``reg = 0.1 * median(C)``: the same plan, and large
  enough for POT's exp-domain kernel not to underflow (``exp(-C / reg)`` is 0 in
  float32 beyond C / reg ~ 87).

All run in one process, interleaved round-robin after a warm-up; the table gives the
median time per call and the ratio flowspec / torchcfm (below 1: flowspec is faster).
The exact solver's parts are timed separately: the (centred) cost matrix, its transfer
to the host (DLPack; zero-copy for CPU tensors), the assignment by each solver, and
SciPy's solver on the cost of the clouds as drawn (x1 is shifted by 0.5 against x0, as
data and noise means differ in training), to show what centring saves.

``--threads`` sets torch's threads and, before NumPy is imported, those of NumPy's
BLAS (OpenBLAS, OpenMP, MKL), which POT's Sinkhorn iterates with: both sides get the
same number of threads (an idle thread pool of a shared machine's BLAS can otherwise
cost POT's matrix-vector products two orders of magnitude).

Run: ``PYTHONPATH=. python benchmarks/bench_couplings.py [--rounds 7] [--threads 1]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    return parser


if __name__ == "__main__":  # before NumPy is imported: its BLAS reads these once
    _threads = str(_parser().parse_args().threads)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import array_api_compat  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import flowspec as fs  # noqa: E402
from flowspec import couplings  # noqa: E402

fst = fs.backends.get("torch")


def run_size(x0, x1, exact, sampler_class, gen, rounds):
    """Median seconds per call of each case on one minibatch, and diagnostics."""
    batch = int(x0.shape[0])
    cost = couplings.cost_matrix(x0, x1)
    reg = 0.1 * float(cost.median())
    sink = sampler_class("sinkhorn", reg=reg)
    # reg is large against the cost's spread here: no epsilon-scaling warm start
    options = {"tol": 1e-5, "max_iter": 1000, "on_failure": "warn", "scaling_stages": 0}

    def fs_exact():
        return couplings.exact_ot_pairs(x0, x1)

    def tc_exact():
        return exact.sample_plan(x0, x1)

    def fs_sink():
        return fst.entropic_pairs(x0, x1, reg, generator=gen, **options)

    def tc_sink():
        return sink.sample_plan(x0, x1)

    from scipy.optimize import linear_sum_assignment

    # what exact_ot_pairs solves: the cost of the clouds centred at their means
    xp = array_api_compat.array_namespace(x0, x1)
    centred = couplings._solver_cost(xp, x0, x1)

    def fs_cost():
        return couplings._solver_cost(xp, x0, x1)

    def fs_host():
        return np.from_dlpack(centred)

    def fs_scipy():
        return linear_sum_assignment(np.from_dlpack(centred))

    def fs_pot():
        return couplings._pot_permutation(np.from_dlpack(centred))

    def scipy_raw():  # the same solver on the cost of the clouds as they are
        return linear_sum_assignment(np.from_dlpack(cost))

    cases = {
        "exact: flowspec": fs_exact,
        "exact: torchcfm": tc_exact,
        "sinkhorn: flowspec": fs_sink,
        "sinkhorn: torchcfm": tc_sink,
        "  cost matrix": fs_cost,
        "  to host": fs_host,
        "  scipy": fs_scipy,
        "  pot": fs_pot,
        "  scipy, uncentred cost": scipy_raw,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    info: dict[str, object] = {
        "reg": round(reg, 4),
        "exact solver": couplings.exact_ot_solver(x0, x1),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fn in cases.values():  # warm-up
            fn()
        for r in range(rounds):
            names = list(cases)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                start = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - start)
        res = couplings.sinkhorn(x0, x1, reg, **options)
        pot_plan = sink.get_map(x0, x1)
    info["flowspec sinkhorn iterations"] = res.iterations
    info["flowspec sinkhorn L1 error"] = float(res.error)
    info["POT sinkhorn L1 error"] = float(np.abs(pot_plan.sum(1) - 1 / batch).sum())
    import ot

    unif = ot.unif(batch)
    info["POT sinkhorn iterations"] = ot.sinkhorn(unif, unif, cost.numpy(), reg, log=True)[1][
        "niter"
    ]
    info["warnings"] = sorted({str(w.message)[:60] for w in caught})
    return {k: statistics.median(v) for k, v in times.items()}, info


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)
    from torchcfm.optimal_transport import OTPlanSampler

    exact = OTPlanSampler("exact")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in (256, 1024):
        for event in ((2,), (3, 32, 32)):
            x0 = torch.randn(batch, *event, generator=gen)
            x1 = torch.randn(batch, *event, generator=gen) + 0.5
            med, info = run_size(x0, x1, exact, OTPlanSampler, gen, args.rounds)
            rows.append((batch, event, med, info))
            print(f"B={batch} event={event}: done", flush=True)

    print(
        f"\nmedian seconds per call, {args.rounds} rounds, torch and BLAS threads = "
        f"{args.threads}\n"
    )
    print(
        "| B | event | exact flowspec (solver) | exact torchcfm | ratio | sinkhorn flowspec "
        "| sinkhorn torchcfm | ratio | cost / to host / POT / SciPy | SciPy, uncentred |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch, event, med, info in rows:
        print(
            f"| {batch} | {event} | {med['exact: flowspec']:.4f} ({info['exact solver']}) "
            f"| {med['exact: torchcfm']:.4f} "
            f"| {med['exact: flowspec'] / med['exact: torchcfm']:.2f} "
            f"| {med['sinkhorn: flowspec']:.4f} | {med['sinkhorn: torchcfm']:.4f} "
            f"| {med['sinkhorn: flowspec'] / med['sinkhorn: torchcfm']:.2f} "
            f"| {med['  cost matrix']:.4f} / {med['  to host']:.1e} / {med['  pot']:.4f} "
            f"/ {med['  scipy']:.4f} | {med['  scipy, uncentred cost']:.4f} |"
        )
    print()
    for batch, event, _, info in rows:
        print(f"B={batch} event={event}: {info}")


if __name__ == "__main__":
    main()
