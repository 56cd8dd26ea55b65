"""The ``flowspec marginal`` command: the exact marginal of a .npy data set, on a cluster or not.

``flowspec marginal DATA.npy --path condot --t 0.5 --queries Q.npy --out OUT.npy
[--quantity velocity] [--scheduler ADDRESS]`` evaluates one quantity of
:class:`flowspec.distributed.DaskMarginal` for the query batch ``Q.npy`` (B, *event) and
writes it to ``OUT.npy``. The data file is read chunk by chunk, memory-mapped, by the
tasks themselves: with ``--scheduler`` the workers open ``DATA.npy`` at the same path
(a shared file system), so the data never pass through this process. A progress bar
follows the chunks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import numpy as np

from .paths import GaussianPath
from .schedules import CondOT, Cosine, LinearVP, Schedule, VarianceExploding, VariancePreserving

__all__ = ["add_marginal_arguments", "run_marginal"]

PATHS: dict[str, type[Schedule]] = {
    "condot": CondOT,
    "vp": VariancePreserving,
    "ve": VarianceExploding,
    "cosine": Cosine,
    "linearvp": LinearVP,
}
QUANTITIES = ("velocity", "denoise", "score", "log_prob", "divergence")


def add_marginal_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``flowspec marginal``."""
    parser.add_argument("data", metavar="DATA.npy", help="data set, shape (N, *event)")
    parser.add_argument("--path", choices=sorted(PATHS), default="condot")
    parser.add_argument(
        "--sigma-min", type=float, default=None, help="sigma_min of the condot and ve paths"
    )
    parser.add_argument("--t", type=float, required=True, help="time in [0, 1]")
    parser.add_argument("--queries", required=True, metavar="Q.npy", help="shape (B, *event)")
    parser.add_argument("--out", required=True, metavar="OUT.npy")
    parser.add_argument("--quantity", choices=QUANTITIES, default="velocity")
    parser.add_argument(
        "--chunk", type=int, default=65536, help="data points per task (default 65536)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="address of a dask.distributed scheduler (default: this process, threads)",
    )


def _schedule(name: str, sigma_min: float | None) -> Schedule:
    cls = PATHS[name]
    if sigma_min is None:
        return cls()
    if cls not in (CondOT, VarianceExploding):
        raise ValueError(f"`--sigma-min` applies to the condot and ve paths, not {name!r}")
    return cls(sigma_min=sigma_min)


def _load(path: str, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a .npy file, read on the worker through a memory map."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def lazy_npy(path: str, chunk: int) -> Any:
    """A dask array over a .npy file whose tasks read their own rows (the path travels, not the data)."""
    dask = importlib.import_module("dask")
    da = importlib.import_module("dask.array")
    header = np.load(path, mmap_mode="r")
    shape, dtype = tuple(header.shape), header.dtype
    del header
    n = shape[0]
    parts = [
        da.from_delayed(
            dask.delayed(_load, pure=True)(path, start, min(start + chunk, n)),
            shape=(min(start + chunk, n) - start, *shape[1:]),
            dtype=dtype,
        )
        for start in range(0, n, chunk)
    ]
    return da.concatenate(parts, axis=0)


def run_marginal(args: argparse.Namespace) -> int:
    """Run ``flowspec marginal``; returns the exit status."""
    try:
        dask = importlib.import_module("dask")
        importlib.import_module("dask.array")
    except ImportError:
        print('flowspec marginal needs dask: pip install "flowspec[dask]"', file=sys.stderr)
        return 2
    from .distributed import DaskMarginal

    if args.chunk < 1:
        raise ValueError(f"`--chunk` must be an integer >= 1, got {args.chunk}")
    path = GaussianPath(_schedule(args.path, args.sigma_min))
    queries = np.load(args.queries)
    data = lazy_npy(args.data, args.chunk)
    if args.scheduler is None:
        diagnostics = importlib.import_module("dask.diagnostics")
        with diagnostics.ProgressBar(out=sys.stderr):
            m = DaskMarginal(path, data)
            graph, c, rows = m.statistics_graph(queries, args.t)
            (st,) = dask.compute(graph, scheduler="threads")
    else:
        distributed = importlib.import_module("distributed")
        with distributed.Client(args.scheduler) as client:
            m = DaskMarginal(path, data)
            graph, c, rows = m.statistics_graph(queries, args.t)
            future = client.compute(graph)
            distributed.progress(future)
            st = future.result()
    out = m.readout(args.quantity, st, c, rows, tuple(queries.shape))
    np.save(args.out, out)
    print(f"wrote {args.quantity} of shape {out.shape} to {args.out}", file=sys.stderr)
    return 0
