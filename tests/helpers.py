"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import numpy as np
import pytest

from flowspec.conformance.libraries import namespace, to_numpy

__all__ = [
    "CUPY_DTYPES",
    "LIBRARIES",
    "namespace_of",
    "normal_range",
    "time_range",
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


def normal_range(a, dtype):
    """`a` with entries below sqrt(tiny) of `dtype` in magnitude set to 0.

    For float32/float64 checks with relative error bounds on arrays drawn by
    Hypothesis (which reach 1e-45 and 1e-300 where normals never do): a subnormal
    result loses relative precision, and XLA's CPU runtime flushes subnormals to zero,
    an absolute error of up to `tiny` that relative bounds do not model. Entries >=
    sqrt(tiny) keep every product of the formulas with O(1e-3 .. 1e3) coefficients,
    and every square, in the normal range.
    """
    return np.where(np.abs(a) < np.sqrt(np.finfo(dtype).tiny), 0.0, a)


#: How far from an endpoint where the schedule is singular the tests' times stay.
SINGULAR_MARGIN = 0.05


def time_range(schedule) -> tuple[float, float]:
    """The closed interval of times where `schedule` is finite and non-degenerate.

    An endpoint where a coefficient diverges (``divergent_at``) or sigma_t vanishes
    (``degenerate_at``) is replaced by a time :data:`SINGULAR_MARGIN` inside it: the
    marginal tests' error models scale with 1 / sigma_t^2 and |d_sigma / sigma_t|,
    |d_alpha|, unbounded there (0.05 is the margin those tests always used). A regular
    endpoint is kept, so that VarianceExploding and CondOT with sigma_min > 0 are
    tested up to t = 1 included.
    """
    singular = {*schedule.divergent_at, *schedule.degenerate_at}
    lo = SINGULAR_MARGIN if 0.0 in singular else 0.0
    hi = 1.0 - SINGULAR_MARGIN if 1.0 in singular else 1.0
    return lo, hi


#: The dtypes of the CuPy tests: the kernels' CPU emulation and the GPU run.
CUPY_DTYPES = [np.float32, np.float64]
