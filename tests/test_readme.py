"""The README's commands and examples are exactly what the project runs."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
NEEDS = {"torch": "torch", "jax": "jax"}


def _needed(code: str) -> list[str]:
    return [m for m in NEEDS if re.search(rf"^import {m}\b", code, flags=re.M)]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    for module in _needed(code):
        pytest.importorskip(module)
    if "jax" in _needed(code):
        import jax

        jax.config.update("jax_enable_x64", False)  # as a new user has it
    try:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    finally:
        if "jax" in _needed(code):
            jax.config.update("jax_enable_x64", True)


def test_ci_runs_the_readme_test_command():
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert len(bash) >= 2
    test_command = bash[1].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci
