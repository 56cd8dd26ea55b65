"""`flowspec demo`: option handling, the data sets, and a tiny end-to-end run per framework.

The full-size demo (3000 steps) is run by hand; here it runs at a few steps so that
the suite stays fast. One slightly longer torch run checks that training with the CFM
loss actually lowers it.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowspec import cli, demo


@pytest.mark.parametrize("name", demo.DATASETS)
def test_sample_data(name):
    x = demo.sample_data(name, 500, np.random.default_rng(0))
    assert x.shape == (500, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    # every data set lies in the square [-4.5, 4.5]^2 that the figure frames (a
    # Gaussian mode of radius 3 with scale 0.3 leaves it with probability ~ 1e-6)
    assert np.max(np.abs(x)) < 4.5


def test_checkerboard_fills_alternate_cells():
    x = demo.sample_data("checkerboard", 4000, np.random.default_rng(1))
    cells = np.floor((x + 4.0) / 2.0).astype(int)
    assert np.all((cells.sum(axis=1) % 2) == 0)
    # all 8 filled cells are used (each has probability 1/8; 4000 draws miss one with
    # probability ~ 8 (7/8)^4000, i.e. never)
    assert len({tuple(c) for c in cells}) == 8


def test_schedule_names():
    assert set(demo.SCHEDULES) == {
        "CondOT", "VariancePreserving", "VarianceExploding", "Cosine", "Polynomial", "LinearVP",
    }  # fmt: skip
    assert type(demo.schedule_named("linearvp")).__name__ == "LinearVP"
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        demo.schedule_named("ddpm")


def test_bad_arguments():
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        demo.run(out=None, steps=0)
    with pytest.raises(ValueError, match="`data` must be one of"):
        demo.run(out=None, data="spirals")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--schedule", "nope"])


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("schedule", ["CondOT", "VariancePreserving"])
def test_cli_demo_writes_png(backend, schedule, tmp_path, capsys):
    pytest.importorskip(backend, reason=f"the {backend} demo needs {backend}")
    pytest.importorskip("matplotlib", reason="the demo's figure needs matplotlib")
    out = tmp_path / "sub" / "demo.png"
    status = cli.main(
        ["demo", "--out", str(out), "--steps", "3", "--sample-steps", "4", "--backend",
         backend, "--schedule", schedule, "--no-progress"]
    )  # fmt: skip
    assert status == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{schedule} path, 3 steps on {backend}" in capsys.readouterr().out


def test_run_result_shapes_and_training_lowers_the_loss():
    pytest.importorskip("torch", reason="this run uses the torch trainer")
    res = demo.run(
        out=None, steps=100, data="eight-gaussians", batch=128, n_samples=300,
        sample_steps=8, seed=3, progress=False, backend="torch",
    )  # fmt: skip
    assert res.path.shape == (9, 300, 2) and res.samples.shape == (300, 2)
    assert np.array_equal(res.path[-1], res.samples)
    assert np.all(np.isfinite(res.path))
    # At initialisation v ~ 0 and the loss is E|x1 - x0|^2 ~ 9 + 0.09 + 2 ~ 11; the
    # optimum is the conditional-target variance (Theorem 2's constant), well below.
    # 100 Adam steps must remove a large part of the gap: compare the first and last
    # 20 batches (batch noise of a 20-batch mean is a few percent).
    first, last = np.mean(res.losses[:20]), np.mean(res.losses[-20:])
    assert last < 0.8 * first, (first, last)
