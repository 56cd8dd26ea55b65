"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import importlib

import array_api_compat
import numpy as np
import pytest

LIBRARIES = ("numpy", "array_api_strict", "torch", "jax")


def namespace_of(name: str):
    """The Array API namespace of a library, or skip with the reason it is missing."""
    if name == "numpy":
        return array_api_compat.array_namespace(np.zeros(1))
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not installed: {exc}")
    if name == "jax":
        module.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return jnp
    return array_api_compat.array_namespace(module.asarray([0.0]))


def to_numpy(x) -> np.ndarray:
    """Any array as a NumPy array (through DLPack; CuPy through .get())."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    return np.asarray(np.from_dlpack(x))
