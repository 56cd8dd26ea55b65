"""Every Python code block of the documentation (docs/**/*.md and README.md) runs.

The blocks are collected by Sybil (the `test` extra). The blocks of one page share one
namespace and run in order, as a reader who pastes them one after the other would run
them. A block that cannot run here is preceded by an HTML comment that says why, e.g.

    <!-- skip: next "needs a CUDA GPU and CuPy" -->
    <!-- skip: next if(missing("torch"), reason="needs PyTorch") -->

and is reported as skipped with that reason. JAX runs the blocks in its default
configuration (64-bit types off), as a new user has it, whatever the tests set.
Without Sybil the documentation is not collected (the rest of the suite still runs).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

try:
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
except ImportError:  # the `test` extra is not installed: the docs are not collected
    Sybil = None


def _missing(module: str) -> bool:
    """True when `module` cannot be imported here (for `skip: next if(missing(...))`)."""
    return importlib.util.find_spec(module) is None


def _setup(namespace: dict[str, Any]) -> None:
    namespace["missing"] = _missing
    namespace["__name__"] = "__docs__"
    jax = sys.modules.get("jax")
    if jax is not None:  # the suite's JAX tests turn x64 on; a reader's JAX has it off
        namespace["_jax_x64"] = bool(jax.config.jax_enable_x64)
        jax.config.update("jax_enable_x64", False)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _teardown(namespace: dict[str, Any]) -> None:
    if "_jax_x64" in namespace:
        sys.modules["jax"].config.update("jax_enable_x64", namespace["_jax_x64"])


if Sybil is not None:
    pytest_collect_file = Sybil(
        parsers=[PythonCodeBlockParser(), SkipParser()],
        patterns=["README.md", "docs/*.md", "docs/*/*.md"],
        setup=_setup,
        teardown=_teardown,
    ).pytest()
