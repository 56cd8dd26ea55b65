"""The docstrings are part of the specification: they run, and they cite the paper.

1. The examples of every module of the core (flowspec/*.py, flowspec/conformance/*.py,
   flowspec/backends/__init__.py) are executed as doctests; the examples of a backend
   module only when its framework is installed (else skipped with the reason).
2. Every public function, class and method of the core has a numpydoc docstring with
   an Examples section, and every one that evaluates a formula cites the paper (an
   equation, theorem, section or appendix).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import flowspec

PACKAGE = Path(flowspec.__file__).parent


def _core_modules() -> list[str]:
    names = [f"flowspec.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])]
    names += [
        f"flowspec.conformance.{m.name}"
        for m in pkgutil.iter_modules([str(PACKAGE / "conformance")])
    ]
    names += ["flowspec", "flowspec.conformance", "flowspec.backends"]
    return sorted(n for n in names if not n.endswith(("backends", "conformance")) or "." in n)


CORE_MODULES = sorted(set(_core_modules()) - {"flowspec.backends.backends"})
BACKEND_MODULES = [
    f"flowspec.backends.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE / "backends")])
]


def _run_doctests(module_name: str) -> tuple[int, int]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    return result.failed, result.attempted


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_core_doctests(module_name):
    if module_name == "flowspec.distributed" and importlib.util.find_spec("dask") is None:
        pytest.skip("dask is not installed, so the examples of flowspec.distributed cannot run")
    failed, attempted = _run_doctests(module_name)
    assert failed == 0, f"{failed} of {attempted} doctest examples of {module_name} failed"


@pytest.mark.parametrize("module_name", BACKEND_MODULES or ["(none yet)"])
def test_backend_doctests(module_name):
    if module_name == "(none yet)":
        pytest.skip("no backend module is present in flowspec/backends/ yet")
    # the framework a backend module needs; the others (libraries, peers, the demo,
    # the CuPy kernels' NumPy emulation) import it lazily, if at all
    framework = module_name.rsplit(".", 1)[1]
    if framework in flowspec.backends.NAMES and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed, so {module_name} cannot be imported")
    failed, attempted = _run_doctests(module_name)
    assert failed == 0, f"{failed} of {attempted} doctest examples of {module_name} failed"


def test_every_core_module_has_examples():
    """A module without a single example would pass the doctest run vacuously."""
    without = [
        name
        for name in ("flowspec.schedules", "flowspec.paths", "flowspec.losses", "flowspec.ode",
                     "flowspec.continuity", "flowspec.backends")
        if _run_doctests(name)[1] == 0
    ]  # fmt: skip
    assert not without, f"modules without any executed example: {without}"


# -- numpydoc sections and equation citations -----------------------------------------
# Public objects of the core whose docstring must cite the paper: everything in
# flowspec.__all__ that evaluates a formula. `backends` (a module) and `Coefficients`
# (a named tuple) are structural and only need an Examples section.
STRUCTURAL = {"backends", "Coefficients"}
CITATION = re.compile(r"\beq\.|\beqs?\. ?\d|Theorem \d|Sec\. \d|App\. [A-Z]|Lemma \d")


def _public_callables() -> list[tuple[str, object]]:
    items = []
    for name in flowspec.__all__:
        obj = getattr(flowspec, name)
        if inspect.ismodule(obj):
            items += [
                (f"{name}.{member}", getattr(obj, member))
                for member in obj.__all__
                if callable(getattr(obj, member))
            ]
            continue
        items.append((name, obj))
        if inspect.isclass(obj) and name not in STRUCTURAL:
            for member, value in vars(obj).items():
                if not member.startswith("_") and inspect.isfunction(value):
                    items.append((f"{name}.{member}", value))
    return items


PUBLIC = _public_callables()


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_docstring_has_examples(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"flowspec.{name} has no docstring"
    assert re.search(r"^Examples\n-{8}", doc, re.MULTILINE), (
        f"flowspec.{name} has no numpydoc Examples section"
    )


@pytest.mark.parametrize(
    "name,obj",
    [(n, o) for n, o in PUBLIC if n.split(".")[0] not in STRUCTURAL],
    ids=[n for n, _ in PUBLIC if n.split(".")[0] not in STRUCTURAL],
)
def test_public_docstring_cites_the_paper(name, obj):
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):  # a class may cite in its module's docstring only if it is
        doc += "\n" + (inspect.getdoc(inspect.getmodule(obj)) or "")  # a Schedule subclass
    assert CITATION.search(doc), f"flowspec.{name} cites no equation, theorem or section"
