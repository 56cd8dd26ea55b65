"""Importing flowspec imports no array framework."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_framework_free():
    code = (
        "import sys, flowspec, flowspec.conformance, flowspec.cli\n"
        "flowspec.backends.available()\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'array_api_strict', 'scipy') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_backend_registry_validates_names():
    import pytest

    import flowspec as fs

    with pytest.raises(ValueError, match="`name`"):
        fs.backends.get("tensorflow")
