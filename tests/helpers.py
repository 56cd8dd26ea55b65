"""Helpers shared by the tests (importable as `helpers`)."""

from __future__ import annotations

import pytest

from flowspec.backends.libraries import namespace, to_numpy

__all__ = ["LIBRARIES", "namespace_of", "to_numpy"]

#: The libraries of the `xp` fixture (CuPy has its own GPU tests).
LIBRARIES = ("numpy", "array-api-strict", "torch", "jax")


def namespace_of(name: str):
    """The Array API namespace of a library, or skip with the reason it is missing."""
    try:
        return namespace(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not installed: {exc}")
