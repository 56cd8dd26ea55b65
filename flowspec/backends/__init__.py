"""Thin framework backends, loaded lazily by name.

``flowspec.backends.get("torch")`` imports ``flowspec.backends.torch`` (and PyTorch) on
first use; nothing here imports a framework until asked. The core never calls a
backend: the reference stays an independent oracle for them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import NamedTuple

__all__ = ["CONTRACT", "EXTRAS", "NAMES", "Parameters", "available", "get"]


class Parameters(NamedTuple):
    """The parameters of a function of the backend contract.

    ``positional``: the names of the positional parameters, in order (``"*args"`` for
    a var-positional one), or ``None`` where they are the framework's own source of
    randomness (a key, a generator, a batch size); ``keyword``: keyword-only
    parameters every backend has. A backend may add keyword-only parameters of its
    own after these.

    Examples
    --------
    >>> import flowspec as fs
    >>> fs.backends.CONTRACT["sample_and_target"].positional
    ('path', 'x0', 'x1', 't')
    >>> fs.backends.CONTRACT["sample_time"]
    Parameters(positional=None, keyword=('low', 'high', 'dtype'))
    """

    positional: tuple[str, ...] | None
    keyword: tuple[str, ...] = ()


_PATH0 = Parameters(("path", "x0", "x1", "t"))
_PATH = Parameters(("path", "x", "x1", "t"))

#: The names every backend module exports, and their parameters (``None``: a constant).
#: Where the core has the function, the names and order are the core's; a path method
#: becomes a function that takes the path first. A backend computes each one with its
#: own implementation where it has a genuinely different one (a fused kernel, autodiff,
#: a compiled loop) and otherwise calls the core. The table is documented, with what
#: each backend adds, in the docs' "Backend contract" page.
CONTRACT: dict[str, Parameters | None] = {
    "METHODS": None,
    "sample": _PATH0,
    "target": _PATH0,
    "sample_and_target": _PATH0,
    "velocity": _PATH,
    "log_prob": _PATH,
    "score": _PATH,
    # divergence(field, t, x, *, method) of a field, or divergence(path, x, x1, t)
    "divergence": Parameters(("field", "t", "x", "*args"), ("method",)),
    "cfm_loss": Parameters(("v", "u", "reduction")),
    "euler": Parameters(("field", "x0", "steps", "t0", "t1", "return_path")),
    "integrate": Parameters(("field", "x0", "time_grid", "method", "return_path")),
    "continuity_residual": Parameters(("log_prob", "velocity", "t", "x")),
    "log_likelihood": Parameters(("field", "x1", "log_p0", "time_grid", "method", "divergence")),
    "sample_time": Parameters(None, ("low", "high", "dtype")),
    "sample_noise": Parameters(None),
}

#: The random draws of flowspec.discrete (from a generator or a key), torch and JAX.
_DISCRETE = ("discrete_euler", "discrete_sample", "discrete_source_sample")

#: Names a backend exports beyond the contract (documented on its page).
EXTRAS: dict[str, tuple[str, ...]] = {
    "torch": (
        "coefficients",
        "coupled_sample_and_target",
        "entropic_pairs",
        "marginal",
        "sample_rademacher",
        *_DISCRETE,
        # flowspec.riemannian (issue 18)
        "riemannian_divergence",
        "riemannian_log_likelihood",
        "riemannian_source",
    ),
    "jax": (
        "coupled_sample_and_target",
        "entropic_pairs",
        "marginal",
        "sharded_marginal",
        "sinkhorn",  # flowspec.couplings.sinkhorn in a lax.while_loop to `tol`
        *_DISCRETE,
        # flowspec.riemannian (issue 18)
        "riemannian_divergence",
        "riemannian_log_likelihood",
        "riemannian_source",
    ),
    "cupy": ("kernel_source",),
}

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
