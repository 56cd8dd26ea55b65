"""examples/sphere_vmf_torch.py runs, at a tiny size, exactly as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "sphere_vmf_torch.py"


def test_sphere_example_runs_and_stays_on_the_sphere(tmp_path):
    pytest.importorskip("torch", reason="examples/sphere_vmf_torch.py needs torch")
    pytest.importorskip("matplotlib", reason="examples/sphere_vmf_torch.py needs matplotlib")
    picture = tmp_path / "sphere.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "5", "--out", str(picture)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [float(v) for v in re.findall(r"CFM loss (\S+)", proc.stdout)]
    assert len(losses) >= 2 and all(v == v and v >= 0 for v in losses), proc.stdout
    # the rk4 solver keeps the samples on the sphere to float32 round-off (a few eps)
    drift = float(re.search(r"max \|x\| - 1: (\S+)", proc.stdout).group(1))
    assert drift <= 8 * 1.2e-7, proc.stdout
    fraction = float(re.search(r"within 0.5 rad of a mode: (\S+)", proc.stdout).group(1))
    assert 0.0 <= fraction <= 1.0
    assert picture.stat().st_size > 10_000
