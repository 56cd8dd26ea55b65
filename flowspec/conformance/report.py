"""The results of a conformance run and their versioned JSON form.

A :class:`Report` holds the :class:`Result` of every property checked on one adapter;
a run over several targets writes a list of reports. The JSON document (see
:func:`to_json`) is versioned by :data:`SCHEMA_VERSION`; its layout is documented in
``docs/conformance.md``. Readers should reject a document whose ``schema`` differs and
accept any ``version`` they know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "Report",
    "Result",
    "Status",
    "from_json",
    "table",
    "to_json",
]

#: Name of the JSON document type.
SCHEMA = "flowspec.conformance.report"
#: Version of the JSON layout; bumped on any incompatible change.
SCHEMA_VERSION = 1

Status = Literal["pass", "fail", "error", "skip", "xfail", "xpass"]

#: Statuses that count as success for the exit status (xpass: an xfail entry that
#: no longer fails is reported, not fatal).
_OK = ("pass", "skip", "xfail", "xpass")


def _finite_or_none(v: float | None) -> float | None:
    """JSON has no inf/nan: infinite errors are written as null plus a flag."""
    if v is None or not math.isfinite(v):
        return None
    return float(v)


@dataclass
class Result:
    """One property checked on one adapter.

    Attributes
    ----------
    prop : str
        Property id, e.g. ``"agreement.target"``, ``"euler"``.
    status : {"pass", "fail", "error", "skip", "xfail", "xpass"}
        ``error`` means the check itself could not run (never a verdict on the code).
    examples : int
        Number of inputs evaluated.
    worst_abs, worst_rel : float
        The largest absolute error and the largest error relative to
        ``max(|reference|, tolerance)`` over every input evaluated (``inf`` where a result was non-finite but the
        specification is finite, ``nan`` where nothing was compared).
    worst_ratio : float
        The largest absolute error divided by its tolerance: the verdict is pass when
        it is at most 1.
    counterexample : dict or None
        The shrunk failing input (arrays as nested lists) and what went wrong.
    message : str
        One line for humans.
    required : bool
        Whether a failure makes the run fail.
    """

    prop: str
    status: Status
    examples: int = 0
    worst_abs: float = math.nan
    worst_rel: float = math.nan
    worst_ratio: float = math.nan
    counterexample: dict[str, Any] | None = None
    message: str = ""
    required: bool = True

    @property
    def ok(self) -> bool:
        return self.status in _OK or not self.required

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["property"] = d.pop("prop")
        for k in ("worst_abs", "worst_rel", "worst_ratio"):
            v = d[k]
            d[k] = _finite_or_none(v)
            if v is not None and math.isinf(v):
                d[k + "_infinite"] = True
        return d


@dataclass
class Report:
    """Every property checked on one adapter.

    Attributes
    ----------
    target : str
        What was asked for (``"torchcfm"``, ``"numpy"``, ``"pkg.mod:attr"``).
    adapter : str
        The adapter's name (unique within the target).
    schedule : str
        The contract schedule the adapter claims, as its repr (e.g. ``CondOT(sigma_min=0.0)``).
    capabilities : list of str
        The capabilities the adapter has (and that were checked).
    missing : list of str
        The capabilities of the protocol the adapter does not have (not checked).
    results : list of Result
    seed, max_examples : int
    """

    target: str
    adapter: str
    schedule: str
    capabilities: list[str]
    missing: list[str]
    results: list[Result] = field(default_factory=list)
    seed: int = 0
    max_examples: int = 0

    @property
    def passed(self) -> bool:
        """True when every required property passed (or was skipped or xfailed)."""
        return all(r.ok for r in self.results)

    def failures(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "adapter": self.adapter,
            "schedule": self.schedule,
            "capabilities": list(self.capabilities),
            "missing": list(self.missing),
            "seed": self.seed,
            "max_examples": self.max_examples,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }


def to_json(reports: Sequence[Report], **meta: Any) -> str:
    """The versioned JSON document of a run (``meta`` adds top-level fields)."""
    from .. import __version__

    doc = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "flowspec_version": __version__,
        **meta,
        "passed": all(r.passed for r in reports),
        "reports": [r.to_dict() for r in reports],
    }
    return json.dumps(doc, indent=2, allow_nan=False)


def from_json(text: str) -> list[Report]:
    """Read the reports back from :func:`to_json`'s document."""
    doc = json.loads(text)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"`text` is not a {SCHEMA} document, got schema {doc.get('schema')!r}")
    if doc.get("version") != SCHEMA_VERSION:
        raise ValueError(
            f"`text` has report version {doc.get('version')!r}; this flowspec reads "
            f"version {SCHEMA_VERSION}"
        )
    reports = []
    for rd in doc["reports"]:
        results = []
        for d in rd["results"]:
            vals = {}
            for k in ("worst_abs", "worst_rel", "worst_ratio"):
                v = d.get(k)
                vals[k] = math.inf if d.get(k + "_infinite") else (math.nan if v is None else v)
            results.append(
                Result(
                    prop=d["property"],
                    status=d["status"],
                    examples=d["examples"],
                    counterexample=d["counterexample"],
                    message=d["message"],
                    required=d["required"],
                    **vals,
                )
            )
        reports.append(
            Report(
                target=rd["target"],
                adapter=rd["adapter"],
                schedule=rd["schedule"],
                capabilities=rd["capabilities"],
                missing=rd["missing"],
                results=results,
                seed=rd["seed"],
                max_examples=rd["max_examples"],
            )
        )
    return reports


def _num(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2g}"


def table(reports: Iterable[Report]) -> str:
    """A readable table: a header per adapter, one row per property, then the failures."""
    head = ("property", "abs err", "rel err", "err/tol", "result")
    blocks: list[tuple[str, list[tuple[str, ...]]]] = []
    notes = []
    for rep in reports:
        title = (
            rep.adapter if rep.schedule in rep.adapter else f"{rep.adapter}  claims {rep.schedule}"
        )
        rows = []
        for r in rep.results:
            status = "ok" if r.status == "pass" else r.status.upper()
            rows.append((r.prop, _num(r.worst_abs), _num(r.worst_rel), _num(r.worst_ratio), status))
            if r.status in ("fail", "error", "xfail"):
                notes.append(f"{rep.adapter} {r.prop}: {r.message}")
        if rep.missing:
            rows.append((f"(not checked: {', '.join(rep.missing)})", "", "", "", ""))
        blocks.append((title, rows))
    all_rows = [head] + [row for _, rows in blocks for row in rows if row[1:] != ("",) * 4]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(head))]

    def fmt(row: tuple[str, ...]) -> str:
        if row[1:] == ("",) * 4:
            return "  " + row[0]
        return "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    lines = [fmt(head), "  " + "  ".join("-" * w for w in widths)]
    for title, rows in blocks:
        lines.append(title)
        lines.extend(fmt(row) for row in rows)
    if notes:
        lines.append("")
        lines.append("failures:")
        lines.extend(notes)
    return "\n".join(lines)
