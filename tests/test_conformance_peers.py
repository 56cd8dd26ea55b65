"""The shipped adapters for flow_matching and torchcfm, and what the kit finds in them.

The expected deviations below are the findings recorded in docs/conformance.md; if a
new release of a peer changes one, this test says so (update the docs with it).
Skipped when the peer is not installed (`pip install ".[peers]"`, torchcfm
with --no-deps).
"""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from flowspec.conformance import check, load_target

EXAMPLES = 5


def _run(target):
    return {
        a.name: check(a, max_examples=EXAMPLES, seed=0, target=target) for a in load_target(target)
    }


def _failed(report):
    return {r.prop for r in report.results if r.status != "pass"}


def test_flow_matching():
    pytest.importorskip("flow_matching")
    reports = _run("flow_matching")
    paths = {n: r for n, r in reports.items() if "AffineProbPath" in n}
    changes = {n: r for n, r in reports.items() if "ScheduleTransformedModel" in n}
    discrete = {n: r for n, r in reports.items() if "MixtureDiscreteProbPath" in n}
    assert len(paths) == 6  # five schedulers, Polynomial with two exponents
    assert len(changes) == 4
    assert len(discrete) == 2  # kappa = t (uniform source), t^2 (mask source)
    assert len(reports) == 12
    for name, rep in discrete.items():
        # the discrete deviations of docs/discrete.md
        assert rep.missing == [], name
        assert _failed(rep) == {"discrete.rate", "discrete.loss", "discrete.euler.grid"}, name
        res = {r.prop: r for r in rep.results}
        # t = 1: nan (inf * 0) where the rate's limit is 0 and the exact model's loss is 0
        assert "got nan, reference 0" in res["discrete.rate"].message
        assert "got nan, reference 0" in res["discrete.loss"].message
        assert "1.0" in res["discrete.loss"].counterexample["inputs"]["t"]["values"]
        # step_size = 1/49 takes 50 steps, the last evaluation at t = 1
        assert "steps = 49 evaluated the posterior 50 times" in res["discrete.euler.grid"].message
    for name, rep in paths.items():
        assert rep.missing == ["log_prob", "loss", "change_schedule"], name
        # Every path function and conversion helper agrees with the reference over
        # [0, 1], endpoints included; the continuity equation holds for its velocity.
        # Deviation: ODESolver(method="euler") with step_size=1/49 evaluates the field
        # 50 times, the last at t = 0.9999999999999999 (torchdiffeq's grid has
        # ceil(1/h + 1) points and 1/fl(1/49) > 49).
        # Deviation: snr_inverse(inf) is NaN (the SNR at a degenerate end, t = 1) for
        # every scheduler but Cosine: inf / (1 + inf) and the like.
        expected = {"euler"} if "Cosine" in name else {"euler", "snr_inverse"}
        if "VPScheduler()" in name and "Linear" not in name:
            # Deviation: near its degenerate end VPScheduler's sigma_t and slope leave the
            # float range where the reference is finite (coefficients.d_sigma -inf where
            # the reference is -1.5e7; the target on float32 inputs inf where it is 576),
            # and every function built on them follows.
            expected |= {
                "agreement.coefficients",
                "agreement.target",
                "agreement.velocity",
                "conversion.velocity_from_x0",
                "conversion.velocity_from_x1",
                "conversion.x0_from_x1",
                "conversion.x1_from_velocity",
            }
        assert _failed(rep) == expected, (name, [(r.prop, r.message) for r in rep.failures()])
        euler = next(r for r in rep.results if r.prop == "euler")
        assert "steps=49 evaluated the field 50 times" in euler.message
        assert euler.counterexample["inputs"]["steps"] == 49
        if "snr_inverse" in expected:
            res = next(r for r in rep.results if r.prop == "snr_inverse")
            assert "got nan, reference 1" in res.message
    for name, rep in changes.items():
        # Deviation: ScheduleTransformedModel computes dt_r / dr and ds_r / dr by 0/0
        # forms near the degenerate end: ~1e8 at r = 1 - 1e-12 for CondOT -> Cosine
        # where the exact field of the Gaussian data is ~1e-11
        assert _failed(rep) == {"schedule_change"}, name
        res = next(r for r in rep.results if r.prop == "schedule_change")
        assert "differs by" in res.message, res.message
        assert "0.999999999999" in res.counterexample["inputs"]["r"]["values"]


def test_torchcfm():
    pytest.importorskip("torchcfm")
    reports = _run("torchcfm")
    plain = {
        "torchcfm.ConditionalFlowMatcher(sigma=0)",
        "torchcfm.TargetConditionalFlowMatcher(sigma=0)",
        "torchcfm.TargetConditionalFlowMatcher(sigma=0.1)",
        "torchcfm.VariancePreservingConditionalFlowMatcher(sigma=0)",
    }
    assert plain <= set(reports)  # the sigma > 0 ones: tests/test_conformance_coupled.py
    for name, rep in ((n, reports[n]) for n in sorted(plain)):
        if name == "torchcfm.TargetConditionalFlowMatcher(sigma=0)":
            # Deviation: its target is the x-form field at x_t, (x1 - x_t)/(1 - t):
            # NaN at t = 1 where the specification's x1 - x0 is finite.
            assert _failed(rep) == {"agreement.target"}, name
            res = next(r for r in rep.results if r.prop == "agreement.target")
            assert "got nan" in res.message
            assert "1.0" in res.counterexample["inputs"]["t"]["values"]
        else:
            assert _failed(rep) == set(), (name, [(r.prop, r.message) for r in rep.failures()])
    assert "velocity" in reports["torchcfm.TargetConditionalFlowMatcher(sigma=0.1)"].capabilities
    assert "velocity" in reports["torchcfm.ConditionalFlowMatcher(sigma=0)"].missing


def test_missing_peer_is_an_import_error(monkeypatch):
    import sys

    for mod in ("torchcfm", "torchcfm.conditional_flow_matching"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "flowspec.conformance.peers.torchcfm", raising=False)
    with pytest.raises(ImportError):
        load_target("torchcfm")
