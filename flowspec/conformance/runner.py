"""``check(adapter)``: run every applicable property as a Hypothesis search.

Each property is a Hypothesis test run programmatically: its explicit examples (the
endpoints t = 0 and t = 1, B == D) first, then ``max_examples`` generated inputs
from the seed ``seed`` (no example database, no deadline). On a failure Hypothesis
shrinks the input; the shrunk input is the :class:`Result`'s counterexample. The
worst absolute and relative errors are taken over every input evaluated.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import warnings
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .adapter import capabilities, missing, validate
from .errors import Measure
from .properties import AdapterRaised, Property, properties
from .report import Report, Result

__all__ = ["check", "property_ids", "run_property"]


class _Failed(AssertionError):
    pass


def _jsonable(inputs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            out[k] = {
                "shape": list(v.shape),
                "dtype": v.dtype.name,
                "values": [repr(float(e)) for e in v.ravel()] if v.size <= 64 else "...",
            }
        else:
            out[k] = v if isinstance(v, (int, float, str)) else repr(v)
    return out


#: Generated inputs per property by default: check(), ``flowspec check TARGET`` and the
#: pytest plugin all use this number.
DEFAULT_EXAMPLES = 20


def _property_seed(seed: int, prop_id: str) -> int:
    """Each property draws its own inputs (independent times), reproducibly per seed."""
    return (int(seed) * 1_000_003 + zlib.crc32(prop_id.encode())) % 2**32


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis without the constants it collects from the caller's local modules.

    Hypothesis mixes literals of locally imported modules (a checkout, the user's own
    code) into its draws and caches them under ``./.hypothesis/``: the same seed would
    draw different inputs in different environments, and the kit would write to the
    working directory. The kit's draws use Hypothesis's fixed global constants only.

    Hypothesis also keeps, per kind of draw (a float in [0, 1], ...), the constants it
    may draw in a process-wide cache (``providers.CONSTANTS_CACHE``), filled with the
    local constants by whichever Hypothesis test first drew that kind. The kit draws
    through a cache of its own, empty at each entry: otherwise a check run after the
    caller's Hypothesis tests (the pytest plugin, ``flowspec check`` in-process) would
    draw other inputs for the same seed than a check run alone, and the caller's later
    tests would draw from a cache without their local constants.
    """
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a Hypothesis without the feature
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    if original is None:  # pragma: no cover
        yield
        return
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    if cache is not None:
        providers.CONSTANTS_CACHE = type(cache)(cache.max_size)
    try:
        yield
    finally:
        providers._get_local_constants = original
        if cache is not None:
            providers.CONSTANTS_CACHE = cache


def run_property(
    adapter: Any, prop: Property, *, max_examples: int = DEFAULT_EXAMPLES, seed: int = 0
) -> Result:
    """Run one property on ``adapter``; never raises for a failing implementation."""
    from hypothesis import HealthCheck, Verbosity, example, given, settings
    from hypothesis import seed as hseed

    state: dict[str, Any] = {"n": 0, "worst": Measure(math.nan, math.nan, math.nan), "last": None}

    def test(inputs: dict[str, Any]) -> None:
        state["last"] = inputs
        state["n"] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = prop.evaluate(adapter, inputs)
        except AdapterRaised as exc:
            state["message"] = str(exc)
            raise _Failed(str(exc)) from None
        w = state["worst"]
        for k in ("abs_err", "rel_err", "ratio"):
            a, b = getattr(w, k), getattr(m, k)
            setattr(w, k, b if math.isnan(a) else (a if math.isnan(b) else max(a, b)))
        if m.failure:
            state["message"] = m.failure
            raise _Failed(m.failure)

    fn = given(inputs=prop.strategy(adapter))(test)
    for ex in reversed(prop.examples(adapter)):
        fn = example(inputs=ex)(fn)
    fn = settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(fn)
    fn = hseed(_property_seed(seed, prop.id))(fn)
    w = state["worst"]
    try:
        with _no_local_constants():
            fn()
    except _Failed:
        return Result(
            prop.id,
            "fail",
            state["n"],
            w.abs_err,
            w.rel_err,
            w.ratio,
            counterexample={"inputs": _jsonable(state["last"]), "error": state["message"]},
            message=state["message"],
        )
    except Exception as exc:  # the kit itself could not run this property
        return Result(prop.id, "error", state["n"], message=f"{type(exc).__name__}: {exc}")
    return Result(prop.id, "pass", state["n"], w.abs_err, w.rel_err, w.ratio)


def _matches(patterns: Iterable[str], adapter: Any, prop_id: str) -> str | None:
    """The first pattern matching ``<adapter name>::<property>`` or the property, if any.

    A pattern equal to the name matches literally (adapter names hold ``[`` and ``]``,
    which fnmatch reads as a character class); otherwise it is an fnmatch pattern.
    """
    key = f"{adapter.name}::{prop_id}"
    for p in patterns:
        if p in (key, prop_id) or fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(prop_id, p):
            return p
    return None


def property_ids(adapter: Any) -> list[str]:
    """The ids of the properties ``check`` would run on ``adapter``."""
    return [p.id for p in properties(adapter)]


def check(
    adapter: Any,
    *,
    max_examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    skips: Iterable[str] = (),
    xfails: Iterable[str] = (),
    select: Iterable[str] | None = None,
    target: str = "",
    progress: Any = None,
) -> Report:
    """Check an implementation, presented by ``adapter``, against the specification.

    Parameters
    ----------
    adapter : object
        Has ``name``, ``schedule`` (the contract schedule it claims) and any of the
        methods of the adapter protocol, ``flowspec.conformance.Adapter``.
    max_examples : int
        Generated inputs per property (after the explicit ones).
    seed : int
        Seed of the Hypothesis search; the same seed gives the same report.
    skips, xfails : iterable of str
        fnmatch patterns over ``"<adapter name>::<property id>"`` or the property id.
        A skipped property is not run; an xfailed one runs and its failure is expected.
    select : iterable of str, optional
        Patterns as for ``skips``: run only the properties they match.
    target : str
        Recorded in the report.
    progress : callable, optional
        Called with no argument after each property (for a progress bar).

    Returns
    -------
    Report

    Examples
    --------
    >>> import flowspec as fs
    >>> from flowspec.conformance import check, ReferenceAdapter
    >>> report = check(ReferenceAdapter(fs.CondOT()), max_examples=5)
    >>> report.passed, [r.prop for r in report.results][:3]
    (True, ['agreement.coefficients', 'agreement.sample', 'agreement.target'])
    """
    validate(adapter)
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"`max_examples` must be an integer >= 1, got {max_examples!r}")
    skips, xfails = list(skips), list(xfails)
    chosen = None if select is None else list(select)
    report = Report(
        target=target or adapter.name,
        adapter=adapter.name,
        schedule=repr(adapter.schedule),
        capabilities=capabilities(adapter),
        missing=missing(adapter),
        seed=seed,
        max_examples=max_examples,
    )
    for prop in properties(adapter):
        if chosen is not None and _matches(chosen, adapter, prop.id) is None:
            continue
        pat = _matches(skips, adapter, prop.id)
        if pat is not None:
            report.results.append(Result(prop.id, "skip", message=f"skipped by {pat!r}"))
        else:
            res = run_property(adapter, prop, max_examples=max_examples, seed=seed)
            pat = _matches(xfails, adapter, prop.id)
            if pat is not None:
                if res.status == "fail":
                    res.status = "xfail"
                    res.message = f"expected failure ({pat!r}): {res.message}"
                elif res.status == "pass":
                    res.status = "xpass"
                    res.message = f"listed as expected to fail ({pat!r}) but passed"
            report.results.append(res)
        if progress is not None:
            progress()
    return report
