"""`flowspec demo`: option handling, the data sets, and a tiny end-to-end run per framework.

The full-size demo (2000 steps) is run by hand; here it runs at a few steps so that
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
    with pytest.raises(ValueError, match="`threads` must be an integer >= 1"):
        demo.run(out=None, threads=0)
    with pytest.raises(ValueError, match="`data` must be one of"):
        demo.run(out=None, data="spirals")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--schedule", "nope"], "argument --schedule: must be one of CondOT"),
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
        (["--steps", "many"], "argument --steps: must be an integer >= 1"),
        (["--threads", "-1"], "argument --threads: must be an integer >= 1"),
        (["--sample-steps", "0"], "argument --sample-steps: must be an integer >= 1"),
        (["--n-data", "0"], "argument --n-data: must be an integer >= 1"),
        (["--data", "spirals"], "argument --data: invalid choice"),
    ],
)
def test_bad_values_are_usage_errors(argv, message, capsys):
    for main in (lambda a: cli.main(["demo", *a]), demo.main):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "usage: flowspec demo" in err and message in err, err


def test_help_shows_defaults_and_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in (
        "(default: 2000)",
        "(default: CondOT)",
        "(default: checkerboard)",
        "(default: 1)",
        "{CondOT,VariancePreserving,VarianceExploding,Cosine,Polynomial,LinearVP}",
        "{auto,torch,jax}",
    ):
        assert fragment in text, fragment


def test_snapshot_times_follow_each_schedule():
    import flowspec as fs

    for name, schedule in demo.SCHEDULES.items():
        times = demo.snapshot_times(schedule, 100)
        assert times[0] == 0.0 and times[-1] == 1.0 and times == sorted(set(times)), name
        c = schedule(np.array(times[1:-1]))
        share = np.asarray(c.alpha) / (np.asarray(c.alpha) + np.asarray(c.sigma))
        with np.errstate(divide="ignore"):  # d_sigma at t = 1 may be -inf; unused here
            c0, c1 = schedule(0.0), schedule(1.0)
        lo = float(c0.alpha) / (float(c0.alpha) + float(c0.sigma))
        hi = float(c1.alpha) / (float(c1.alpha) + float(c1.sigma))
        # the interior times sit at 1/4, 1/2, 3/4 of the share's range, to the grid's
        # resolution: the share moves at most max|d share/dt| / 100 within one step
        assert np.all(np.abs((share - lo) / (hi - lo) - [0.25, 0.5, 0.75]) < 0.1), (name, share)
    assert demo.snapshot_times(fs.CondOT(), 100) == [0.0, 0.25, 0.5, 0.75, 1.0]
    # VP: alpha_t stays near 0 until late, so no interior snapshot before t = 0.5
    assert min(demo.snapshot_times(demo.SCHEDULES["VariancePreserving"], 100)[1:]) > 0.5


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("schedule", ["CondOT", "VariancePreserving"])
def test_cli_demo_writes_png(backend, schedule, tmp_path, capsys):
    pytest.importorskip(backend, reason=f"the {backend} demo needs {backend}")
    pytest.importorskip("matplotlib", reason="the demo's figure needs matplotlib")
    out = tmp_path / "sub" / "demo.png"
    status = cli.main(
        ["demo", "--out", str(out), "--steps", "3", "--sample-steps", "4", "--backend",
         backend, "--schedule", schedule, "--n-data", "64", "--no-progress"]
    )  # fmt: skip
    assert status == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert f"{schedule} path, 3 steps on {backend} (1 thread)" in printed
    assert "floor" in printed


def test_run_result_shapes_and_training_lowers_the_loss():
    pytest.importorskip("torch", reason="this run uses the torch trainer")
    res = demo.run(
        out=None, steps=100, data="eight-gaussians", batch=128, n_samples=300,
        n_data=400, sample_steps=8, seed=3, progress=False, backend="torch",
    )  # fmt: skip
    assert res.path.shape == (9, 300, 2) and res.samples.shape == (300, 2)
    assert res.data.shape == (400, 2) and res.marginal_samples.shape == (300, 2)
    assert np.all(np.isfinite(res.marginal_samples))
    # the floor is the CFM loss of the exact field: positive, below the trained loss
    floor = res.floor
    assert 0.0 < float(floor.low) <= float(floor.estimate) <= float(floor.high)
    assert float(floor.high) < np.mean(res.losses[-20:])
    assert np.array_equal(res.path[-1], res.samples)
    assert np.all(np.isfinite(res.path))
    # At initialisation v ~ 0 and the loss is E|x1 - x0|^2 ~ 9 + 0.09 + 2 ~ 11; the
    # optimum is the conditional-target variance (Theorem 2's constant), well below.
    # 100 Adam steps must remove a large part of the gap: compare the first and last
    # 20 batches (batch noise of a 20-batch mean is a few percent).
    first, last = np.mean(res.losses[:20]), np.mean(res.losses[-20:])
    assert last < 0.8 * first, (first, last)
