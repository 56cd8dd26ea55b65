"""The kit against deliberately broken implementations, the reference and flowspec itself.

Each mutant is the NumPy reference with one bug; the kit must report the property
that the bug breaks as failing, with a shrunk counterexample. The reference and
flowspec on every installed array library must pass every property.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")

import flowspec as fs
from flowspec.conformance import LibraryAdapter, ReferenceAdapter, check
from flowspec.conformance.library import installed_libraries

# Generated inputs per property: the explicit examples (endpoints, B == D, 49 Euler
# steps) run first; a few generated ones on top keep the module well under a minute.
EXAMPLES = 8
# For the implementations that must pass: every schedule, fewer generated inputs
# (the deep search is `HYPOTHESIS_PROFILE=deep`-independent: run `flowspec check`
# with --max-examples for that).
PASS_EXAMPLES = 3


class SignError(ReferenceAdapter):
    """target = d_alpha x1 - d_sigma x0 (the sign of the noise term flipped)."""

    def target(self, x0, x1, t):
        c = self.schedule(t.reshape((-1,) + (1,) * (x0.ndim - 1)))
        return c.d_alpha * x1 - c.d_sigma * x0


class WrongAxis(ReferenceAdapter):
    """t (B,) broadcast against the last axis instead of the batch axis."""

    def sample(self, x0, x1, t):
        c = self.schedule(t)  # shape (B,): broadcasts along the last event axis
        return c.alpha * x1 + c.sigma * x0


class SigmaMinIgnored(ReferenceAdapter):
    """Claims CondOT(sigma_min=0.1) but computes with sigma_min = 0."""

    def __init__(self):
        super().__init__(fs.CondOT(sigma_min=0.1))
        self._wrong = fs.GaussianPath(fs.CondOT(0.0))

    def sample(self, x0, x1, t):
        return self._wrong.sample(x0, x1, t)

    def target(self, x0, x1, t):
        return self._wrong.target(x0, x1, t)


class EulerOffByOne(ReferenceAdapter):
    """Euler that evaluates the field at t_{k+1} instead of t_k."""

    def euler(self, field, x0, steps):
        h = 1.0 / steps
        x = x0
        for k in range(steps):
            x = x + h * field(np.full(x0.shape[0], (k + 1) * h), x)
        return x


class Float32(ReferenceAdapter):
    """Computes in float32 and returns float32 (a silent cast)."""

    def sample(self, x0, x1, t):
        f = np.float32
        return self.path.sample(x0.astype(f), x1.astype(f), t.astype(f))


class Float32Back(ReferenceAdapter):
    """Computes in float32 and casts the result back to float64 (dtype looks right)."""

    def sample(self, x0, x1, t):
        f = np.float32
        return self.path.sample(x0.astype(f), x1.astype(f), t.astype(f)).astype(x0.dtype)


class NaNAtEndpoint(ReferenceAdapter):
    """target from the x-form field at x_t: 0/0 = NaN at t = 1 for CondOT(0)."""

    def target(self, x0, x1, t):
        return self.path.velocity(self.path.sample(x0, x1, t), x1, t)


class WrongLogProb(ReferenceAdapter):
    """log_prob without the -d log sigma_t normaliser: breaks agreement and continuity."""

    def log_prob(self, x, x1, t):
        c = self.schedule(t)
        sq = np.sum(
            ((x - c.alpha.reshape(-1, *([1] * (x.ndim - 1))) * x1) ** 2).reshape(x.shape[0], -1),
            axis=1,
        )
        return -0.5 * sq / c.sigma**2


class InPlaceClamp(ReferenceAdapter):
    """Clamps the caller's t in place to [0.1, 0.9] (the torch.from_numpy(t).clamp_ pattern)."""

    def sample(self, x0, x1, t):
        np.clip(t, 0.1, 0.9, out=t)
        return self.path.sample(x0, x1, t)


class Float16Inside(ReferenceAdapter):
    """float32 inputs computed in float16, returned as float32 (the dtype tag is right)."""

    def sample(self, x0, x1, t):
        if x0.dtype == np.float32:
            h = np.float16
            out = self.path.sample(x0.astype(h), x1.astype(h), t.astype(h))
            return out.astype(np.float32)
        return self.path.sample(x0, x1, t)


class ChunkedMean(ReferenceAdapter):
    """The loss as the mean of per-chunk means of 4 samples: wrong for B > 4, B % 4 != 0."""

    def loss(self, v, u):
        per = np.sum(((v - u) ** 2).reshape(v.shape[0], -1), axis=1)
        return np.asarray(np.mean([per[i : i + 4].mean() for i in range(0, per.shape[0], 4)]))


class WrongNearOne(ReferenceAdapter):
    """velocity with t clamped to 1 - 1e-12 (wrong only within 1e-12 of the singular t = 1)."""

    def velocity(self, x, x1, t):
        return self.path.velocity(x, x1, np.where(t < 1.0, np.minimum(t, 1.0 - 1e-12), t))


class ConversionWrongAxis(ReferenceAdapter):
    """x1_from_velocity with t (B,) broadcast against the last axis."""

    def x1_from_velocity(self, v, x, t):
        c = self.schedule(t)  # shape (B,)
        det = c.alpha * c.d_sigma - c.sigma * c.d_alpha
        return (c.d_sigma * x - c.sigma * v) / det


class SnrInverseNaNAtOne(ReferenceAdapter):
    """snr_inverse as rho / (1 + rho) for CondOT: inf / inf = NaN at the degenerate end."""

    def snr_inverse(self, snr):
        return snr / (1.0 + snr)


class ChangeBySlopes(ReferenceAdapter):
    """The scale-time formula through dt_r/dr and ds_r/dr, s_r = sigma_B / sigma_A."""

    def change_schedule(self, field, x, r):
        a, b = self.source_schedule, self.schedule
        col = (-1,) + (1,) * (x.ndim - 1)
        cb = b(r)
        t = a.snr_inverse(cb.alpha / cb.sigma)
        ca = a(t)
        s = cb.sigma / ca.sigma
        dt = (
            ca.sigma**2
            * (cb.sigma * cb.d_alpha - cb.alpha * cb.d_sigma)
            / (cb.sigma**2 * (ca.sigma * ca.d_alpha - ca.alpha * ca.d_sigma))
        )
        ds = (ca.sigma * cb.d_sigma - cb.sigma * ca.d_sigma * dt) / ca.sigma**2
        s, dt, ds = (np.reshape(v, col) for v in (s, dt, ds))
        return ds / s * x + dt * s * field(t, x / s)


MUTANTS = [
    (SignError, fs.Cosine(), "agreement.target"),
    (WrongAxis, fs.CondOT(0.1), "agreement.sample"),
    (WrongAxis, fs.CondOT(0.1), "shapes"),
    (SigmaMinIgnored, None, "agreement.sample"),
    (EulerOffByOne, fs.CondOT(), "euler"),
    (Float32, fs.CondOT(), "dtype"),
    (Float32Back, fs.VariancePreserving(), "agreement.sample"),
    (NaNAtEndpoint, fs.CondOT(), "agreement.target"),
    (WrongLogProb, fs.LinearVP(), "agreement.log_prob"),
    (WrongLogProb, fs.LinearVP(), "continuity"),
    (InPlaceClamp, fs.CondOT(), "agreement.sample"),
    (Float16Inside, fs.CondOT(), "agreement.sample"),
    (ChunkedMean, fs.CondOT(), "agreement.loss"),
    (WrongNearOne, fs.CondOT(), "agreement.velocity"),
    (ConversionWrongAxis, fs.Cosine(), "shapes"),
    (SnrInverseNaNAtOne, fs.CondOT(), "snr_inverse"),
    (ChangeBySlopes, fs.Cosine(), "schedule_change"),
]


@pytest.mark.parametrize(
    ("mutant", "schedule", "prop"),
    MUTANTS,
    ids=[f"{m.__name__}-{p}" for m, _, p in MUTANTS],
)
def test_mutant_fails_with_counterexample(mutant, schedule, prop):
    adapter = mutant() if schedule is None else mutant(schedule)
    report = check(adapter, max_examples=EXAMPLES, seed=1, select=[prop])
    result = {r.prop: r for r in report.results}[prop]
    assert result.status == "fail", (prop, result)
    assert not report.passed
    ce = result.counterexample
    assert ce is not None and ce["inputs"] and ce["error"], result
    assert result.message


def test_mutant_counterexample_is_shrunk():
    """The sign error needs a non-zero x0: the shrunk example is a single sample."""
    report = check(SignError(fs.CondOT(0.1)), max_examples=50, seed=3, select=["*.target"])
    result = {r.prop: r for r in report.results}["agreement.target"]
    # the explicit endpoint example fails first (2 samples); either way the inputs
    # are small and the message names an entry
    assert result.status == "fail"
    assert result.counterexample["inputs"]["x0"]["shape"][0] <= 3
    assert "index" in result.message


def test_reference_passes(schedule):
    report = check(ReferenceAdapter(schedule), max_examples=PASS_EXAMPLES, seed=0)
    assert report.passed, [(r.prop, r.message) for r in report.failures()]
    assert report.missing == []


@pytest.mark.parametrize("library", [n for n in installed_libraries() if n != "numpy"])
def test_every_library_passes(library):
    # JAX compiles every op for every new shape (seconds per property): one schedule,
    # the one with both singular endpoints' subtleties (VP), and one generated input.
    cases = (
        [(fs.VariancePreserving(), 1)]
        if library == "jax"
        else [
            (s, PASS_EXAMPLES) for s in (fs.CondOT(), fs.VariancePreserving(), fs.Polynomial(0.5))
        ]
    )
    for schedule, n in cases:
        report = check(LibraryAdapter(library, schedule), max_examples=n, seed=0)
        assert report.passed, (library, [(r.prop, r.message) for r in report.failures()])


def test_skips_and_xfails():
    adapter = NaNAtEndpoint(fs.CondOT())
    report = check(
        adapter,
        max_examples=4,
        xfails=["agreement.target"],
        skips=["*::euler", "continuity"],
    )
    by = {r.prop: r for r in report.results}
    assert by["agreement.target"].status == "xfail"
    assert by["euler"].status == "skip" and by["continuity"].status == "skip"
    assert report.passed
    passing = check(ReferenceAdapter(fs.CondOT()), max_examples=2, xfails=["agreement.sample"])
    assert {r.prop: r.status for r in passing.results}["agreement.sample"] == "xpass"


def test_missing_capabilities_are_listed_not_checked():
    class OnlySample:
        name = "only-sample"
        schedule = fs.CondOT()

        def sample(self, x0, x1, t):
            return fs.GaussianPath(self.schedule).sample(x0, x1, t)

    report = check(OnlySample(), max_examples=3)
    assert {r.prop for r in report.results} == {"agreement.sample", "shapes", "dtype"}
    assert "target" in report.missing and "euler" in report.missing
    assert report.passed


def test_same_seed_same_report():
    a = check(SignError(fs.Cosine()), max_examples=5, seed=7, select=["agreement.*"])
    b = check(SignError(fs.Cosine()), max_examples=5, seed=7, select=["agreement.*"])
    assert [r.to_dict() for r in a.results] == [r.to_dict() for r in b.results]


def test_bad_adapter_is_a_type_error():
    class NoSchedule:
        name = "x"

    with pytest.raises(TypeError, match="schedule"):
        check(NoSchedule())
    with pytest.raises(ValueError, match="max_examples"):
        check(ReferenceAdapter(fs.CondOT()), max_examples=0)


class ClassTarget(ReferenceAdapter):
    """Shaped like the docs' example: name and schedule as class attributes."""

    name = "class-target"
    schedule = fs.CondOT()

    def __init__(self):
        super().__init__(fs.CondOT())
        self.name = "class-target"


def test_a_class_target_is_instantiated():
    from flowspec.conformance.adapter import _as_adapters

    (adapter,) = _as_adapters(ClassTarget, "tests:ClassTarget")
    assert isinstance(adapter, ClassTarget)
    report = check(adapter, max_examples=1, select=["agreement.sample"])
    assert report.passed, [(r.prop, r.message) for r in report.failures()]

    class NeedsArgs(ReferenceAdapter):
        name = "needs-args"
        schedule = fs.CondOT()

    with pytest.raises(TypeError, match="taking no arguments"):
        _as_adapters(NeedsArgs, "tests:NeedsArgs")


def test_skip_patterns_match_the_kits_own_adapter_names_literally():
    adapter = LibraryAdapter("numpy", fs.CondOT())
    report = check(adapter, max_examples=1, skips=[f"{adapter.name}::euler"], select=["euler"])
    assert {r.prop: r.status for r in report.results}["euler"] == "skip"


def test_one_default_number_of_examples():
    import inspect

    from flowspec.conformance import command, runner

    default = inspect.signature(check).parameters["max_examples"].default
    assert default == runner.DEFAULT_EXAMPLES == command.DEFAULT_EXAMPLES


def test_failure_messages_print_plain_numbers():
    report = check(WrongNearOne(fs.CondOT()), max_examples=1, select=["agreement.velocity"])
    (result,) = report.results
    assert result.status == "fail" and "np.float" not in result.message


class Recorder(ReferenceAdapter):
    """The reference, recording every input of `sample`."""

    def __init__(self, schedule):
        super().__init__(schedule)
        self.seen = []

    def sample(self, x0, x1, t):
        self.seen.append((x0.tobytes(), x1.tobytes(), t.tobytes()))
        return super().sample(x0, x1, t)


def test_same_seed_same_inputs_whatever_is_imported_and_nothing_written(tmp_path, monkeypatch):
    import importlib
    import sys

    monkeypatch.chdir(tmp_path)
    first = Recorder(fs.CondOT())
    check(first, max_examples=20, seed=5, select=["agreement.sample"])
    # a local module full of float and integer literals: Hypothesis would mix them in
    body = "\n".join(f"C{i} = {0.1234567 * (i + 1)!r} + {i * 7919}" for i in range(300))
    (tmp_path / "kit_local_constants.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("kit_local_constants")
    try:
        second = Recorder(fs.CondOT())
        check(second, max_examples=20, seed=5, select=["agreement.sample"])
    finally:
        sys.modules.pop("kit_local_constants", None)
    assert first.seen == second.seen
    assert not (tmp_path / ".hypothesis").exists()


def test_same_seed_same_inputs_after_the_callers_hypothesis_tests(tmp_path, monkeypatch):
    """A check run after the caller's own Hypothesis tests draws what it draws alone.

    Hypothesis caches, per kind of draw, the constants it may draw (its global ones and
    the literals of local modules) in one process-wide cache. A caller's test that drew
    the kind of value the kit draws (a float in [0, 1], one in [-8, 8]) left local
    constants there, and the kit, run next in the same process (the pytest plugin,
    ``flowspec check`` in-process), drew other inputs from that cache for the same seed.
    """
    import importlib
    import sys

    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.internal.conjecture import providers

    from flowspec.conformance.properties import _times, _values

    monkeypatch.chdir(tmp_path)
    # the check alone: nothing cached before it
    monkeypatch.setattr(providers, "CONSTANTS_CACHE", type(providers.CONSTANTS_CACHE)(1024))
    alone = Recorder(fs.CondOT())
    check(alone, max_examples=20, seed=5, select=["agreement.sample"])

    # the caller's local literals in [0, 1] and [-8, 8], then a test of the caller drawing
    # through the kit's strategies: the cache now holds those literals for the kit's draws
    body = "\n".join(
        f"C{i} = {(i + 1) / 307!r}\nD{i} = {-8 + 16 * (i + 1) / 311!r}" for i in range(300)
    )
    (tmp_path / "caller_local_constants.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("caller_local_constants")
    try:
        monkeypatch.setattr(providers, "CONSTANTS_CACHE", type(providers.CONSTANTS_CACHE)(1024))

        @settings(max_examples=50, database=None, derandomize=True)
        @given(st.sampled_from([1, 2, 3]).flatmap(lambda b: st.tuples(_times(b), _values((b, 2)))))
        def callers_test(drawn):
            pass

        callers_test()
        callers_keys = set(providers.CONSTANTS_CACHE.cache)
        assert callers_keys  # the caller's draws were cached
        after = Recorder(fs.CondOT())
        check(after, max_examples=20, seed=5, select=["agreement.sample"])
    finally:
        sys.modules.pop("caller_local_constants", None)
    assert after.seen == alone.seen
    # and the kit's draws leave the caller's cache as it was (its later tests keep their
    # local constants)
    assert set(providers.CONSTANTS_CACHE.cache) == callers_keys
