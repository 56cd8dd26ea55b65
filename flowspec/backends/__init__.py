"""Thin framework backends, loaded lazily by name.

``flowspec.backends.get("torch")`` imports ``flowspec.backends.torch`` (and PyTorch) on
first use; nothing here imports a framework until asked. The core never calls a
backend: the reference stays an independent oracle for them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["NAMES", "available", "get"]

#: Backend name -> the framework package it needs.
NAMES: dict[str, str] = {"torch": "torch", "jax": "jax", "cupy": "cupy"}


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{name}") is not None


def available() -> list[str]:
    """Names of the backends whose framework is installed (nothing is imported).

    Examples
    --------
    >>> import flowspec as fs
    >>> set(fs.backends.available()) <= {"torch", "jax", "cupy"}
    True
    """
    return [
        name
        for name, package in NAMES.items()
        if importlib.util.find_spec(package) is not None and _module_exists(name)
    ]


def get(name: str) -> ModuleType:
    """Import and return the backend module ``name`` ("torch", "jax" or "cupy").

    Raises
    ------
    ValueError
        An unknown name.
    ImportError
        The framework is not installed (the message says which package to install).

    Examples
    --------
    >>> import flowspec as fs
    >>> fs.backends.get("numpy")
    Traceback (most recent call last):
    ...
    ValueError: `name` must be one of ('torch', 'jax', 'cupy'), got 'numpy'
    """
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {tuple(NAMES)}, got {name!r}")
    if importlib.util.find_spec(NAMES[name]) is None:
        raise ImportError(
            f"the {name!r} backend needs {NAMES[name]!r}, which is not installed "
            f'(pip install ".[{name}]" in a checkout of flowspec)'
        )
    if not _module_exists(name):
        raise ImportError(f"this version of flowspec has no {name!r} backend module")
    return importlib.import_module(f"{__name__}.{name}")
