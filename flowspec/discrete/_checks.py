"""Validation shared by the discrete modules: token arrays, vocabularies, float dtypes."""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

from .. import validation
from ..typing import Array


def vocab_size(name: str, value: Any) -> int:
    """A vocabulary size: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {validation.describe(value)}")
    return int(value)


def check_tokens(xp: Any, name: str, x: Array, vocab: int | None = None) -> None:
    """``x`` must be a batch-first integer array (B, *event) with at least one event axis.

    Host values (NumPy arrays) are checked to lie in [0, vocab); device or traced
    values are never read.
    """
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(
            f"`{name}` must be an integer array of tokens, got {validation.describe(x)}"
        )
    if x.ndim < 2:
        raise ValueError(
            f"`{name}` must be batch-first with shape (B, *event), at least 2-D, got shape "
            f"{tuple(x.shape)}"
        )
    if vocab is not None and array_api_compat.is_numpy_array(x) and x.size:
        lo, hi = int(np.min(x)), int(np.max(x))
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"`{name}` must hold tokens in [0, {vocab}), got values in [{lo}, {hi}]"
            )


def check_uniforms(xp: Any, name: str, u: Array) -> None:
    """``u`` must be floating; host values (NumPy arrays) must lie in [0, 1)."""
    validation.check_float(xp, name, u)
    if array_api_compat.is_numpy_array(u) and u.size:
        lo, hi = float(np.min(u)), float(np.max(u))
        if not (lo >= 0.0 and hi < 1.0):
            raise ValueError(f"`{name}` must hold uniforms in [0, 1), got values in [{lo}, {hi}]")


def check_same_shape(name_a: str, a: Array, name_b: str, b: Array) -> None:
    validation.check_same_shape(name_a, a, name_b, b)


def float_dtype(xp: Any, *candidates: Any) -> Any:
    """The floating dtype of the first floating array among ``candidates``, else the default.

    The default is the dtype a Python float takes in ``xp`` (float64 for NumPy,
    array-api-strict and JAX with x64; torch's default dtype for torch).
    """
    for c in candidates:
        if array_api_compat.is_array_api_obj(c) and xp.isdtype(c.dtype, "real floating"):
            return c.dtype
    return xp.asarray(0.0).dtype


def times(xp: Any, t: Any, x: Array, dtype: Any, name: str = "t", x_name: str = "x") -> Array:
    """``t`` reshaped to (B, 1, ..., 1) against the token array ``x``, in ``dtype``."""
    like = xp.zeros(tuple(x.shape), dtype=dtype, device=validation.device(x))
    return validation.time_array(xp, t, like, name=name, x_name=x_name)


def one_hot(xp: Any, x: Array, vocab: int, dtype: Any) -> Array:
    """(…, V) one-hot encoding of the integer array ``x``."""
    values = xp.arange(vocab, device=validation.device(x))
    return xp.astype(xp.expand_dims(x, axis=-1) == values, dtype)


def check_last_axis(name: str, p: Array, x_name: str, x: Array) -> int:
    """``p`` must have shape (*x.shape, V); returns V."""
    if p.ndim != x.ndim + 1 or tuple(p.shape[:-1]) != tuple(x.shape):
        raise ValueError(
            f"`{name}` must have shape (*{x_name}.shape, V) = {tuple(x.shape)} + (V,), got "
            f"shape {tuple(p.shape)}"
        )
    return int(p.shape[-1])
