r"""The properties the kit checks, one per definition, each a Hypothesis search.

A :class:`Property` has an id, the capabilities it needs, a Hypothesis strategy of
inputs (built lazily: importing this module imports no Hypothesis), explicit
examples that are always run first (the endpoints t = 0 and t = 1, B == D), and an
``evaluate(adapter, inputs) -> Measure``.

=======================  ===========================================================
id                       what is checked
=======================  ===========================================================
``agreement.<method>``   the method against the reference on all of [0, 1], endpoints
                         included, under the error model of :mod:`.errors`
``conversion.<name>``    a conversion helper against :func:`flowspec.convert` (the
                         coefficients of Guide Table 1, :mod:`flowspec.parameterisations`)
``snr_inverse``          t from the signal-to-noise ratio alpha_t / sigma_t, endpoints
                         included (inf at a degenerate end)
``schedule_change``      the post-training schedule change (Guide Sec. 4.8.2) of the
                         exact field of Gaussian data N(mu, tau^2 I) on the path of
                         ``source_schedule``, against that data's exact field on the
                         adapter's path, r = 0 and r = 1 included
``continuity``           the continuity equation (paper eq. 26) for the adapter's
                         velocity and its log_prob (or the reference's, so that the
                         velocity is checked to generate the claimed path)
``shapes``               output shapes (B, *event) / (B,), including B == D, and batch
                         independence: row i equals the call on sample i alone
``dtype``                float32 in, float32 out; float64 in, float64 out
``euler``                t_k = k h with h = 1/steps, one evaluation per step, and the
                         result of x_{k+1} = x_k + h v(t_k, x_k)
=======================  ===========================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..continuity import continuity_bound, continuity_residual
from ..formulas import conversion_coefficients
from ..losses import cfm_loss
from ..ode import euler as ref_euler
from ..paths import GaussianPath
from ..schedules import Coefficients, Schedule
from .adapter import CONVERSION_KINDS, CONVERSIONS, capabilities, to_numpy
from .coupled import coupled_properties
from .errors import EPS, EPS32, TINY, TINY32, ULPS, Measure, compare, tolerance

__all__ = ["Property", "properties"]

Inputs = dict[str, Any]


class AdapterRaised(AssertionError):
    """The implementation under test raised: a failure, with the input as counterexample."""


def _call(adapter: Any, method: str, *args: Any) -> np.ndarray:
    # the adapter gets copies: one that modifies its inputs in place cannot change the
    # kit's arrays (from which the reference is computed)
    args = tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)
    try:
        out = getattr(adapter, method)(*args)
    except Exception as exc:
        raise AdapterRaised(f"`{method}` raised {type(exc).__name__}: {exc}") from exc
    if method == "coefficients":
        return tuple(to_numpy(c) for c in out)
    return to_numpy(out)


@dataclass(frozen=True)
class Property:
    """One checkable definition."""

    id: str
    needs: tuple[str, ...]
    strategy: Callable[[Any], Any]
    evaluate: Callable[[Any, Inputs], Measure]
    examples: Callable[[Any], list[Inputs]]


# -- strategies (Hypothesis imported lazily) ---------------------------------------------


def _st() -> Any:
    from hypothesis import strategies as st

    return st


@functools.lru_cache(maxsize=512)
def _values(shape: tuple[int, ...], lo: float = -8.0, hi: float = 8.0) -> Any:
    from hypothesis.extra.numpy import arrays

    st = _st()
    return arrays(
        np.float64,
        shape,
        elements=st.floats(lo, hi, allow_nan=False, allow_subnormal=False, width=64),
    )


#: Batch sizes drawn often: 1, primes (odd chunk remainders) and a few dozen.
BATCHES = (1, 2, 3, 5, 7, 13, 31, 37)


@functools.lru_cache(maxsize=8)
def _shape(max_event: int = 12) -> Any:
    """(B, *event) with B in 1..40 (1 and primes often); event == (B,), i.e. B == D, often."""
    st = _st()

    @st.composite
    def shape(draw: Any) -> tuple[int, ...]:
        b = draw(st.one_of(st.sampled_from(BATCHES), st.integers(1, 40)))
        if b <= max_event and draw(st.booleans()):
            return (b, b)
        event = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
        while math.prod(event) > max_event:
            event.pop()
        return (b, *event)

    return shape()


@functools.lru_cache(maxsize=128)
def _times(batch: int, lo: float = 0.0, hi: float = 1.0) -> Any:
    st = _st()
    elem = st.floats(lo, hi, allow_nan=False, allow_subnormal=False)
    if lo == 0.0 and hi == 1.0:  # endpoints and their neighbours, often
        near = [0.0, 1.0, 1.0 - EPS / 2, 1.0 - 1e-8, 1e-300, 1e-8]
        elem = st.one_of(st.sampled_from(near), elem)
    from hypothesis.extra.numpy import arrays

    return arrays(np.float64, (batch,), elements=elem)


@functools.lru_cache(maxsize=64)
def _arrays_strategy(names: tuple[str, ...], with_t: bool, t_range: tuple[float, float] = (0, 1)):
    st = _st()

    @st.composite
    def inputs(draw: Any) -> Inputs:
        shape = draw(_shape())
        out = {n: draw(_values(shape)) for n in names}
        if with_t:
            out["t"] = draw(_times(shape[0], *t_range))
        return out

    return inputs()


#: Deterministic times approaching both endpoints at log-spaced distances 1e-2 ... 1e-15.
ENDPOINT_TIMES = np.array(
    [10.0**-k for k in range(2, 16)] + [1.0 - 10.0**-k for k in range(2, 16)] + [0.0, 1.0]
)


def _fixed(names: tuple[str, ...]) -> list[Inputs]:
    """Explicit inputs: both endpoints in one batch, B == D = 3 with distinct t, and the
    endpoint-approach times :data:`ENDPOINT_TIMES` (an odd batch of 30)."""
    base = np.array([[1.5, -2.0], [0.25, 3.0]])
    square = np.array([[1.0, -1.0, 2.0], [0.5, 2.5, -3.0], [-1.5, 0.75, 1.25]])
    ex1 = {n: base * (k + 1) - k for k, n in enumerate(names)}
    ex1["t"] = np.array([0.0, 1.0])
    ex2 = {n: square * (k + 1) + k for k, n in enumerate(names)}
    ex2["t"] = np.array([0.0, 0.5, 1.0])
    b = ENDPOINT_TIMES.shape[0]
    grid = np.stack([np.sin(np.arange(b) * 1.3) * 3.0, np.cos(np.arange(b) * 0.7) * 2.0], 1)
    ex3 = {n: grid * (k + 1) - 0.5 * k for k, n in enumerate(names)}
    ex3["t"] = ENDPOINT_TIMES.copy()
    return [ex1, ex2, ex3]


# -- reference values and their terms ----------------------------------------------------


def _col(c: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.reshape(c, (like.shape[0],) + (1,) * (like.ndim - 1))


def _coefs(s: Schedule, t: np.ndarray, like: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    with np.errstate(all="ignore"):
        c = tuple(np.asarray(v, dtype=np.float64) for v in s(t))
    return c if like is None else tuple(_col(v, like) for v in c)


def _linear(method: str, s: Schedule, t: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Reference terms (coef_a * a, coef_b * b) of the affine methods; a is x or x0."""
    al, si, dal, dsi = _coefs(s, t, a)
    with np.errstate(all="ignore"):
        if method in CONVERSION_KINDS:  # (x, prediction): flowspec.parameterisations
            source, target = CONVERSION_KINDS[method]
            coef = conversion_coefficients(Coefficients(al, si, dal, dsi), source, target)
            return coef[0] * a, coef[1] * b
        coef = {
            # method: (coefficient of the first array, of the second)
            "sample": (si, al),  # (x0, x1)
            "target": (dsi, dal),  # (x0, x1)
            "velocity": (dsi / si, dal - al * dsi / si),  # (x, x1), Theorem 3
        }[method]
        return coef[0] * a, coef[1] * b


def _reference(method: str, s: Schedule, inputs: Inputs, t: np.ndarray) -> np.ndarray:
    """The reference value of ``method`` at times ``t`` (flowspec's own functions)."""
    path = GaussianPath(s)
    with np.errstate(all="ignore"):
        if method in ("sample", "target"):
            return getattr(path, method)(inputs["x0"], inputs["x1"], t)
        if method in ("velocity", "log_prob"):
            return getattr(path, method)(inputs["x"], inputs["x1"], t)
        a, b = _linear(method, s, t, inputs["x"], inputs["y"])
        return a + b


def _terms(method: str, s: Schedule, inputs: Inputs) -> list[np.ndarray]:
    t = inputs["t"]
    if method in ("sample", "target"):
        return list(_linear(method, s, t, inputs["x0"], inputs["x1"]))
    if method == "velocity":
        x, x1 = inputs["x"], inputs["x1"]
        al, si, dal, dsi = _coefs(s, t, x)
        with np.errstate(all="ignore"):
            return [dsi / si * x, dsi / si * al * x1, dal * x1]
    if method == "log_prob":
        x, x1 = inputs["x"], inputs["x1"]
        al, si, _, _ = _coefs(s, t, x)
        d = math.prod(x.shape[1:])
        with np.errstate(all="ignore"):
            quad = np.sum(((np.abs(x) + np.abs(al * x1)) / si) ** 2, axis=tuple(range(1, x.ndim)))
            return [0.5 * quad, d * np.abs(np.log(si.reshape(-1))), np.full(x.shape[0], d * 1.0)]
    return list(_linear(method, s, t, inputs["x"], inputs["y"]))


# -- agreement ---------------------------------------------------------------------------

_ARGS = {
    "sample": ("x0", "x1"),
    "target": ("x0", "x1"),
    "velocity": ("x", "x1"),
    "log_prob": ("x", "x1"),
    "velocity_from_x1": ("y", "x"),
    "velocity_from_x0": ("y", "x"),
    "x1_from_velocity": ("y", "x"),
    "x0_from_velocity": ("y", "x"),
    "x1_from_x0": ("y", "x"),
    "x0_from_x1": ("y", "x"),
}


def _agreement(method: str) -> Property:
    names = ("x", "y") if method in CONVERSIONS else _ARGS[method]

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        s = adapter.schedule
        t = inputs["t"]
        args = [inputs[n] for n in _ARGS[method]]
        got = _call(adapter, method, *args, t)
        want = _reference(method, s, inputs, t)
        tol = tolerance(
            _terms(method, s, inputs), lambda tt: _reference(method, s, inputs, tt), t, want
        )
        m = compare(got, want, tol, method)
        if m.failure:
            return m
        # float32: the same inputs rounded to float32, against the float64 reference on
        # those rounded inputs under float32's error model (a float32 result computed in
        # a shorter dtype fails here, whatever its dtype tag says)
        r32 = {k: v.astype(np.float32) for k, v in inputs.items()}
        r64 = {k: v.astype(np.float64) for k, v in r32.items()}
        got32 = _call(adapter, method, *[r32[n] for n in _ARGS[method]], r32["t"])
        want32 = _reference(method, s, r64, r64["t"])
        tol32 = tolerance(
            _terms(method, s, r64),
            lambda tt: _reference(method, s, r64, tt),
            r64["t"],
            want32,
            eps=EPS32,
            tiny=TINY32,
        )
        with np.errstate(all="ignore"):
            # float32 holds values up to 3.4e38: beyond that the reference has no float32 answer
            want32 = np.where(np.abs(want32) <= float(np.finfo(np.float32).max), want32, np.nan)
            # ... and where alpha_t or sigma_t is nonzero but below float32's smallest
            # normal (e.g. t**2 at t = 1e-38) the float32 coefficient is subnormal or 0
            # and every formula dividing by it is 0/0 or inf: no float32 answer either;
            # nor where t itself is subnormal in float32 (flushed to 0 by XLA's CPU
            # runtime and by flush-to-zero hardware; e.g. dalpha / alpha = 1 / (2 t) of
            # Polynomial(0.5) overflows float32 at t = 1.4e-45)
            tt = r64["t"]
            if want32.ndim >= 1 and tt.ndim == 1 and want32.shape[0] == tt.shape[0]:
                al, si = (np.broadcast_to(np.abs(c), tt.shape) for c in _coefs(s, tt)[:2])
                under = ((al > 0) & (al < TINY32)) | ((si > 0) & (si < TINY32))
                under = under | ((np.abs(tt) > 0) & (np.abs(tt) < TINY32))
                want32 = np.where(_col(under, want32), np.nan, want32)
        m32 = compare(got32, want32, tol32, f"{method} on float32 inputs")
        return _worse(m, m32) if not m32.failure else m32

    pid = f"conversion.{method}" if method in CONVERSIONS else f"agreement.{method}"
    return Property(
        pid,
        (method,),
        lambda adapter: _arrays_strategy(names, True),
        evaluate,
        lambda adapter: _fixed(names),
    )


def _coefficients() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        t = inputs["t"]
        got = _call(adapter, "coefficients", t)
        if len(got) != 4:
            return Measure(failure=f"`coefficients` returned {len(got)} arrays, expected 4")
        want = _coefs(adapter.schedule, t)
        worst = Measure(0.0, 0.0, 0.0)
        for k, name in enumerate(("alpha", "sigma", "d_alpha", "d_sigma")):
            tol = tolerance([want[k]], lambda tt, k=k: _coefs(adapter.schedule, tt)[k], t, want[k])
            m = compare(got[k], want[k], tol, f"coefficients.{name}")
            worst = _worse(worst, m)
        return worst

    st_in = lambda adapter: _st().integers(1, 6).flatmap(lambda b: _st().builds(dict, t=_times(b)))  # noqa: E731
    return Property(
        "agreement.coefficients",
        ("coefficients",),
        st_in,
        evaluate,
        lambda adapter: [
            {"t": np.array([0.0, 1.0, 0.5, 1.0 - EPS / 2])},
            {"t": ENDPOINT_TIMES.copy()},
        ],
    )


def _loss() -> Property:
    def reduction(adapter: Any) -> str:
        return getattr(adapter, "loss_reduction", "mean")

    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        v, u = inputs["v"], inputs["u"]
        red = reduction(adapter)
        got = _call(adapter, "loss", v, u)
        want = np.asarray(cfm_loss(v, u, reduction=red))
        # each squared entry carries ~2 ulps relative to (|v| + |u|)^2, then the sum
        size = np.sum(((np.abs(v) + np.abs(u)) ** 2).reshape(v.shape[0], -1), axis=1)
        size = {"none": size, "sum": np.sum(size), "mean": np.mean(size)}[red]
        return compare(got, want, ULPS * EPS * size + 1e-300, f"loss (reduction={red!r})")

    def strategy(adapter: Any) -> Any:
        return _arrays_strategy(("v", "u"), False)

    return Property("agreement.loss", ("loss",), strategy, evaluate, lambda a: _fixed(("v", "u")))


def _worse(a: Measure, b: Measure) -> Measure:
    out = Measure(
        _nanmax(a.abs_err, b.abs_err), _nanmax(a.rel_err, b.rel_err), _nanmax(a.ratio, b.ratio)
    )
    out.failure = a.failure or b.failure
    return out


def _nanmax(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


# -- continuity --------------------------------------------------------------------------


def _continuity() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        s = adapter.schedule
        path = GaussianPath(s)
        x, x1, t = inputs["x"], inputs["x1"], inputs["t"]
        own = callable(getattr(adapter, "log_prob", None))

        def lp(tt: Any, xx: Any) -> np.ndarray:
            if own:
                return _call(adapter, "log_prob", xx, x1, np.asarray(tt))
            return path.log_prob(xx, x1, tt)

        def vel(tt: Any, xx: Any) -> np.ndarray:
            return _call(adapter, "velocity", xx, x1, np.asarray(tt))

        try:
            resid = np.asarray(continuity_residual(lp, vel, t, x))
        except TypeError as exc:  # wrong shape or dtype from the adapter
            raise AdapterRaised(f"log_prob/velocity returned a wrong array: {exc}") from exc
        bound = continuity_bound(path, x1, t, x)
        with np.errstate(all="ignore"):
            ratio = np.where(np.isfinite(resid), np.abs(resid) / bound, np.inf)
        m = Measure(float(np.max(np.abs(resid))), math.nan, float(np.max(ratio)))
        if not np.all(ratio <= 1.0):
            i = int(np.argmax(np.where(np.isnan(ratio), np.inf, ratio)))
            src = "its log_prob" if own else "the reference log_prob"
            m.failure = (
                f"continuity residual of `velocity` with {src} is {resid[i]:.3g} at sample "
                f"{i} (t={float(t[i])!r}), bound {bound[i]:.3g}: the field does not generate the "
                f"claimed path"
            )
        return m

    def strategy(adapter: Any) -> Any:
        st = _st()

        @st.composite
        def inputs(draw: Any) -> Inputs:
            b = draw(st.integers(1, 3))
            shape = draw(st.sampled_from([(b, 1), (b, 2), (b, b), (b, 2, 2)]))
            # interior times: the finite differences reach t -/+ 2e-3
            return {
                "x": draw(_values(shape, -4.0, 4.0)),
                "x1": draw(_values(shape, -4.0, 4.0)),
                "t": draw(_times(b, 0.01, 0.99)),
            }

        return inputs()

    def examples(adapter: Any) -> list[Inputs]:
        x = np.array([[0.5, -1.0], [2.0, 0.25]])
        return [{"x": x, "x1": x[::-1] * 2.0, "t": np.array([0.01, 0.99])}]

    return Property("continuity", ("velocity",), strategy, evaluate, examples)


# -- shapes and dtypes -------------------------------------------------------------------

_SHAPED = ("sample", "target", "velocity", "log_prob", "loss", *CONVERSIONS)


def _call_method(adapter: Any, method: str, inputs: Inputs) -> np.ndarray:
    if method == "loss":
        return _call(adapter, "loss", inputs["a"], inputs["b"])
    return _call(adapter, method, inputs["a"], inputs["b"], inputs["t"])


def _expected_shape(adapter: Any, method: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if method == "log_prob":
        return shape[:1]
    if method == "loss":
        return shape[:1] if getattr(adapter, "loss_reduction", "mean") == "none" else ()
    return shape


def _shapes() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        shape = inputs["a"].shape
        worst = Measure(0.0, 0.0, 0.0)
        for method in [m for m in _SHAPED if m in capabilities(adapter)]:
            out = _call_method(adapter, method, inputs)
            want = _expected_shape(adapter, method, shape)
            if out.shape != want:
                worst.failure = f"`{method}` returned shape {out.shape} for inputs of shape {shape}, expected {want}"
                return worst
            # batch independence: sample i alone gives row i (no mixing along the batch,
            # no t broadcast along an event axis when B == D)
            rows = [
                _call_method(adapter, method, {k: v[i : i + 1] for k, v in inputs.items()})
                for i in range(shape[0])
            ]
            red = getattr(adapter, "loss_reduction", "mean")
            if method == "loss" and red != "none":
                per = np.concatenate([np.reshape(r, (1,)) for r in rows])
                want_v = np.mean(per) if red == "mean" else np.sum(per)
                want_v = np.asarray(want_v)
            else:
                want_v = np.concatenate([np.reshape(r, (1, *want[1:])) for r in rows])
            with np.errstate(all="ignore"):
                tol = ULPS * EPS * np.where(np.isfinite(want_v), np.abs(want_v), 0.0) + 1e-300
            m = compare(out, want_v.astype(np.float64), tol, f"{method} (batch vs one sample)")
            if m.failure:
                m.failure += " (the batch result differs from the result for the sample alone)"
            worst = _worse(worst, m)
            if worst.failure:
                return worst
        return worst

    def strategy(adapter: Any) -> Any:
        return _arrays_strategy(("a", "b"), True, (0.0, 0.99))

    def examples(adapter: Any) -> list[Inputs]:
        a = np.arange(9.0).reshape(3, 3) / 4.0 - 1.0
        return [{"a": a, "b": a.T.copy(), "t": np.array([0.1, 0.5, 0.9])}]

    return Property("shapes", (), strategy, evaluate, examples)


def _dtype() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        caps = capabilities(adapter)
        for dtype in (np.float32, np.float64):
            cast = {k: v.astype(dtype) for k, v in inputs.items()}
            outs: dict[str, Any] = {}
            if "coefficients" in caps:
                for k, c in enumerate(_call(adapter, "coefficients", cast["t"])):
                    outs[f"coefficients[{k}]"] = c
            for method in [m for m in _SHAPED if m in caps]:
                outs[method] = _call_method(adapter, method, cast)
            if "euler" in caps:
                field = _Field(cast["a"].shape)
                outs["euler"] = _call(adapter, "euler", field, cast["a"], 2)
            for what, out in outs.items():
                if np.asarray(out).dtype != dtype:
                    return Measure(
                        failure=f"`{what}` returned dtype {np.asarray(out).dtype} for "
                        f"{np.dtype(dtype).name} inputs (a silent cast)"
                    )
        return Measure()

    def strategy(adapter: Any) -> Any:
        return _arrays_strategy(("a", "b"), True, (0.0, 0.99))

    def examples(adapter: Any) -> list[Inputs]:
        a = np.array([[0.5, -1.0], [2.0, 0.25]])
        return [{"a": a, "b": -a, "t": np.array([0.25, 0.75])}]

    return Property("dtype", (), strategy, evaluate, examples)


# -- Euler -------------------------------------------------------------------------------


class _Field:
    """The kit's velocity field v(t, x) = cos(3 t) x + t; records the times it is called at."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.calls: list[np.ndarray] = []

    def __call__(self, t: Any, x: Any) -> np.ndarray:
        t = np.asarray(t)
        x = np.asarray(x)
        batch = self.shape[0]
        if x.shape != self.shape:
            raise ValueError(f"field(t, x): x must have shape {self.shape}, got {x.shape}")
        if t.ndim == 0:
            t = np.full(batch, t.item())
        if t.shape != (batch,):
            raise ValueError(f"field(t, x): t must have shape () or ({batch},), got {t.shape}")
        self.calls.append(t.astype(np.float64))
        tt = t.reshape((batch,) + (1,) * (x.ndim - 1))
        return (np.cos(3.0 * tt) * x + tt).astype(x.dtype)


def _euler() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        x0, steps = inputs["x0"], int(inputs["steps"])
        field = _Field(x0.shape)
        got = _call(adapter, "euler", field, x0, steps)
        h = 1.0 / steps
        times = [float(c[0]) for c in field.calls]
        spread_t = [float(np.ptp(c)) for c in field.calls]
        if len(times) != steps or max(spread_t, default=0.0) > 0:
            return Measure(
                failure=f"`euler` with steps={steps} evaluated the field {len(times)} times at "
                f"t = {_short(times)} (per-sample times differ: {max(spread_t, default=0.0) > 0}); "
                f"expected {steps} evaluations at t_k = k/{steps}, k = 0..{steps - 1}"
            )
        expected = np.arange(steps) * h
        dt = np.abs(np.asarray(times) - expected)
        if np.any(dt > ULPS * EPS):
            k = int(np.argmax(dt))
            return Measure(
                abs_err=float(np.max(dt)),
                failure=f"`euler` with steps={steps}: step {k} evaluated the field at "
                f"t = {times[k]!r}, expected t_{k} = {k}/{steps} = {float(expected[k])!r}",
            )
        plain = _Field(x0.shape)
        states = np.asarray(ref_euler(plain, x0, steps=steps, return_path=True))
        want = states[-1]
        vel = [np.abs(plain(np.full(x0.shape[0], k * h), states[k])) for k in range(steps)]
        # each step rounds x_k + h v_k: K ulps of |x_k| + h |v_k|, summed over the steps
        size = np.sum(np.abs(states[:-1]), axis=0) + h * np.sum(vel, axis=0)
        return compare(got, want, ULPS * EPS * (size + np.abs(want)) + 1e-300, "euler")

    def strategy(adapter: Any) -> Any:
        st = _st()

        @st.composite
        def inputs(draw: Any) -> Inputs:
            shape = draw(_shape())
            return {"x0": draw(_values(shape, -4.0, 4.0)), "steps": draw(st.integers(1, 60))}

        return inputs()

    def examples(adapter: Any) -> list[Inputs]:
        x0 = np.array([[1.0, -2.0], [0.5, 3.0]])
        # 49: the smallest n with n * fl(1/n) != 1 (a grid built by accumulating or
        # dividing by h gains or loses a step there)
        return [{"x0": x0, "steps": n} for n in (1, 3, 49)]

    return Property("euler", ("euler",), strategy, evaluate, examples)


def _short(values: list[float]) -> str:
    if len(values) <= 6:
        return repr(values)
    return f"[{values[0]!r}, {values[1]!r}, ..., {values[-2]!r}, {values[-1]!r}]"


# -- SNR inverse and schedule change ----------------------------------------------------


def _snr_inverse() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        s = adapter.schedule
        t = inputs["t"]
        al, si, dal, dsi = _coefs(s, t)
        with np.errstate(all="ignore"):
            rho = al / si
            # the inverse maps a relative error d of rho to d rho / rho' in t
            scale = al * si / (dal * si - al * dsi)
        scale = np.where(np.isfinite(scale), np.abs(scale), 0.0)
        want = np.asarray(s.snr_inverse(rho), dtype=np.float64)
        got = _call(adapter, "snr_inverse", rho)
        tol = np.maximum(ULPS * EPS * (np.abs(want) + scale), TINY)
        return compare(got, want, tol, "snr_inverse")

    def strategy(adapter: Any) -> Any:
        return _st().integers(1, 6).flatmap(lambda b: _st().builds(dict, t=_times(b)))

    def examples(adapter: Any) -> list[Inputs]:
        return [{"t": np.array([0.0, 1e-12, 0.25, 0.5, 0.75, 1.0 - 1e-12, 1.0])}]

    return Property("snr_inverse", ("snr_inverse",), strategy, evaluate, examples)


#: The Gaussian data N(mu, tau^2 I) of the schedule-change property: its exact field
#: is finite on all of [0, 1] for every schedule with finite coefficients.
_GAUSS_MU, _GAUSS_TAU = 0.75, 0.6


def _gaussian_velocity(s: Schedule, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """v_t(x) = d_alpha mu + (d_alpha alpha tau^2 + d_sigma sigma)/(alpha^2 tau^2 + sigma^2) (x - alpha mu)."""
    al, si, dal, dsi = _coefs(s, t, x)
    mu, tau2 = _GAUSS_MU, _GAUSS_TAU**2
    with np.errstate(all="ignore"):
        gain = (dal * al * tau2 + dsi * si) / (al * al * tau2 + si * si)
        return dal * mu + gain * (x - al * mu)


class _GaussianField:
    """The exact velocity field of the Gaussian data on the path of ``schedule`` (NumPy)."""

    def __init__(self, schedule: Schedule, shape: tuple[int, ...]) -> None:
        self.schedule, self.shape = schedule, shape

    def __call__(self, t: Any, x: Any) -> np.ndarray:
        x = np.asarray(x)
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if t.size == 1:
            t = np.full(x.shape[0], t[0])
        if x.shape != self.shape or t.shape != (x.shape[0],):
            raise ValueError(
                f"field(t, x): x must have shape {self.shape} and t one time per sample, "
                f"got x {x.shape} and t {t.shape}"
            )
        # a time outside [0, 1] (NaN from an implementation's SNR inverse, say) gives NaN,
        # as a model evaluated there would: the comparison then names the entry
        valid = np.isfinite(t) & (t >= 0.0) & (t <= 1.0)
        v = _gaussian_velocity(self.schedule, np.where(valid, t, 0.5), x.astype(np.float64))
        return np.where(_col(valid, x), v, np.nan).astype(x.dtype)


def _schedule_change() -> Property:
    def evaluate(adapter: Any, inputs: Inputs) -> Measure:
        a = getattr(adapter, "source_schedule", None)
        if not isinstance(a, Schedule):
            return Measure(
                failure="an adapter with `change_schedule` must name the path its field was "
                f"trained on in `source_schedule` (a flowspec Schedule), got {a!r}"
            )
        b = adapter.schedule
        x, r = inputs["x"], inputs["r"]
        got = _call(adapter, "change_schedule", _GaussianField(a, x.shape), x, r)
        want = _gaussian_velocity(b, r, x)
        bl, bs, bdl, bds = _coefs(b, r, x)
        with np.errstate(all="ignore"):
            t_r = np.asarray(a.snr_inverse(np.reshape(bl / bs, (-1,))))
            al, si, dal, dsi = _coefs(a, t_r)
            det = al * dsi - si * dal
            # A's velocity determines the predictions (finite coefficients, D != 0) and
            # B's coefficients are finite: elsewhere the specification is silent
            regular = np.isfinite(det) & (det != 0) & np.isfinite(bdl * bds).reshape(-1)
            # t_r is a float64: A's SNR there is off by |rho_A'/rho_A| eps t_r, relatively
            drift = np.abs((dal * si - al * dsi) / (al * si)) * EPS * t_r
            drift = np.where(np.isfinite(drift), drift, 0.0)
            size = (np.abs(bdl) + np.abs(bds) + np.abs(want)) * (np.abs(x) + _GAUSS_MU)
        want = np.where(_col(regular, x), want, np.nan)
        tol = np.maximum((ULPS * EPS + 8.0 * _col(drift, x)) * size, TINY)
        return compare(got, want, tol, f"change_schedule from {a!r}")

    def strategy(adapter: Any) -> Any:
        st = _st()

        @st.composite
        def inputs(draw: Any) -> Inputs:
            shape = draw(_shape())
            return {"x": draw(_values(shape, -4.0, 4.0)), "r": draw(_times(shape[0]))}

        return inputs()

    def examples(adapter: Any) -> list[Inputs]:
        x = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.0], [0.0, 3.0], [1.0, 1.0]])
        return [{"x": x, "r": np.array([0.0, 1e-12, 0.5, 1.0 - 1e-12, 1.0])}]

    return Property("schedule_change", ("change_schedule",), strategy, evaluate, examples)


# -- the list ----------------------------------------------------------------------------


def all_properties() -> list[Property]:
    """Every property of the kit, in report order."""
    return [
        _coefficients(),
        *(_agreement(m) for m in ("sample", "target", "velocity", "log_prob")),
        _loss(),
        *(_agreement(m) for m in CONVERSIONS),
        _snr_inverse(),
        _schedule_change(),
        _continuity(),
        _shapes(),
        _dtype(),
        _euler(),
        *coupled_properties(),
    ]


def properties(adapter: Any) -> list[Property]:
    """The properties that apply to ``adapter`` (those whose capabilities it has)."""
    from .adapter import _discrete

    if _discrete(adapter):  # a discrete path: the properties of flowspec.conformance.discrete
        from .discrete import discrete_properties

        return discrete_properties(adapter)
    caps = set(capabilities(adapter))
    out = []
    for p in all_properties():
        if not set(p.needs) <= caps:
            continue
        if p.id in ("shapes", "dtype") and not (caps & {*_SHAPED, "coefficients", "euler"}):
            continue
        out.append(p)
    return out
