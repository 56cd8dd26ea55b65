"""The pytest plugin: `pytest --flowspec-target=module:attr` runs the properties as tests."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

pytest.importorskip("hypothesis")

pytest_plugins = ["pytester"]

ADAPTERS = textwrap.dedent(
    """
    import flowspec as fs

    class Good:
        name = "good"
        schedule = fs.Cosine()
        def sample(self, x0, x1, t):
            return fs.GaussianPath(self.schedule).sample(x0, x1, t)
        def target(self, x0, x1, t):
            return fs.GaussianPath(self.schedule).target(x0, x1, t)

    class SignError(Good):
        name = "sign-error"
        def target(self, x0, x1, t):
            c = self.schedule(t.reshape(-1, *([1] * (x0.ndim - 1))))
            return c.d_alpha * x1 - c.d_sigma * x0

    good = Good()
    both = [Good(), SignError()]
    """
)


def _plugin_args() -> list[str]:
    """Load the plugin explicitly unless the installed entry point already does."""
    eps = importlib.metadata.entry_points(group="pytest11")
    if any(ep.value == "flowspec.conformance.pytest_plugin" for ep in eps):
        return []
    return ["-p", "flowspec.conformance.pytest_plugin"]


@pytest.fixture
def project(pytester):
    pytester.makepyfile(my_adapters=ADAPTERS)
    pytester.syspathinsert()
    return pytester


def test_each_property_is_a_test(project):
    result = project.runpytest(
        *_plugin_args(), "--flowspec-target=my_adapters:good", "--flowspec-max-examples=3", "-v"
    )
    result.assert_outcomes(passed=4)  # sample, target, shapes, dtype
    result.stdout.fnmatch_lines(["*good::agreement.target PASSED*", "*good::shapes PASSED*"])


def test_failing_property_fails_its_test_with_counterexample(project):
    result = project.runpytest(
        *_plugin_args(), "--flowspec-target=my_adapters:both", "--flowspec-max-examples=3"
    )
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines(
        ["*sign-error claims Cosine()*", "*property agreement.target: fail*", "*counterexample*"]
    )


def test_runs_alongside_the_users_own_tests_and_k_selects(project):
    project.makepyfile(test_mine="def test_mine():\n    assert sum([1, 2]) == 3\n")
    result = project.runpytest(
        *_plugin_args(),
        "--flowspec-target=my_adapters:both",
        "--flowspec-max-examples=2",
        "-k",
        "mine or good",
    )
    result.assert_outcomes(passed=5)


def test_without_the_option_nothing_is_added(project):
    project.makepyfile(test_mine="def test_mine():\n    assert sum([1, 2]) == 3\n")
    result = project.runpytest(*_plugin_args())
    result.assert_outcomes(passed=1)


def test_bad_target_is_a_usage_error(project):
    result = project.runpytest(*_plugin_args(), "--flowspec-target=no_such_module_q:x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
