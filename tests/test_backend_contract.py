"""One backend contract: every backend exports exactly the names of the table, with its signatures.

The table is ``flowspec.backends.CONTRACT`` (documented in docs/backends/contract.md).
torch and JAX are imported and inspected; the CuPy module cannot be imported without
CUDA, so its source is parsed (its signatures are read from the syntax tree), which
checks it on every machine.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

import flowspec
from flowspec.backends import CONTRACT, EXTRAS, NAMES

BACKENDS = Path(flowspec.__file__).parent / "backends"


def _from_inspect(fn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(positional parameter names, with '*args' for a var-positional; keyword-only names)."""
    positional, keyword = [], []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            positional.append("*" + p.name)
        elif p.kind is p.KEYWORD_ONLY:
            keyword.append(p.name)
    return tuple(positional), tuple(keyword)


def _from_ast(node: ast.FunctionDef) -> tuple[tuple[str, ...], tuple[str, ...]]:
    a = node.args
    positional = [x.arg for x in (*a.posonlyargs, *a.args)]
    if a.vararg is not None:
        positional.append("*" + a.vararg.arg)
    return tuple(positional), tuple(x.arg for x in a.kwonlyargs)


def _exports_by_import(name: str) -> dict[str, object]:
    module = flowspec.backends.get(name)
    return {n: getattr(module, n) for n in module.__all__}


def _exports_by_source(name: str) -> tuple[list[str], dict[str, object]]:
    tree = ast.parse((BACKENDS / f"{name}.py").read_text())
    exported: list[str] = []
    defined: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            exported = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.FunctionDef):
            defined[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    defined[t.id] = "constant"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                defined[alias.asname or alias.name] = "constant"
    return exported, defined


def _signatures(name: str) -> tuple[set[str], dict[str, object]]:
    """The exported names and, per name, (positional, keyword) or 'constant'."""
    if name == "cupy" and importlib.util.find_spec("cupy") is None:
        exported, defined = _exports_by_source(name)
        sigs = {
            n: _from_ast(defined[n])
            if isinstance(defined.get(n), ast.FunctionDef)
            else defined.get(n)
            for n in exported
        }
        return set(exported), sigs
    if importlib.util.find_spec(NAMES[name]) is None:
        pytest.skip(f"{NAMES[name]} is not installed")
    exports = _exports_by_import(name)
    sigs = {n: _from_inspect(v) if callable(v) else "constant" for n, v in exports.items()}
    return set(exports), sigs


@pytest.mark.parametrize("name", list(NAMES))
def test_backend_exports_exactly_the_contract(name):
    exported, _ = _signatures(name)
    want = set(CONTRACT) | set(EXTRAS[name])
    assert exported == want, (
        f"{name}: missing {sorted(want - exported)}, not in the contract {sorted(exported - want)}"
    )


@pytest.mark.parametrize("name", list(NAMES))
def test_backend_signatures_match_the_contract(name):
    _, sigs = _signatures(name)
    for fn, entry in CONTRACT.items():
        got = sigs[fn]
        if entry is None:  # a constant
            assert got == "constant", f"{name}.{fn} must be a constant, got a function"
            continue
        assert got not in (None, "constant"), f"{name}.{fn} must be a function"
        positional, keyword = got
        if entry.positional is not None:
            assert positional == entry.positional, (
                f"{name}.{fn}: positional parameters {positional}, contract {entry.positional}"
            )
        missing = set(entry.keyword) - set(keyword)
        assert not missing, f"{name}.{fn}: keyword-only parameters {sorted(missing)} missing"


def test_contract_follows_the_core():
    """Where the core has the function (or the path method), the names and order are the core's."""
    import flowspec as fs

    core = {
        "cfm_loss": fs.cfm_loss,
        "euler": fs.euler,
        "integrate": fs.integrate,
        "continuity_residual": fs.continuity_residual,
    }
    for fn, ref in core.items():
        assert CONTRACT[fn].positional == _from_inspect(ref)[0], fn
    for method in ("sample", "target", "sample_and_target", "velocity", "log_prob", "score"):
        params = _from_inspect(getattr(fs.GaussianPath, method))[0]
        assert CONTRACT[method].positional == ("path", *params[1:]), method  # self -> path
    # the likelihood: the core's parameters up to its divergence callable, in order
    ll = _from_inspect(fs.log_likelihood)[0]
    assert CONTRACT["log_likelihood"].positional == ll[: len(CONTRACT["log_likelihood"].positional)]


def test_a_signature_change_is_caught():
    """The signature check is not vacuous: a reordered function fails it."""

    def euler(x0, field, steps=1, t0=0.0, t1=1.0, return_path=False):
        return x0

    assert _from_inspect(euler)[0] != CONTRACT["euler"].positional
