"""examples/discrete_checkerboard.py runs at a tiny size; the doctests of flowspec.discrete run.

(The code blocks of docs/discrete.md run with every page's, collected by conftest.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_checkerboard_example_runs(tmp_path):
    pytest.importorskip("torch", reason="examples/discrete_checkerboard.py needs torch")
    pytest.importorskip("matplotlib", reason="the example's picture needs matplotlib")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    picture = tmp_path / "board.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "discrete_checkerboard.py"), "5", str(picture)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [float(v) for v in re.findall(r"cross-entropy (\S+)", proc.stdout)]
    assert len(losses) >= 2 and all(v == v and v >= 0.0 for v in losses), proc.stdout
    fraction = re.search(r"on the black cells: (\S+)", proc.stdout)
    assert fraction is not None and 0.0 <= float(fraction.group(1)) <= 1.0
    assert picture.stat().st_size > 1000


DISCRETE_MODULES = [
    "flowspec.discrete",
    "flowspec.discrete.schedules",
    "flowspec.discrete.paths",
    "flowspec.discrete.rates",
    "flowspec.discrete.losses",
    "flowspec.discrete.marginal",
    "flowspec.discrete.kolmogorov",
    "flowspec.discrete.sampler",
]


@pytest.mark.parametrize("module_name", DISCRETE_MODULES)
def test_discrete_doctests(module_name):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted > 0, (module_name, result)
