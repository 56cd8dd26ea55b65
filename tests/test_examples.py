"""The scripts in examples/ run, at a tiny size, so that they cannot rot.

Each script is run in a subprocess exactly as a user would run it, with the number of
training steps given on the command line; a missing framework skips with its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"train_torch.py": "torch", "train_jax.py": "jax"}
TINY_STEPS = 5
MAX_LINES = 80


@pytest.mark.parametrize("script", sorted(EXAMPLES), ids=sorted(EXAMPLES))
def test_example_is_short(script):
    lines = (ROOT / "examples" / script).read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_LINES, f"examples/{script} has {len(lines)} lines"


@pytest.mark.parametrize("script", sorted(EXAMPLES), ids=sorted(EXAMPLES))
def test_example_runs(script):
    pytest.importorskip(EXAMPLES[script], reason=f"examples/{script} needs {EXAMPLES[script]}")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(TINY_STEPS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"examples/{script} failed:\n{proc.stderr[-4000:]}"
    losses = [float(v) for v in re.findall(r"CFM loss (\S+)", proc.stdout)]
    # one line at step 0, at every fifth of the run, and at the last step
    assert len(losses) >= 2, proc.stdout
    assert all(v == v and v >= 0.0 for v in losses), f"a loss is negative or NaN: {losses}"
    fraction = re.search(r"within 1 of a mode: (\S+)", proc.stdout)
    assert fraction is not None, proc.stdout
    assert 0.0 <= float(fraction.group(1)) <= 1.0
