"""Namespace resolution and input validation shared by every public function.

This module is public: new modules and backends validate their inputs with these
functions, so that every entry point of flowspec accepts and rejects the same things
with the same messages.

Each public function resolves the Array API namespace once, at its entry, with
:func:`namespace`, and validates its inputs with the helpers below. Validation reads
shapes and dtypes only; array *values* are read solely when they already live on the
host as Python numbers or NumPy arrays, so nothing here forces a device sync or
breaks tracing under ``jax.jit``.
"""

from __future__ import annotations

import collections.abc
import math
import numbers
from typing import Any

import array_api_compat
import numpy as np

from .typing import Array, Namespace

__all__ = [
    "LIKE",
    "check_batch",
    "check_data_to_noise",
    "check_float",
    "check_host_times",
    "check_output",
    "check_same_shape",
    "conditional_inputs",
    "describe",
    "device",
    "euler_times",
    "event_size",
    "host_grid",
    "is_weakly_typed",
    "namespace",
    "real_number",
    "representable_interval",
    "time_array",
]


def describe(value: Any) -> str:
    """A short, human description of a value for error messages."""
    if array_api_compat.is_array_api_obj(value):
        lib = type(value).__module__.split(".")[0]
        return f"a {lib} array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} of type {type(value).__name__}"


def namespace(**arrays: Any) -> Namespace:
    """Resolve the one Array API namespace shared by the named array arguments.

    Python numbers (and ``None``) are skipped. Anything else that is not an array is
    a TypeError naming the argument, and arrays from different libraries are a
    TypeError naming both arguments.
    """
    first_name = None
    first = None
    for name, value in arrays.items():
        if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            continue
        if not array_api_compat.is_array_api_obj(value):
            raise TypeError(f"`{name}` must be an array, got {describe(value)}")
        if first is None:
            first_name, first = name, value
            xp = array_api_compat.array_namespace(value)
            continue
        if array_api_compat.array_namespace(value) is not xp:
            raise TypeError(
                f"all arrays of one call must come from one library: `{first_name}` is "
                f"{describe(first)} but `{name}` is {describe(value)}"
            )
    if first is None:
        names = ", ".join(f"`{n}`" for n in arrays)
        raise TypeError(f"at least one of {names} must be an array")
    return xp


def device(x: Array) -> Any:
    """The device of ``x`` (as understood by array-api-compat)."""
    return array_api_compat.device(x)


def check_float(xp: Namespace, name: str, x: Array, like: tuple[str, Array] | None = None) -> None:
    """``x`` must have a real floating dtype, equal to that of ``like`` if given."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"`{name}` must have a real floating dtype, got {describe(x)}")
    if like is not None and x.dtype != like[1].dtype:
        raise TypeError(
            f"`{name}` and `{like[0]}` must share one floating dtype (no silent casts): "
            f"`{name}` is {x.dtype} but `{like[0]}` is {like[1].dtype}"
        )


def check_batch(name: str, x: Array) -> None:
    """``x`` must be batch-first and non-empty: at least one axis, the batch, and B >= 1.

    One rule for every public function: an empty batch is a ValueError naming the
    argument (a mean over no samples, a per-sample reshape of nothing, have no answer).
    """
    if x.ndim < 1:
        raise ValueError(f"`{name}` must be batch-first with shape (B, *event), got a 0-d array")
    if int(x.shape[0]) < 1:
        raise ValueError(
            f"`{name}` must hold at least one sample (B >= 1), got shape {tuple(x.shape)}"
        )


def check_same_shape(name_a: str, a: Array, name_b: str, b: Array) -> None:
    """``a`` and ``b`` must have exactly the same shape (no broadcasting)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape (B, *event): "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def conditional_inputs(arrays: dict[str, Array], t: Any) -> tuple[Namespace, Array]:
    """Validate the arrays and the time of a conditional path's call: ``(xp, t)``.

    The one entry of :meth:`flowspec.paths.GaussianPath.prepare` and
    :meth:`flowspec.coupled_paths.CoupledPath.prepare`. ``arrays`` maps argument names
    to arrays; the first is the reference: every array must be a real floating array
    of its namespace, dtype and shape (B, *event), B >= 1. ``t`` is reshaped to
    (B, 1, ..., 1) against it by :func:`time_array` (host values checked in [0, 1]).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.validation import conditional_inputs
    >>> xp, t = conditional_inputs({"x0": np.zeros((2, 3)), "x1": np.ones((2, 3))}, 0.5)
    >>> t.shape
    (2, 1)
    """
    (first, ref), *others = arrays.items()
    xp = namespace(**arrays, t=t)
    check_float(xp, first, ref)
    for name, a in others:
        check_float(xp, name, a, like=(first, ref))
    check_batch(first, ref)
    for name, a in others:
        check_same_shape(first, ref, name, a)
    return xp, time_array(xp, t, ref, x_name=first)


def event_size(x: Array) -> int:
    """Number of scalar entries of one sample: prod(x.shape[1:])."""
    return math.prod(int(s) for s in x.shape[1:])


def real_number(name: str, value: Any) -> float:
    """A finite Python real number (not a bool) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {describe(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{name}` must be finite, got {out!r}")
    return out


def integer(name: str, value: Any, low: int) -> int:
    """A Python (or NumPy) integer, not a bool, at least ``low``, as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {describe(value)}")
    return int(value)


def check_host_times(name: str, values: Any, lo: float, hi: float) -> None:
    """Host times (a Python float or a NumPy array) must be finite and lie in ``[lo, hi]``."""
    if isinstance(values, float):
        if lo <= values <= hi:  # False for NaN: the slow path below names the problem
            return
        values = np.asarray(values)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be finite, got {values!r}")
    if np.any(values < lo) or np.any(values > hi):
        raise ValueError(
            f"`{name}` must lie in [{lo}, {hi}], got values in [{values.min()!r}, {values.max()!r}]"
        )


def is_weakly_typed(t: Array) -> bool:
    """Whether ``t`` is a weakly typed scalar: how JAX carries a Python number through ``jit``.

    Such a scalar takes the dtype of the array it meets, as the Python number would.
    """
    aval = getattr(t, "aval", None)
    return bool(getattr(aval, "weak_type", getattr(t, "weak_type", False)))


# Per-type and per-dtype answers of the checks on the hot path (a set lookup instead of
# array-api-compat's dispatch on every call); the answers depend on the type or dtype only.
_ARRAY_TYPES: dict[type, bool] = {}
_FLOATING: dict[tuple[int, Any], bool] = {}


def _is_array(value: Any) -> bool:
    kind = type(value)
    known = _ARRAY_TYPES.get(kind)
    if known is None:
        known = _ARRAY_TYPES[kind] = bool(array_api_compat.is_array_api_obj(value))
    return known


def _is_real_floating(xp: Namespace, dtype: Any) -> bool:
    try:
        key = (id(xp), dtype)
        known = _FLOATING.get(key)
    except TypeError:  # an unhashable dtype: no cache
        return bool(xp.isdtype(dtype, "real floating"))
    if known is None:
        known = _FLOATING[key] = bool(xp.isdtype(dtype, "real floating"))
    return known


#: ``time_array(..., device=LIKE)``: create a time given as a Python number on x's device.
LIKE = "like"


def time_array(
    xp: Namespace,
    t: Any,
    x: Array,
    *,
    name: str = "t",
    x_name: str = "x",
    domain: tuple[float, float] | None = (0.0, 1.0),
    device: Any = LIKE,
) -> Array:
    """Reshape a time argument to (B, 1, ..., 1), explicitly, against ``x``.

    Accepted: a Python real number, a 0-d array, an array of shape (B,) or of shape
    (B, 1, ..., 1) with ``x.ndim`` axes. Arrays must share ``x``'s namespace and dtype
    (a weakly typed scalar, :func:`is_weakly_typed`, takes x's dtype). Host values
    (Python numbers, NumPy arrays) are checked to lie in ``domain``; device or traced
    values are never read.

    ``device`` is the placement policy of a time given as a Python number, the one
    array this function creates: :data:`LIKE` (the default) puts it on ``x``'s device;
    ``None`` passes no device, so the library places it by default (under ``jax.jit``
    the constant then follows ``x``'s sharding); anything else is a device of ``xp``.
    A time given as an array is reshaped, never moved.

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.validation import time_array
    >>> time_array(np, 0.5, np.zeros((2, 3, 4))).shape
    (2, 1, 1)
    >>> time_array(np, np.array([0.1, 0.2]), np.zeros((2, 3))).tolist()
    [[0.1], [0.2]]
    """
    batch = int(x.shape[0])
    target = (batch,) + (1,) * (x.ndim - 1)
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        value = real_number(name, t)
        if domain is not None:
            check_host_times(name, value, *domain)
        if device is LIKE:
            return xp.full(target, value, dtype=x.dtype, device=array_api_compat.device(x))
        if device is None:
            return xp.full(target, value, dtype=x.dtype)
        return xp.full(target, value, dtype=x.dtype, device=device)
    if not _is_array(t):
        raise TypeError(f"`{name}` must be a real number or an array, got {describe(t)}")
    if t.ndim == 0 and is_weakly_typed(t) and xp.isdtype(t.dtype, "real floating"):
        t = xp.astype(t, x.dtype)
    if t.dtype != x.dtype or not _is_real_floating(xp, t.dtype):
        check_float(xp, name, t, like=(x_name, x))  # raises, naming the problem
    shape = tuple(t.shape)
    if domain is not None and isinstance(t, (np.ndarray, np.generic)):
        check_host_times(name, np.asarray(t), *domain)
    if shape == ():
        return xp.broadcast_to(xp.reshape(t, (1,) * x.ndim), target)
    if shape == (batch,) or shape == target:
        return xp.reshape(t, target)
    raise ValueError(
        f"`{name}` must be a number, a 0-d array, or an array of shape (B,) = {(batch,)} "
        f"or (B, 1, ..., 1) = {target} to match `{x_name}` of shape {tuple(x.shape)}; "
        f"got shape {shape}"
    )


def check_output(name: str, out: Any, xp: Namespace, shape: tuple[int, ...], dtype: Any) -> Any:
    """A user callable's result must be an array of ``xp`` with this shape and dtype."""
    if (
        not array_api_compat.is_array_api_obj(out)
        or array_api_compat.array_namespace(out) is not xp
    ):
        raise TypeError(
            f"`{name}` must return an array of the namespace of `x`, got {describe(out)}"
        )
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise TypeError(
            f"`{name}` must return an array of shape {tuple(shape)} and dtype "
            f"{dtype}, got {describe(out)}"
        )
    return out


def host_grid(name: str, time_grid: Any) -> np.ndarray:
    """A host time grid (a sequence of numbers or a NumPy array) validated, as float64.

    It must be 1-D with at least two finite times, strictly increasing or strictly
    decreasing. Grids on a device are the callers' business (their values are not read).
    """
    if isinstance(time_grid, (str, bytes)) or not isinstance(
        time_grid, (collections.abc.Sequence, np.ndarray)
    ):
        raise TypeError(f"`{name}` must be a 1-D sequence of times, got {describe(time_grid)}")
    try:
        grid = np.asarray(time_grid)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a 1-D sequence of real times, got {describe(time_grid)}"
        ) from None
    if (
        grid.ndim != 1
        or grid.shape[0] < 2
        or not (np.issubdtype(grid.dtype, np.floating) or np.issubdtype(grid.dtype, np.integer))
    ):
        raise ValueError(
            f"`{name}` must be a 1-D sequence of at least 2 real times, got {time_grid!r}"
        )
    grid = grid.astype(np.float64)
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"`{name}` must be finite, got {time_grid!r}")
    steps = np.diff(grid)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(
            f"`{name}` must be strictly increasing or strictly decreasing, got {time_grid!r}"
        )
    return grid


def check_data_to_noise(name: str, first: float, last: float, time_grid: Any) -> None:
    """A likelihood grid runs from data to noise: strictly decreasing, inside [0, 1]."""
    if not first > last:
        raise ValueError(
            f"`{name}` must run from data to noise (strictly decreasing, e.g. from 1 down "
            f"to 0), got {time_grid!r}"
        )
    if first > 1.0 or last < 0.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {time_grid!r}")


def euler_times(steps: Any, t0: Any, t1: Any) -> tuple[list[float], float]:
    """The paper's Euler times ``t_k = t0 + k h``, k < steps, and ``h = (t1 - t0)/steps``.

    Validates ``steps`` (an integer >= 1) and ``t0 != t1`` (finite real numbers); the
    times are computed from k, never accumulated.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {describe(steps)}")
    t0 = real_number("t0", t0)
    t1 = real_number("t1", t1)
    if t0 == t1:
        raise ValueError(f"`t0` and `t1` must differ, got t0 = t1 = {t0!r}")
    h = (t1 - t0) / int(steps)
    return [t0 + k * h for k in range(int(steps))], h


def representable_interval(
    low: float, high: float, dtype: Any, xp: Namespace | None = None
) -> tuple[float, float]:
    """The least value >= ``low`` and the greatest value < ``high`` of a floating dtype.

    For drawing times in [low, high) as represented in ``dtype``, where rounding a draw
    to the nearest value can give ``high`` itself or a value below ``low`` (float16,
    bfloat16, and float32 next to an endpoint). ``xp`` is the namespace that owns
    ``dtype`` (NumPy by default, which also knows JAX's dtypes and computes on the host,
    so the call can sit inside ``jax.jit``; any namespace with ``asarray`` and
    ``nextafter``, e.g. ``torch`` or ``cupy``). A ValueError if no value of the dtype
    lies in [low, high).
    """
    ns: Any = np if xp is None else xp
    lo = ns.asarray(low, dtype=dtype)
    if float(lo) < low:
        lo = ns.nextafter(lo, ns.asarray(math.inf, dtype=dtype))
    hi = ns.asarray(high, dtype=dtype)
    if float(hi) >= high:
        hi = ns.nextafter(hi, ns.asarray(-math.inf, dtype=dtype))
    if not float(lo) <= float(hi):
        raise ValueError(
            f"`low` and `high`: no {dtype} value lies in [low, high) = "
            f"[{low!r}, {high!r}); widen the interval or use a longer dtype"
        )
    return float(lo), float(hi)
