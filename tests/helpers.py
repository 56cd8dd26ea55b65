"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import numpy as np
import pytest

import flowspec as fs
from flowspec.conformance.libraries import namespace, to_numpy

__all__ = [
    "CUPY_DTYPES",
    "CUPY_SCHEDULES",
    "CUPY_SCHEDULE_IDS",
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


#: The schedules and dtypes of the CuPy tests: the kernels' CPU emulation and the GPU run.
CUPY_SCHEDULES = [
    fs.CondOT(),
    fs.CondOT(sigma_min=0.1),
    fs.VariancePreserving(),
    fs.VarianceExploding(),
    fs.Cosine(),
    fs.Polynomial(3),
    fs.LinearVP(),
]
CUPY_SCHEDULE_IDS = [repr(s) for s in CUPY_SCHEDULES]
CUPY_DTYPES = [np.float32, np.float64]
