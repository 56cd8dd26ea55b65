"""pytest plugin: ``pytest --flowspec-target=package.module:attr`` runs the kit's properties.

Registered through the ``pytest11`` entry point, so installing flowspec makes the
options available; without ``--flowspec-target`` the plugin does nothing (and
imports neither Hypothesis nor any framework). Each (adapter, property) pair
becomes one test item ``flowspec::<adapter name>::<property id>``; a failing
property fails its item with the shrunk counterexample.

Options: ``--flowspec-target`` (repeatable; any TARGET of ``flowspec check``),
``--flowspec-max-examples N`` (default 20, as ``check()``), ``--flowspec-seed S`` (default 0).
"""

from __future__ import annotations

import json
from typing import Any

import pytest


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("flowspec", "flowspec conformance kit")
    group.addoption(
        "--flowspec-target",
        action="append",
        default=[],
        metavar="TARGET",
        help="check an implementation of Flow Matching: package.module:attr (an adapter, "
        "a list of adapters or a callable returning them), an array library or a "
        "shipped adapter name",
    )
    from .runner import DEFAULT_EXAMPLES

    group.addoption("--flowspec-max-examples", type=int, default=DEFAULT_EXAMPLES, metavar="N")
    group.addoption("--flowspec-seed", type=int, default=0, metavar="S")


class FlowspecItem(pytest.Item):
    """One property of the kit on one adapter."""

    def __init__(self, *, adapter: Any, prop: Any, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.prop = prop
        self.target = target

    def runtest(self) -> None:
        from .runner import run_property

        cfg = self.config
        result = run_property(
            self.adapter,
            self.prop,
            max_examples=cfg.getoption("flowspec_max_examples"),
            seed=cfg.getoption("flowspec_seed"),
        )
        self.user_properties.append(("flowspec", json.dumps(result.to_dict())))
        if result.status != "pass":
            raise FlowspecFailure(result)

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, FlowspecFailure):
            r = excinfo.value.result
            ce = json.dumps(r.counterexample, indent=2) if r.counterexample else "(none)"
            return (
                f"{self.adapter.name} claims {self.adapter.schedule!r}\n"
                f"property {r.prop}: {r.status}: {r.message}\n"
                f"counterexample (shrunk):\n{ce}"
            )
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self.target, None, f"flowspec::{self.adapter.name}::{self.prop.id}"


class FlowspecFailure(Exception):
    def __init__(self, result: Any) -> None:
        super().__init__(result.message)
        self.result = result


class FlowspecCollector(pytest.Collector):
    """The items of one TARGET."""

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def collect(self) -> list[FlowspecItem]:
        from .adapter import load_target
        from .properties import properties

        items = []
        for adapter in load_target(self.target):
            for prop in properties(adapter):
                items.append(
                    FlowspecItem.from_parent(
                        self,
                        name=f"{adapter.name}::{prop.id}",
                        adapter=adapter,
                        prop=prop,
                        target=self.target,
                    )
                )
        return items


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    for target in config.getoption("flowspec_target"):
        collector = FlowspecCollector.from_parent(
            session, name=f"flowspec[{target}]", target=target
        )
        rep = collector.ihook.pytest_make_collect_report(collector=collector)
        if rep.failed:
            raise pytest.UsageError(f"--flowspec-target={target}: {rep.longreprtext}")
        items.extend(rep.result)
