"""Self-check: flowspec on one array library against the NumPy float64 reference.

This is what ``flowspec check`` runs with no target: for every installed array
library it evaluates every public function of the core on random inputs (the schedules of
:data:`flowspec.schedules.CATALOGUE`, several shapes), compares float64 results with NumPy float64, float32
results with float64, and checks the paper's identities (Theorem 3, the continuity
equation, the Euler rule). Each :class:`Row` reports the worst error relative to its
tolerance; a row passes when that ratio is at most 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..continuity import continuity_bound, continuity_residual
from ..losses import cfm_loss
from ..ode import euler
from ..paths import GaussianPath
from ..schedules import CATALOGUE
from .libraries import LIBRARIES, float64_mode, installed_libraries, namespace, to_numpy

__all__ = [
    "LIBRARIES",
    "Row",
    "check_library",
    "continuity_bound",
    "installed_libraries",
]


@dataclass(frozen=True)
class Row:
    """One property checked on one library: worst error, tolerance, verdict."""

    library: str
    prop: str
    worst: float
    tol: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.worst <= self.tol)


def _err(got: Any, want: np.ndarray) -> float:
    """Worst absolute error relative to max(1, |want|), elementwise; NaN counts as inf."""
    g = to_numpy(got).astype(np.float64)
    if g.shape != want.shape:
        return math.inf
    with np.errstate(invalid="ignore"):
        e = np.abs(g - want) / np.maximum(1.0, np.abs(want))
    same_inf = np.isinf(g) & np.isinf(want) & (np.sign(g) == np.sign(want))
    e = np.where(same_inf, 0.0, e)
    return float(np.max(np.where(np.isnan(e), np.inf, e), initial=0.0))


def _inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    batch = shape[0]
    return {
        "x0": rng.standard_normal(shape),
        "x1": rng.standard_normal(shape),
        "x": rng.standard_normal(shape),
        # interior times, away from the singular endpoints of every schedule
        "t": rng.uniform(0.02, 0.98, size=batch),
    }


_PATH_FUNCS = ("sample", "target", "velocity", "log_prob", "score", "divergence")
_SHAPES = ((4, 4), (3, 2, 5), (7, 1))


def _path_args(fn: str, a: dict[str, Any]) -> tuple[Any, Any, Any]:
    first = a["x0"] if fn in ("sample", "target") else a["x"]
    return first, a["x1"], a["t"]


def _rows(name: str, xp: Any, seed: int) -> Iterator[Row]:
    rng = np.random.default_rng(seed)
    eps64 = float(np.finfo(np.float64).eps)
    eps32 = float(np.finfo(np.float32).eps)
    f64, f32 = xp.float64, xp.float32

    def conv(arrays: dict[str, np.ndarray], dtype: Any) -> dict[str, Any]:
        return {k: xp.asarray(v, dtype=dtype) for k, v in arrays.items()}

    worst = {"reference": 0.0, "float32": 0.0, "theorem 3": 0.0, "continuity": 0.0}
    for shape in _SHAPES:
        raw = _inputs(rng, shape)
        a64, a32 = conv(raw, f64), conv(raw, f32)
        for sched in CATALOGUE:
            path = GaussianPath(sched)
            for fn in _PATH_FUNCS:
                want = getattr(path, fn)(*_path_args(fn, raw))
                # the reference is NumPy float64: the same formula, so agreement is to
                # a few ulps of the inputs' magnitude
                worst["reference"] = max(
                    worst["reference"],
                    _err(getattr(path, fn)(*_path_args(fn, a64)), want) / (64 * eps64),
                )
                # float32: inputs rounded to float32 (relative error eps32/2) propagated
                # through coefficients with condition number up to ~1/sigma_t (>= 1/0.06
                # on these times) and through sums over up to 10 entries
                worst["float32"] = max(
                    worst["float32"],
                    _err(getattr(path, fn)(*_path_args(fn, a32)), want) / (1e4 * eps32),
                )
            x_t, u = path.sample_and_target(a64["x0"], a64["x1"], a64["t"])
            v = path.velocity(x_t, a64["x1"], a64["t"])
            worst["theorem 3"] = max(worst["theorem 3"], _err(v, to_numpy(u)) / (1e3 * eps64))
            x1 = a64["x1"]
            resid = continuity_residual(
                lambda t, x, p=path, x1=x1: p.log_prob(x, x1, t),
                lambda t, x, p=path, x1=x1: p.velocity(x, x1, t),
                a64["t"],
                a64["x"],
            )
            bound = continuity_bound(path, raw["x1"], raw["t"], raw["x"])
            worst["continuity"] = max(
                worst["continuity"], float(np.max(np.abs(to_numpy(resid)) / bound))
            )
    for prop, w in worst.items():
        yield Row(name, prop, w, 1.0, "ratio of the worst error to its tolerance")

    # the CFM loss against its definition
    raw = _inputs(rng, (5, 3, 2))
    got = cfm_loss(xp.asarray(raw["x0"]), xp.asarray(raw["x1"]), reduction="none")
    want = np.sum((raw["x0"] - raw["x1"]) ** 2, axis=(1, 2))
    yield Row(
        name,
        "cfm_loss",
        _err(got, want) / (64 * eps64),
        1.0,
        "ratio of the worst error to its tolerance",
    )

    # Euler's rule on dx/dt = t * x: x_{k+1} = x_k (1 + h t_k), t_k = k h exactly
    steps = 7
    x0 = rng.standard_normal((3, 2))
    want = x0 * np.prod([1.0 + (k / steps) / steps for k in range(steps)])
    got = euler(lambda t, x: xp.reshape(t, (-1, 1)) * x, xp.asarray(x0), steps=steps)
    yield Row(
        name,
        "euler",
        _err(got, want) / (64 * eps64),
        1.0,
        "ratio of the worst error to its tolerance",
    )


def check_library(name: str, seed: int = 0) -> list[Row]:
    """Run every self-check property of flowspec on array library ``name``."""
    if name not in LIBRARIES:
        raise ValueError(f"`name` must be one of {tuple(LIBRARIES)}, got {name!r}")
    xp = namespace(name)
    with warnings.catch_warnings(), float64_mode(name):
        warnings.simplefilter("ignore", RuntimeWarning)
        return list(_rows(name, xp, seed))
