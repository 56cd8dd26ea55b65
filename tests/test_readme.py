"""The README's test command is exactly what CI runs.

The README's Python examples run with every other code block of the documentation:
see conftest.py at the repository root (Sybil).
"""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_ci_runs_the_readme_test_command():
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert len(bash) >= 2
    test_command = bash[1].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci
