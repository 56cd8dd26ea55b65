"""The `flowspec check` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowspec import cli
from flowspec.conformance import Row, library


def test_check_passes_on_numpy_and_strict(capsys):
    pytest.importorskip("array_api_strict")
    assert cli.main(["check", "numpy", "array-api-strict"]) == 0
    out = capsys.readouterr().out
    for prop in ("reference", "float32", "theorem 3", "continuity", "cfm_loss", "euler"):
        assert prop in out
    assert "FAIL" not in out


def test_check_exits_nonzero_on_a_failure(monkeypatch, capsys):
    def broken(name, seed=0):
        return [Row(name, "reference", 2.0, 1.0)]

    monkeypatch.setattr(library, "check_library", broken)
    monkeypatch.setattr("flowspec.conformance.command.check_library", broken)
    assert cli.main(["check", "numpy"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "flowspec.cli", "check", "numpy"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
