"""Array libraries by name: which are installed, their namespaces, and arrays to NumPy.

The tools that run flowspec on several libraries (``flowspec check``, the conformance
kit, the tests) pick a library by name here. Nothing is imported until a function is
called, and then through ``importlib``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["LIBRARIES", "installed_libraries", "namespace", "to_numpy"]

#: Library name -> the module to import for it.
LIBRARIES: dict[str, str] = {
    "numpy": "numpy",
    "array-api-strict": "array_api_strict",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
}


def installed_libraries() -> list[str]:
    """Names of the array libraries importable here (CuPy only with a CUDA device).

    Examples
    --------
    >>> from flowspec.conformance.libraries import installed_libraries
    >>> "numpy" in installed_libraries()
    True
    """
    names = [n for n, mod in LIBRARIES.items() if importlib.util.find_spec(mod) is not None]
    if "cupy" in names:
        try:
            cupy = importlib.import_module("cupy")
            cupy.cuda.runtime.getDeviceCount()
        except Exception:  # no driver or no device: CuPy is unusable here
            names.remove("cupy")
    return names


def namespace(name: str) -> Any:
    """The Array API namespace of library ``name``.

    JAX's float64 needs 64-bit mode: run the computations inside :func:`float64_mode`,
    which enables it for their duration only (the caller's setting is left alone).

    Raises
    ------
    ValueError
        An unknown name.
    ImportError
        The library is not installed.

    Examples
    --------
    >>> from flowspec.conformance.libraries import namespace
    >>> namespace("numpy").__name__
    'array_api_compat.numpy'
    """
    if name not in LIBRARIES:
        raise ValueError(f"`name` must be one of {tuple(LIBRARIES)}, got {name!r}")
    if name == "numpy":
        return array_api_compat.array_namespace(np.zeros(1))
    if name == "jax":
        return importlib.import_module("jax.numpy")
    module = importlib.import_module(LIBRARIES[name])
    return array_api_compat.array_namespace(module.asarray([0.0]))


def float64_mode(name: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which library ``name`` computes in float64: JAX's 64-bit mode,
    switched on for the ``with`` block and restored after; nothing for the others.

    Examples
    --------
    >>> from flowspec.conformance.libraries import float64_mode
    >>> with float64_mode("numpy"):
    ...     pass
    """
    if name == "jax":
        return importlib.import_module("jax").enable_x64(True)  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def to_numpy(x: Any) -> np.ndarray:
    """Any array as a NumPy array, dtype unchanged (DLPack; torch detached; CuPy via ``.get()``).

    Examples
    --------
    >>> import numpy as np
    >>> from flowspec.conformance.libraries import to_numpy
    >>> to_numpy(np.float64(2.0))
    array(2.)
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    module = type(x).__module__
    if module.startswith("cupy"):
        return x.get()
    if module.startswith("torch"):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(np.from_dlpack(x))
    except (TypeError, AttributeError, BufferError, RuntimeError):
        return np.asarray(x)
