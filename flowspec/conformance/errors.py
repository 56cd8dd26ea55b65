r"""The error model of the kit: what an implementation may differ from the reference by.

An implementation is accepted when its result is what the reference gives on inputs
perturbed by a few units in the last place, plus a few ulps of rounding in each term
of the formula (backward stability, the standard an expert implementation of a
floating-point formula can meet). Concretely, for a reference value :math:`r(t, \ldots)`
with terms :math:`s_j` (``r = sum_j s_j``, e.g. ``alpha x1`` and ``sigma x0``):

.. math::
    \text{tol} = K\epsilon \sum_j |s_j|
    + \max_{t' \in \{t (1 - K\epsilon),\, t (1 + K\epsilon)\}} |r(t') - r(t)|

with :math:`K` = :data:`ULPS` and :math:`\epsilon` the machine epsilon of the dtype
checked (float64, and float32 for the float32 results). The second term is the
conditioning in t: t is perturbed by K units *relative* to itself (K ulps of t, so
near t = 0 the perturbation shrinks with t), kept inside [0, 1]; a naive
``1 - t**2`` near t = 1 is accepted exactly when the reference itself moves that much
over a few ulps of t. A neighbour t' where the reference is not finite (a perturbation
that reaches a singular endpoint) is left out, so the tolerance near an endpoint stays
finite. Where the reference is finite the implementation must be finite; where the
reference is not finite (a singular endpoint, see ``schedule.degenerate_at`` and
``schedule.divergent_at``) nothing is required of the implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["EPS32", "TINY32", "ULPS", "Measure", "compare", "spread", "tolerance"]

#: K: ulps of slack per input and per term (64 ulps ~ 1.4e-14 relative in float64).
ULPS = 64
EPS = float(np.finfo(np.float64).eps)
#: The machine epsilon of float32, for the float32 results.
EPS32 = float(np.finfo(np.float32).eps)
TINY = float(np.finfo(np.float64).tiny)
#: The smallest normal float32: below it float32 results carry no relative accuracy
#: (gradual underflow rounds to a fixed absolute spacing), so a float32 tolerance
#: floors there, as a float64 one floors at TINY.
TINY32 = float(np.finfo(np.float32).tiny)


@dataclass
class Measure:
    """The outcome of one example: worst errors and, if it failed, why."""

    abs_err: float = math.nan
    rel_err: float = math.nan
    ratio: float = math.nan
    failure: str | None = None


def spread(
    ref: Callable[[np.ndarray], np.ndarray],
    t: np.ndarray,
    like: np.ndarray,
    eps: float = EPS,
) -> np.ndarray:
    """max |ref(t') - ref(t)| over t' = t (1 -/+ K eps) in [0, 1], shaped like ``like``.

    ``ref(t)`` evaluates the reference at times ``t`` (B,). A neighbour where the
    reference is not finite is left out (the other one still measures the
    conditioning); where the reference itself is not finite the result is ``inf``.
    """
    base = ref(t)
    out = np.zeros(like.shape)
    step = ULPS * eps * np.abs(t)
    with np.errstate(all="ignore"):
        for tp in (np.clip(t - step, 0.0, 1.0), np.clip(t + step, 0.0, 1.0)):
            moved = ref(tp)
            d = np.abs(moved - base)
            d = np.where(np.isfinite(moved), d, 0.0)
            d = np.where(np.isnan(d), np.inf, d)
            out = np.maximum(out, np.broadcast_to(d, like.shape))
    return out


def tolerance(
    terms: list[np.ndarray],
    ref: Callable[[np.ndarray], np.ndarray],
    t: np.ndarray,
    like: np.ndarray,
    eps: float = EPS,
    tiny: float = TINY,
) -> np.ndarray:
    """The tolerance of the module docstring for a reference ``like`` with these terms.

    ``eps`` and ``tiny`` are the machine epsilon and the smallest normal value of the
    dtype checked: the tolerance is never below ``tiny`` (under it, rounding is absolute).
    """
    with np.errstate(all="ignore"):
        size = sum(np.abs(np.broadcast_to(s, like.shape)) for s in terms)
        size = np.where(np.isfinite(size), size, np.inf)
        return np.maximum(ULPS * eps * size + spread(ref, t, like, eps), tiny)


def _fmt(a: float) -> str:
    return f"{a:.17g}"


def compare(got_any: np.ndarray, want: np.ndarray, tol: np.ndarray, what: str) -> Measure:
    """Compare an implementation's result with the reference under ``tol``.

    Fails on a shape mismatch, on a non-finite result where the reference is finite,
    and where ``|got - want| > tol``. The message names the first offending entry.
    """
    got = np.asarray(got_any)
    if got.shape != want.shape:
        return Measure(
            math.inf,
            math.inf,
            math.inf,
            f"`{what}` returned shape {got.shape}, expected {want.shape}",
        )
    if not np.issubdtype(got.dtype, np.floating):
        return Measure(
            math.inf, math.inf, math.inf, f"`{what}` returned dtype {got.dtype}, not floating"
        )
    g = got.astype(np.float64)
    tol = np.broadcast_to(tol, want.shape)
    spec = np.isfinite(want)
    with np.errstate(all="ignore"):
        err = np.where(spec, np.abs(g - want), 0.0)
        err = np.where(spec & ~np.isfinite(g), np.inf, err)
        # relative to |reference|, or to the tolerance where the reference is below it
        # (an error relative to a value that is zero up to rounding means nothing)
        rel = err / np.maximum(np.abs(np.where(spec, want, 0.0)), tol)
        ratio = np.where(spec, err / tol, 0.0)
    m = Measure(
        float(np.max(err, initial=0.0)),
        float(np.max(rel, initial=0.0)),
        float(np.max(ratio, initial=0.0)),
    )
    bad = spec & ~(err <= tol)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        if not np.isfinite(g[idx]):
            why = "is not finite where the specification is finite"
        else:
            why = f"differs by {err[idx]:.3g} > tolerance {tol[idx]:.3g}"
        m.failure = (
            f"`{what}` at index {idx}: got {_fmt(g[idx])}, reference {_fmt(want[idx])}: {why}"
        )
    return m
