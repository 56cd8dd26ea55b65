r"""The kit's properties of coupled paths and couplings.

=============================  ===========================================================
id                             what is checked
=============================  ===========================================================
``agreement.coupled_sample``   ``coupled_sample`` against :class:`~flowspec.coupled_paths.
                               CoupledPath` (schedule, noise) on all of [0, 1]
``agreement.coupled_target``   ``coupled_target`` likewise (the noise-form target)
``agreement.coupled_velocity`` ``coupled_velocity`` likewise (the x-form field)
``coupling.plan``              the plan: non-negative, total mass 1, uniform marginals;
                               exact: its cost equals the optimal assignment's; entropic:
                               it equals the log-domain Sinkhorn plan of ``coupling_reg``
``coupling.pairs``             the paired batch: every x0 used exactly once and, for the
                               exact and independent couplings, every x1 too (no
                               duplicate, no miss); exact: its cost is the optimum
=============================  ===========================================================

Error model as in :mod:`.errors` for the path (K ulps per term plus the conditioning
in t). Plans: the marginals and the exact cost to :math:`K\epsilon` times the cost's
magnitude, the entropic plan to an L1 distance of ``PLAN_L1`` (what a Sinkhorn
iteration stopped at a marginal error of 1e-9 reaches for well-conditioned batches).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..coupled_paths import CoupledPath
from ..couplings import cost_matrix, exact_ot_indices, sinkhorn
from .errors import EPS, ULPS, Measure, compare, tolerance
from .libraries import to_numpy

__all__ = ["PLAN_L1", "coupled_properties"]

#: L1 distance allowed between an entropic plan and the reference's.
PLAN_L1 = 1e-6

Inputs = dict[str, Any]


def _raised() -> type[AssertionError]:
    from .properties import AdapterRaised

    return AdapterRaised


def _call(adapter: Any, method: str, *args: Any) -> Any:
    try:
        out = getattr(adapter, method)(*args)
    except Exception as exc:
        raise _raised()(f"`{method}` raised {type(exc).__name__}: {exc}") from exc
    if method == "pairs":
        return tuple(to_numpy(o) for o in out)
    return to_numpy(out)


# -- strategies ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _path_inputs(names: tuple[str, ...]) -> Any:
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from .errors import EPS as _E

    @st.composite
    def inputs(draw: Any) -> Inputs:
        b = draw(st.integers(1, 4))
        shape = draw(st.sampled_from([(b, 1), (b, 2), (b, b), (b, 2, 2)]))
        vals = st.floats(-8.0, 8.0, allow_nan=False, allow_subnormal=False)
        out = {n: draw(arrays(np.float64, shape, elements=vals)) for n in names}
        near = [0.0, 1.0, 1.0 - _E / 2, 1.0 - 1e-8, 1e-300, 1e-8, 0.5]
        t_el = st.one_of(st.sampled_from(near), st.floats(0.0, 1.0, allow_subnormal=False))
        out["t"] = draw(arrays(np.float64, (b,), elements=t_el))
        return out

    return inputs()


def _path_examples(names: tuple[str, ...]) -> list[Inputs]:
    base = np.array([[1.5, -2.0], [0.25, 3.0], [-1.0, 0.5]])
    ex = {n: base * (k + 1) - k for k, n in enumerate(names)}
    ex["t"] = np.array([0.0, 1e-8, 1.0])
    return [ex]


def _scale(adapter: Any) -> float:
    """The length scale of the batches: sqrt(reg) for an entropic plan (C / reg <= ~50)."""
    return math.sqrt(adapter.coupling_reg) if adapter.coupling == "entropic" else 1.0


@functools.lru_cache(maxsize=32)
def _batches(scale: float) -> Any:
    """Two batches of equal size 2..8 with distinct rows (so that rows identify samples)."""
    from hypothesis import strategies as st

    @st.composite
    def inputs(draw: Any) -> Inputs:
        b = draw(st.integers(2, 8))
        d = draw(st.integers(1, 3))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        x0 = scale * rng.uniform(-2, 2, (b, d))
        return {"x0": x0, "x1": scale * (rng.uniform(-2, 2, (b, d)) + 0.5)}

    return inputs()


def _batch_examples(adapter: Any) -> list[Inputs]:
    x0 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = _scale(adapter)
    rng = np.random.default_rng(0)
    # B = 32: a draw of 32 pairs with replacement repeats one with probability
    # 1 - 32!/32^32 > 1 - 1e-12, so a with-replacement draw fails here for sure
    out = [
        {"x0": x0, "x1": x0[[2, 0, 3, 1]] + 0.05},
        {"x0": s * rng.uniform(-2, 2, (32, 2)), "x1": s * rng.uniform(-1.5, 2.5, (32, 2))},
    ]
    if adapter.coupling == "entropic":
        # one x0 far from every x1: exp(-C / reg) underflows to 0 on its whole row
        # (C / reg ~ 4900), which a Sinkhorn outside the log domain cannot represent
        out.append({"x0": s * np.array([[0.0], [70.0]]), "x1": s * np.array([[0.7], [1.4]])})
    return out


# -- the coupled path ---------------------------------------------------------------------


def _col(c: Any, like: np.ndarray) -> np.ndarray:
    return np.reshape(np.asarray(c, dtype=np.float64), (like.shape[0],) + (1,) * (like.ndim - 1))


def _reference(method: str, path: CoupledPath, inputs: Inputs, t: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if method == "coupled_sample":
            return path.sample(inputs["x0"], inputs["x1"], inputs["eps"], t)
        if method == "coupled_target":
            return path.target(inputs["x0"], inputs["x1"], inputs["eps"], t)
        return path.velocity(inputs["x"], inputs["x0"], inputs["x1"], t)


def _terms(method: str, path: CoupledPath, inputs: Inputs) -> list[np.ndarray]:
    t = inputs["t"]
    like = inputs["x0"]
    with np.errstate(all="ignore"):
        al, si, dal, dsi = (_col(c, like) for c in path.schedule(t))
        g, dg, ratio = (_col(c, like) for c in path.noise(t))
        x0, x1 = inputs["x0"], inputs["x1"]
        if method == "coupled_sample":
            return [al * x1, si * x0, g * inputs["eps"]]
        if method == "coupled_target":
            return [dal * x1, dsi * x0, dg * inputs["eps"]]
        x = inputs["x"]
        return [dal * x1, dsi * x0, ratio * x, ratio * al * x1, ratio * si * x0]


_PATH_ARGS = {
    "coupled_sample": ("x0", "x1", "eps"),
    "coupled_target": ("x0", "x1", "eps"),
    "coupled_velocity": ("x", "x0", "x1"),
}


def _path_property(method: str) -> Any:
    from .properties import Property

    names = _PATH_ARGS[method]

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        path = CoupledPath(adapter.schedule, adapter.noise)
        t = inputs["t"]
        got = _call(adapter, method, *(inputs[n] for n in names), t)
        want = _reference(method, path, inputs, t)
        tol = tolerance(
            _terms(method, path, inputs), lambda tt: _reference(method, path, inputs, tt), t, want
        )
        return compare(got, want, tol, method)

    return Property(
        f"agreement.{method}",
        (method,),
        lambda adapter: _path_inputs(names),
        evaluate,
        lambda adapter: _path_examples(names),
    )


# -- couplings ----------------------------------------------------------------------------


def _rows(got: np.ndarray, pool: np.ndarray) -> list[int]:
    """The index in ``pool`` of each row of ``got`` (-1 where it is no row of the pool)."""
    out = []
    for row in got.reshape(got.shape[0], -1):
        hits = np.flatnonzero(np.all(pool.reshape(pool.shape[0], -1) == row, axis=1))
        out.append(int(hits[0]) if hits.size else -1)
    return out


def _optimum(x0: np.ndarray, x1: np.ndarray) -> tuple[float, np.ndarray]:
    cost = np.asarray(cost_matrix(x0, x1))
    i, j = exact_ot_indices(x0, x1)
    return float(cost[np.asarray(i), np.asarray(j)].sum()), cost


def _cost_tol(cost: np.ndarray) -> float:
    # every entry of C carries ~ (d + 2) ulps of |C|; a sum of B entries B times that
    return ULPS * EPS * float(np.abs(cost).max()) * cost.shape[0]


def _plan() -> Any:
    from .properties import Property

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        x0, x1 = inputs["x0"], inputs["x1"]
        plan = _call(adapter, "plan", x0, x1).astype(np.float64)
        b0, b1 = x0.shape[0], x1.shape[0]
        if plan.shape != (b0, b1):
            return Measure(failure=f"`plan` returned shape {plan.shape}, expected {(b0, b1)}")
        if not np.all(np.isfinite(plan)):
            return Measure(failure="`plan` returned non-finite entries")
        if np.any(plan < 0):
            return Measure(failure=f"`plan` has negative entries (min {plan.min():.3g})")
        kind = adapter.coupling
        if kind == "entropic":
            want = np.asarray(
                sinkhorn(x0, x1, adapter.coupling_reg, tol=1e-12, max_iter=100000).plan
            )
            err = float(np.abs(plan - want).sum())
            m = Measure(err, err, err / PLAN_L1)
            if err > PLAN_L1:
                m.failure = (
                    f"`plan` is at L1 distance {err:.3g} > {PLAN_L1} from the entropic plan of "
                    f"reg={adapter.coupling_reg!r} (total mass {plan.sum():.6g}, largest entry "
                    f"{plan.max():.3g} vs {want.max():.3g})"
                )
            return m
        marg = max(
            float(np.abs(plan.sum(1) - 1 / b0).sum()), float(np.abs(plan.sum(0) - 1 / b1).sum())
        )
        if marg > ULPS * EPS * max(b0, b1):
            return Measure(
                marg, marg, math.inf, f"`plan` marginals are off uniform by {marg:.3g} (L1)"
            )
        if kind == "exact":
            best, cost = _optimum(x0, x1)
            got = float(np.sum(plan * cost)) * b0  # a permutation plan has mass 1/B per pair
            tol = _cost_tol(cost)
            return compare(np.asarray(got), np.asarray(best), np.asarray(tol), "plan cost (x B)")
        return Measure(marg, marg, 0.0)

    return Property(
        "coupling.plan", ("plan",), lambda a: _batches(_scale(a)), evaluate, _batch_examples
    )


def _pairs() -> Any:
    from .properties import Property

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        x0, x1 = inputs["x0"], inputs["x1"]
        p0, p1 = _call(adapter, "pairs", x0, x1)
        b = x0.shape[0]
        if p0.shape != x0.shape or p1.shape != x1.shape:
            return Measure(
                failure=f"`pairs` returned shapes {p0.shape}, {p1.shape}; expected {x0.shape}"
            )
        i, j = _rows(p0, x0), _rows(p1, x1)
        if -1 in i or -1 in j:
            return Measure(failure="`pairs` returned a row that is in neither input batch")
        checks = [("x0", i)]
        if adapter.coupling in ("exact", "independent"):
            checks.append(("x1", j))
        for name, idx in checks:
            dup = b - len(set(idx))
            if dup:
                miss = sorted(set(range(b)) - set(idx))
                return Measure(
                    failure=f"`pairs` used {len(set(idx))} of the {b} samples of {name} "
                    f"({dup} duplicated, {len(miss)} missed: indices {miss}); a batch of B pairs "
                    f"should use each sample once"
                )
        if adapter.coupling == "exact":
            best, cost = _optimum(x0, x1)
            got = float(cost[np.asarray(i), np.asarray(j)].sum())
            return compare(
                np.asarray(got), np.asarray(best), np.asarray(_cost_tol(cost)), "pairs cost"
            )
        return Measure(0.0, 0.0, 0.0)

    return Property(
        "coupling.pairs", ("pairs",), lambda a: _batches(_scale(a)), evaluate, _batch_examples
    )


def coupled_properties() -> list[Any]:
    """The properties of coupled paths and couplings, in report order."""
    return [
        *(_path_property(m) for m in ("coupled_sample", "coupled_target", "coupled_velocity")),
        _plan(),
        _pairs(),
    ]
