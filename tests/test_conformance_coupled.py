"""The kit's coupled-path and coupling properties: the reference passes, mutants fail,
and what the kit finds in torchcfm's sigma > 0 matchers (recorded in docs/couplings.md).

torchcfm draws its pairs with NumPy's global generator (which Hypothesis seeds); the
verdict on its pairs does not depend on that seed: the kit's explicit batch of 32
repeats a pair drawn with replacement with probability 1 - 32!/32^32 > 1 - 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("scipy")

import flowspec as fs
from flowspec.conformance import check, load_target
from flowspec.coupled_paths import BrownianBridgeNoise, ConstantNoise, CoupledPath, NoiseScale
from flowspec.couplings import entropic_pairs, exact_ot_pairs, independent, sinkhorn

EXAMPLES = 5


class Reference:
    """flowspec's own coupled path and coupling, as an adapter."""

    def __init__(self, noise, coupling, reg=None, schedule=None):
        self.schedule = schedule or fs.CondOT()
        self.noise = noise
        self.coupling = coupling
        if reg is not None:
            self.coupling_reg = reg
        self.name = f"reference {noise!r} {coupling}"
        self.path = CoupledPath(self.schedule, noise)

    def coupled_sample(self, x0, x1, eps, t):
        return self.path.sample(x0, x1, eps, t)

    def coupled_target(self, x0, x1, eps, t):
        return self.path.target(x0, x1, eps, t)

    def coupled_velocity(self, x, x0, x1, t):
        return self.path.velocity(x, x0, x1, t)

    def plan(self, x0, x1):
        if self.coupling == "entropic":
            return sinkhorn(x0, x1, self.coupling_reg, tol=1e-12, max_iter=50000).plan
        n = x0.shape[0]
        i, j = exact_ot_pairs_indices(x0, x1)
        p = np.zeros((n, n))
        p[i, j] = 1 / n
        return p

    def pairs(self, x0, x1):
        if self.coupling == "exact":
            return exact_ot_pairs(x0, x1)
        if self.coupling == "entropic":
            u = np.random.default_rng(0).uniform(size=x0.shape[0])
            return entropic_pairs(x0, x1, self.coupling_reg, u, tol=1e-10, max_iter=50000)
        return independent(x0, x1)


def exact_ot_pairs_indices(x0, x1):
    from flowspec.couplings import exact_ot_indices

    return exact_ot_indices(x0, x1)


def _statuses(report):
    return {r.prop: r.status for r in report.results}


@pytest.mark.parametrize(
    "adapter",
    [
        Reference(BrownianBridgeNoise(1.0), "entropic", reg=2.0),
        Reference(ConstantNoise(0.1), "exact"),
        Reference(ConstantNoise(0.1), "independent", schedule=fs.Cosine()),
    ],
    ids=lambda a: a.name,
)
def test_the_reference_passes(adapter):
    report = check(adapter, max_examples=EXAMPLES)
    assert report.passed, [(r.prop, r.message) for r in report.failures()]
    want = {"agreement.coupled_sample", "agreement.coupled_target", "agreement.coupled_velocity"}
    want |= {"coupling.plan", "coupling.pairs"}
    assert set(_statuses(report)) == want


class Softened(NoiseScale):
    """torchcfm's SB ratio (1 - 2t) / (2 t (1 - t) + 1e-8): a mutant of the bridge."""

    def coefficients(self, xp, t):
        root = xp.sqrt(t * (1.0 - t))
        ratio = (1.0 - 2.0 * t) / (2.0 * t * (1.0 - t) + 1e-8)
        return (
            BrownianBridgeNoise(1.0).coefficients(xp, t)._replace(d_gamma=ratio * root, ratio=ratio)
        )


def test_mutants_fail():
    # a softened bridge derivative, pairs drawn with replacement, a non-optimal matching
    soft = Reference(BrownianBridgeNoise(1.0), "exact")
    soft.path = CoupledPath(fs.CondOT(), Softened())
    rep = check(soft, max_examples=EXAMPLES)
    st = _statuses(rep)
    assert st["agreement.coupled_target"] == "fail" and st["agreement.coupled_velocity"] == "fail"
    assert st["agreement.coupled_sample"] == "pass"

    class Replace(Reference):
        def pairs(self, x0, x1):
            i = np.random.default_rng(1).integers(0, x0.shape[0], x0.shape[0])
            return x0[i], x1[i]

    rep = check(Replace(ConstantNoise(0.1), "independent"), max_examples=EXAMPLES)
    assert _statuses(rep)["coupling.pairs"] == "fail"
    assert "duplicated" in next(r for r in rep.results if r.prop == "coupling.pairs").message

    class Identity(Reference):
        def pairs(self, x0, x1):
            return independent(x0, x1)

        def plan(self, x0, x1):
            return np.eye(x0.shape[0]) / x0.shape[0]

    rep = check(Identity(ConstantNoise(0.1), "exact"), max_examples=EXAMPLES)
    st = _statuses(rep)
    assert st["coupling.pairs"] == "fail" and st["coupling.plan"] == "fail"


def test_adapter_claims_are_validated():
    bad = Reference(ConstantNoise(0.1), "exact")
    bad.coupling = "optimal"
    with pytest.raises(ValueError, match=r"adapter\.coupling"):
        check(bad)
    bad = Reference(ConstantNoise(0.1), "entropic")
    with pytest.raises(ValueError, match="coupling_reg"):
        check(bad)
    bad = Reference(ConstantNoise(0.1), "exact")
    bad.noise = 0.1
    with pytest.raises(TypeError, match=r"adapter\.noise"):
        check(bad)


def test_torchcfm_coupled():
    pytest.importorskip("torchcfm")
    reports = {
        a.name: check(a, max_examples=EXAMPLES, seed=0)
        for a in load_target("torchcfm")
        if hasattr(a, "noise")
    }
    fails = {n: {p for p, s in _statuses(r).items() if s != "pass"} for n, r in reports.items()}
    path = {"agreement.coupled_sample", "agreement.coupled_target", "agreement.coupled_velocity"}
    for name in (
        "torchcfm.ConditionalFlowMatcher(sigma=0.1)",
        "torchcfm.VariancePreservingConditionalFlowMatcher(sigma=0.1)",
    ):
        # the sigma > 0 path of I-CFM and of the trigonometric matcher is the specification's
        assert set(_statuses(reports[name])) == path and fails[name] == set(), name
    # OT-CFM: its plan is the exact OT plan, its pairs are drawn with replacement
    ot = "torchcfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)"
    assert fails[ot] == {"coupling.pairs"}
    assert (
        "duplicated" in next(r for r in reports[ot].results if r.prop == "coupling.pairs").message
    )
    sb = "torchcfm.SchrodingerBridgeConditionalFlowMatcher"
    for name, extra in (
        # the default ot_method="exact" ignores reg = 2 sigma^2: not the entropic plan
        (f"{sb}(sigma=1.0)", {"coupling.plan"}),
        # the Sinkhorn plan outside the log domain loses a sample whose kernel row underflows
        (f"{sb}(sigma=1.0, ot_method='sinkhorn')", {"coupling.plan"}),
        (f"{sb}(sigma=0.1, ot_method='sinkhorn')", {"coupling.plan"}),
    ):
        # 2t(1-t) + 1e-8: the target and field are wrong near t = 0 and 1
        want = {"agreement.coupled_target", "agreement.coupled_velocity", "coupling.pairs"} | extra
        assert fails[name] == want, (name, fails[name])
        res = next(r for r in reports[name].results if r.prop == "agreement.coupled_target")
        assert "1e-08" in res.counterexample["inputs"]["t"]["values"]
