"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import numpy as np
import pytest

from flowspec.conformance.libraries import namespace, to_numpy

__all__ = [
    "CUPY_DTYPES",
    "LIBRARIES",
    "namespace_of",
    "to_numpy",
]

#: The libraries of the `xp` fixture (CuPy has its own GPU tests).
LIBRARIES = ("numpy", "array-api-strict", "torch", "jax")


def namespace_of(name: str):
    """The Array API namespace of a library, or skip with the reason it is missing.

    The test process runs JAX in 64-bit mode (the tests' choice; flowspec itself never
    changes the caller's JAX configuration).
    """
    try:
        xp = namespace(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not installed: {exc}")
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return xp


#: The dtypes of the CuPy tests: the kernels' CPU emulation and the GPU run.
CUPY_DTYPES = [np.float32, np.float64]
