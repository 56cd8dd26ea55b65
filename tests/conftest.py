"""Shared fixtures: the `xp` fixture over every array library, Hypothesis profiles.

Profiles: "ci" (derandomized, bounded examples; the default when CI is set) and
"deep" (many examples, random seeds) for local runs: `HYPOTHESIS_PROFILE=deep pytest`.
"""

from __future__ import annotations

import importlib
import os

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "dev", max_examples=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

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


@pytest.fixture(params=LIBRARIES, ids=LIBRARIES)
def xp(request):
    """The Array API namespace of numpy, array-api-strict, torch, JAX (x64 on)."""
    return namespace_of(request.param)


def to_numpy(x) -> np.ndarray:
    """Any array as a NumPy array (through DLPack; CuPy through .get())."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(np.from_dlpack(x))
