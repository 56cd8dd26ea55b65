"""The conformance kit for discrete paths: flowspec passes, mutants fail, the CLI runs it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from flowspec import discrete as fd
from flowspec.conformance import check, property_ids
from flowspec.conformance.discrete import DISCRETE_CAPABILITIES, DiscreteReferenceAdapter

EXAMPLES = 5


@pytest.mark.parametrize(
    ("schedule", "vocab", "mask"),
    [(fd.Linear(), 3, None), (fd.Polynomial(2.0), 4, 3), (fd.Cosine(), 3, None)],
    ids=["linear-uniform", "polynomial-mask", "cosine-uniform"],
)
def test_reference_passes_every_property(schedule, vocab, mask):
    adapter = DiscreteReferenceAdapter(schedule, vocab, mask_token=mask)
    report = check(adapter, max_examples=EXAMPLES, seed=0)
    assert report.passed, [(r.prop, r.message) for r in report.failures()]
    assert [r.prop for r in report.results] == [
        "discrete.coefficients",
        "discrete.sample",
        "discrete.rate",
        "discrete.loss",
        "discrete.euler.grid",
        "discrete.euler.law",
    ]
    assert report.capabilities == list(DISCRETE_CAPABILITIES) and report.missing == []


class Mutant(DiscreteReferenceAdapter):
    """flowspec with one definition broken."""

    def __init__(self, broken):
        super().__init__(fd.Linear(), 3)
        self.broken = broken
        self.name = f"mutant {broken}"

    def coefficients(self, t):
        kappa, d_kappa = super().coefficients(t)
        return (kappa, 1.05 * d_kappa) if self.broken == "d_kappa" else (kappa, d_kappa)

    def sample(self, x0, x1, t):
        if self.broken == "sample":  # kappa_t^2 instead of kappa_t
            return np.where(self.rng.random(x1.shape) < (t**2)[:, None], x1, x0)
        return super().sample(x0, x1, t)

    def posterior_to_rate(self, probs, x, t):
        rate = super().posterior_to_rate(probs, x, t)
        return 1.05 * rate if self.broken == "rate" else rate

    def loss(self, logits, x1, x, t):
        out = super().loss(logits, x1, x, t)
        if self.broken == "loss":  # the flow_matching formula without the log term
            return out + fd.cross_entropy(x1, logits=logits, reduction="none") * 0.05
        return out

    def euler(self, posterior, x0, steps):
        if self.broken == "euler":  # the grid shifted by half a step
            return super().euler(lambda t, x: posterior(t + 0.5 / steps, x), x0, steps)
        if self.broken == "euler-law":  # stays at the source
            return x0
        return super().euler(posterior, x0, steps)


@pytest.mark.parametrize(
    ("broken", "prop"),
    [
        ("d_kappa", "discrete.coefficients"),
        ("sample", "discrete.sample"),
        ("rate", "discrete.rate"),
        ("loss", "discrete.loss"),
        ("euler", "discrete.euler.grid"),
        ("euler-law", "discrete.euler.law"),
    ],
)
def test_mutants_fail_their_property(broken, prop):
    report = check(Mutant(broken), max_examples=EXAMPLES, seed=0, select=[prop])
    (res,) = report.results
    assert res.status == "fail", res
    assert res.counterexample is not None


def test_discrete_adapters_are_recognised():
    adapter = DiscreteReferenceAdapter(fd.Linear(), 3)
    assert property_ids(adapter)[0] == "discrete.coefficients"

    class Bad:
        name = "bad"
        schedule = fd.Linear()
        vocab_size = 1

    with pytest.raises(TypeError, match="vocab_size"):
        check(Bad())


def test_cli_checks_the_discrete_adapters(capsys):
    pytest.importorskip("flow_matching")
    from flowspec.cli import main
    from flowspec.conformance import load_target

    names = [a.name for a in load_target("flow_matching")]
    assert sum("MixtureDiscreteProbPath" in n for n in names) == 2  # `flowspec check flow_matching`
    target = "flowspec.conformance.peers.flow_matching:discrete_adapters"
    code = main(["check", target, "--max-examples", "2"])
    out = capsys.readouterr().out
    assert "MixtureDiscreteProbPath" in out and "discrete.euler.grid" in out
    assert code != 0  # the deviations recorded in docs/discrete.md
