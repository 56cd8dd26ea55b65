"""The twelve conversions between velocity, data, noise and score predictions.

Oracle: an independent exact implementation. For the float64 coefficients the
schedule returns, it solves x = alpha x1 + sigma x0 (and v = d_alpha x1 + d_sigma x0
where the source is the velocity) for (x1, x0) in exact rational arithmetic
(`fractions.Fraction`, Cramer's rule), then forms the target kind, and rounds once.
It shares no formula with flowspec.parameterisations (which uses the closed-form
coefficients of the Guide's Table 1).

Error model of the float64 result a*x + b*p: a and b are each a few (<= 4) correctly
rounded operations on the coefficients (relative error <= 4 eps each), then two
products and a sum: |got - exact| <= ULPS * eps * (|a x| + |b p|), ULPS = 8.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import flowspec as fs
from flowspec.formulas import KINDS, conversion
from flowspec.formulas import conversion_coefficients as coefficients
from flowspec.parameterisations import convert, convert_field

SCHEDULES = list(fs.schedules.CATALOGUE)
IDS = [repr(s) for s in SCHEDULES]
PAIRS = [(a, b) for a in KINDS for b in KINDS if a != b]
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
TINY64 = float(np.finfo(np.float64).smallest_normal)
ULPS = 8
#: t = 0, t = 1, within 1e-12 of both, and interior times
TIMES = np.array([0.0, 1e-300, 1e-12, 0.25, 0.5, 0.75, 1.0 - 1e-12, 1.0])


def _exact(c: tuple[float, float, float, float], p: float, x: float, source: str, target: str):
    """The exact target of one scalar, or None where the mathematics is singular."""
    al, si, dal, dsi = (Fraction(v) for v in c)
    p, x = Fraction(p), Fraction(x)
    try:
        if source == "velocity":
            det = al * dsi - si * dal  # [[al, si], [dal, dsi]] @ (x1, x0) = (x, v)
            x1 = (x * dsi - si * p) / det
            x0 = (al * p - dal * x) / det
        elif source == "x1":
            x1 = p
            x0 = (x - al * x1) / si if target != "x1" else None
        elif source == "x0":
            x0 = p
            x1 = (x - si * x0) / al if target in ("x1", "velocity") else None
        else:  # score = -x0 / sigma
            x0 = -si * p
            x1 = (x - si * x0) / al if target in ("x1", "velocity") else None
        if target == "velocity":
            return dal * x1 + dsi * x0
        if target == "x1":
            return x1
        if target == "x0":
            return x0
        return -x0 / si
    except ZeroDivisionError:
        return None


def _coefs(schedule, t):
    with np.errstate(all="ignore"):
        return tuple(np.asarray(v, dtype=np.float64) for v in schedule(t))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("source,target", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_direction_against_exact_arithmetic(schedule, source, target):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(TIMES.size, 3)) * 2.0
    p = rng.normal(size=(TIMES.size, 3)) * 2.0
    c = _coefs(schedule, TIMES)
    with np.errstate(all="ignore"):
        got = np.asarray(convert(schedule, p, x, TIMES, source=source, target=target))
        a, b = coefficients(fs.Coefficients(*(v[:, None] for v in c)), source, target)
        size = np.abs(a * x) + np.abs(b * p)
    for i in range(TIMES.size):
        ci = tuple(float(v[i]) for v in c)
        if not all(math.isfinite(v) for v in ci):
            # a coefficient is infinite (Schedule.divergent_at): the directions that use
            # it return what the arithmetic gives; those that do not stay exact
            used = {"alpha", "sigma"} | (
                {"d_alpha", "d_sigma"} if "velocity" in (source, target) else set()
            )
            names = ("alpha", "sigma", "d_alpha", "d_sigma")
            if any(not math.isfinite(v) for v, n in zip(ci, names, strict=True) if n in used):
                continue
            ci = tuple(v if n in used else 0.0 for v, n in zip(ci, names, strict=True))  # unused
        for j in range(3):
            want = _exact(ci, p[i, j], x[i, j], source, target)
            if want is None:  # singular: no clipping, the arithmetic's inf or nan
                assert not np.isfinite(got[i, j]), (TIMES[i], got[i, j])
                continue
            err = abs(Fraction(float(got[i, j])) - want) if np.isfinite(got[i, j]) else math.inf
            tol = ULPS * EPS64 * size[i, j] + 1e-300
            assert err <= tol, (TIMES[i], float(got[i, j]), float(want), float(err), tol)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_singular_directions_are_where_the_docs_say(schedule):
    """Each schedule's endpoint flags predict exactly which directions are singular."""
    x = np.array([[1.5], [1.5]])
    p = np.array([[-0.5], [-0.5]])
    t = np.array([0.0, 1.0])
    c = _coefs(schedule, t)
    for source, target in PAIRS:
        with np.errstate(all="ignore"):
            got = np.asarray(convert(schedule, p, x, t, source=source, target=target))
        for i, ti in enumerate(t):
            ci = tuple(float(v[i]) for v in c)
            det = ci[0] * ci[3] - ci[1] * ci[2]
            needs_sigma = target == "score" or (source == "x1" and target != "x1")
            needs_alpha = source in ("x0", "score") and target in ("x1", "velocity")
            from_velocity = source == "velocity"
            if "velocity" in (source, target) and ti in schedule.divergent_at:
                continue  # an infinite coefficient: whatever inf arithmetic gives
            singular = (
                (needs_sigma and ti in schedule.degenerate_at)
                or (needs_alpha and ti in schedule.signal_free_at)
                or (from_velocity and det == 0.0)
            )
            assert bool(np.isfinite(got[i, 0])) != singular, (source, target, ti, got[i, 0])


def test_endpoint_examples_of_the_issue():
    """x1 from v at t = 1 for CondOT(0) is x; x0 from v at t = 0 is x."""
    x = np.array([[0.75, -2.0]])
    v = np.array([[3.0, 1.0]])
    s = fs.CondOT()
    assert np.array_equal(convert(s, v, x, 1.0, source="velocity", target="x1"), x)
    assert np.array_equal(convert(s, v, x, 0.0, source="velocity", target="x0"), x)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@given(
    data=st.lists(st.floats(-4, 4, allow_subnormal=False), min_size=6, max_size=6),
    t=st.floats(0.0, 1.0),
)
def test_round_trips(schedule, data, t):
    """source -> target -> source is the identity wherever both directions are finite.

    Error model: each leg has the error of the module docstring; the second leg
    multiplies the first's error by |b'| = 1/|b| (its coefficient on the prediction),
    so |p'' - p| <= 2 ULPS eps (|a x| + |b p|) / |b| + ULPS eps (|a' x| + |b' q|).
    """
    x = np.array([data[:3]])
    p = np.array([data[3:]])
    c = fs.Coefficients(*(v.reshape(1, 1) for v in _coefs(schedule, np.array([t]))))
    for source, target in PAIRS:
        with np.errstate(all="ignore"):
            q = conversion(c, p, x, source, target)
            back = conversion(c, q, x, target, source)
            a, b = coefficients(c, source, target)
            a2, b2 = coefficients(c, target, source)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(back))):
            continue
        with np.errstate(over="ignore"):  # an infinite bound only where q is huge
            tol = 2 * ULPS * EPS64 * (
                (np.abs(a * x) + np.abs(b * p)) * np.abs(b2)
            ) + ULPS * EPS64 * (np.abs(a2 * x) + np.abs(b2 * q))
            # plus underflow: the first leg's products may flush to 0 (absolute error up
            # to the smallest normal), which the second leg multiplies by |b'|
            tol = tol + 4 * TINY64 * (1.0 + np.abs(b2))
        assert np.all(np.abs(back - p) <= tol), (source, target, t, back, p)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_float32_against_float64(schedule):
    """float32 in, float32 out, within the float32 error model.

    The float32 result is compared with the float64 result at the same (float32) t,
    x and prediction. Error model: the schedule's coefficients in float32 carry up to
    ~12 eps32 relative error (the exponent T <= 10.05 of VP, log(8000) of VE, amplify
    the rounding of their argument), the conversion adds ULPS: 32 eps32 (|a x| + |b p|).
    """
    eps32 = float(np.finfo(np.float32).eps)
    t32 = np.array([0.0, 1e-7, 0.1, 0.5, 0.9, 1.0 - 2**-24, 1.0], dtype=np.float32)
    rng = np.random.default_rng(5)
    x32 = rng.normal(size=(t32.size, 4)).astype(np.float32)
    p32 = rng.normal(size=(t32.size, 4)).astype(np.float32)
    t64, x64, p64 = (v.astype(np.float64) for v in (t32, x32, p32))
    c64 = fs.Coefficients(*(v[:, None] for v in _coefs(schedule, t64)))
    for source, target in PAIRS:
        with np.errstate(all="ignore"):
            got = convert(schedule, p32, x32, t32, source=source, target=target)
            want = convert(schedule, p64, x64, t64, source=source, target=target)
            a, b = coefficients(c64, source, target)
            ok = np.isfinite(want)
            tol = 32 * eps32 * (np.abs(a * x64) + np.abs(b * p64))
            err = np.abs(got.astype(np.float64) - want)
        assert got.dtype == np.float32
        assert np.all(err[ok] <= tol[ok]), (source, target, np.max(err[ok] / tol[ok]))


def test_a_term_that_overflows_does_not_make_a_finite_result_infinite(xp):
    """x1 from x0 at alpha = 2**-126 in float32: (x - sigma x0) / alpha = 3 * 2**126 is
    a float32 number, while the term (sigma / alpha) x0 alone is beyond the largest."""
    f32 = xp.float32
    t = xp.asarray([2.0**-126, 0.5], dtype=f32)
    x = xp.asarray([[-1.0], [-1.0]], dtype=f32)
    x0 = xp.asarray([[-4.0], [-4.0]], dtype=f32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning for a finite answer
        got = to_numpy(convert(fs.CondOT(), x0, x, t, source="x0", target="x1"))
    exact = np.array([[3.0 * 2.0**126], [(-1.0 + 0.5 * 4.0) / 0.5]])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.astype(np.float64), exact, rtol=4 * EPS32, atol=0)
    # the result stays infinite where it is not a float32 number (alpha = 2**-126, 5x0)
    big = to_numpy(convert(fs.CondOT(), 100 * x0, x, t, source="x0", target="x1"))
    assert np.isinf(big[0, 0]) and np.isfinite(big[1, 0])


def test_gradient_through_a_scaled_conversion_is_finite():
    torch = pytest.importorskip("torch")
    t = torch.tensor([2.0**-126, 0.5], dtype=torch.float32)
    x = torch.tensor([[-1.0], [-1.0]], requires_grad=True)
    x0 = torch.tensor([[-4.0], [-4.0]], requires_grad=True)
    out = convert(fs.CondOT(), x0, x, t, source="x0", target="x1")
    out.sum().backward()
    # d/dx = 1 / alpha, d/dx0 = -sigma / alpha: finite float32 numbers at both times
    assert torch.all(torch.isfinite(x.grad)) and torch.all(torch.isfinite(x0.grad))
    np.testing.assert_allclose(x.grad[:, 0].numpy(), [2.0**126, 2.0], rtol=4 * EPS32)


# -- the contract on every array library ------------------------------------------------


@pytest.mark.parametrize("t_shape", ["number", "0-d", "(B,)", "(B,1)"])
def test_namespace_dtype_and_t_rule(xp, t_shape):
    """B == D: a (B,) t must not broadcast along the event axis."""
    f64 = xp.float64
    x = xp.asarray([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [4.0, 0.0, -2.0]], dtype=f64)
    p = xp.asarray([[0.0, 1.0, -1.0], [2.0, 2.0, 0.5], [-1.0, 3.0, 1.0]], dtype=f64)
    tv = {
        "number": 0.25,
        "0-d": xp.asarray(0.25, dtype=f64),
        "(B,)": xp.asarray([0.25, 0.25, 0.25], dtype=f64),
    }
    tv["(B,1)"] = xp.reshape(tv["(B,)"], (3, 1))
    ref = convert(fs.Cosine(), np.asarray(to_numpy(p)), np.asarray(to_numpy(x)), 0.25,
                  source="x1", target="velocity")  # fmt: skip
    out = convert(fs.Cosine(), p, x, tv[t_shape], source="x1", target="velocity")
    assert type(out) is type(x) and out.dtype == x.dtype and tuple(out.shape) == (3, 3)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=4 * EPS64, atol=0)
    # distinct per-sample times: row i depends on t_i only
    t = xp.asarray([0.1, 0.5, 0.9], dtype=f64)
    out = to_numpy(convert(fs.Cosine(), p, x, t, source="velocity", target="x0"))
    for i, ti in enumerate((0.1, 0.5, 0.9)):
        row = convert(fs.Cosine(), to_numpy(p)[i : i + 1], to_numpy(x)[i : i + 1], ti,
                      source="velocity", target="x0")  # fmt: skip
        np.testing.assert_allclose(out[i : i + 1], row, rtol=4 * EPS64, atol=0)


def test_no_aliasing_and_no_mutation(xp):
    x = xp.asarray([[1.0, 2.0]], dtype=xp.float64)
    p = xp.asarray([[3.0, 4.0]], dtype=xp.float64)
    before = to_numpy(p).copy()
    out = convert(fs.CondOT(), p, x, 0.5, source="x1", target="x1")
    assert out is not p
    assert np.array_equal(to_numpy(p), before) and np.array_equal(to_numpy(out), before)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"source": "eps"}, ValueError, "`source`"),
        ({"target": 3}, ValueError, "`target`"),
        ({"schedule": "CondOT"}, TypeError, "`schedule`"),
        ({"prediction": np.zeros((2, 3))}, ValueError, "`x` and `prediction`"),
        ({"prediction": np.zeros((2, 2), dtype=np.float32)}, TypeError, "`prediction`"),
        ({"t": np.zeros(3)}, ValueError, "`t`"),
        ({"t": 1.5}, ValueError, "`t`"),
        ({"x": np.zeros(())}, ValueError, "`x`"),
    ],
)
def test_validation_names_the_argument(kwargs, err, match):
    args = {
        "schedule": fs.CondOT(),
        "prediction": np.zeros((2, 2)),
        "x": np.zeros((2, 2)),
        "t": 0.5,
        "source": "x1",
        "target": "velocity",
    }
    args.update(kwargs)
    if args["x"].ndim == 0:
        args["prediction"] = np.zeros(())
    with pytest.raises(err, match=match):
        convert(
            args["schedule"], args["prediction"], args["x"], args["t"],
            source=args["source"], target=args["target"],
        )  # fmt: skip


def test_convert_field_samples_the_exact_denoiser():
    """The EmpiricalMarginal denoiser as a velocity is the marginal velocity (eq. 8)."""
    data = np.array([[-1.0, 0.5], [2.0, 1.0], [0.25, -2.0]])
    for schedule in (fs.CondOT(), fs.Cosine(), fs.VariancePreserving()):
        m = fs.EmpiricalMarginal(fs.GaussianPath(schedule), data)
        v = convert_field(
            lambda t, x, m=m: m.denoise(x, t), schedule, source="x1", target="velocity"
        )
        x = np.array([[0.3, -0.2], [1.0, 2.0]])
        t = np.array([0.2, 0.7])
        # both evaluate (d_sigma/sigma)(x - alpha x1_hat) + d_alpha x1_hat, regrouped:
        # the residual x - alpha x1_hat is formed in both, so a few ulps of |v| terms
        want = m.velocity(x, t)
        np.testing.assert_allclose(v(t, x), want, rtol=0, atol=64 * EPS64 * np.max(np.abs(want)))
    with pytest.raises(TypeError, match="`field`"):
        convert_field(3, fs.CondOT(), source="x1", target="velocity")
