"""``flowspec check`` and ``flowspec golden``: the command-line side of the kit."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ..schedules import CATALOGUE
from .library import LIBRARIES, Row, check_library, installed_libraries
from .report import Report, Result, table, to_json

__all__ = ["add_check_arguments", "read_patterns", "run_check", "run_golden"]

#: Generated inputs per property when --max-examples is not given (check()'s default).
from .runner import DEFAULT_EXAMPLES

#: ... and for the kit on the reference in the default run (kept under a minute).
QUICK_EXAMPLES = 5


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def existing_file(text: str) -> str:
    """An argparse type: a path to a readable, existing file."""
    if not text or not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def new_file(text: str) -> str:
    """An argparse type: a file path whose directory exists (checked before the run)."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file path, got {text!r}")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
    return text


def golden_directory(text: str) -> str:
    """An argparse type: a directory to write the golden vectors to (not a file)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return text


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="an array library whose flowspec run is checked "
        f"({', '.join(LIBRARIES)}), a shipped adapter (flow_matching, torchcfm) or "
        "package.module:attr for your own adapter; default: flowspec's self-check on "
        "every installed array library plus the kit on the NumPy reference",
    )
    parser.add_argument(
        "--json", metavar="FILE", type=new_file, help="write the versioned JSON report here"
    )
    parser.add_argument(
        "--max-examples",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help=f"generated inputs per property (default {DEFAULT_EXAMPLES}; "
        f"{QUICK_EXAMPLES} for the reference in the run without TARGET)",
    )
    parser.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="seed of the random inputs (>= 0)"
    )
    parser.add_argument(
        "--skips",
        metavar="FILE",
        type=existing_file,
        help="patterns (adapter::property, fnmatch) not to run",
    )
    parser.add_argument(
        "--xfails",
        metavar="FILE",
        type=existing_file,
        help="patterns (adapter::property) expected to fail",
    )


def read_patterns(path: str | None) -> list[str]:
    """One pattern per line; ``#`` starts a comment (the reason); blank lines ignored."""
    if path is None:
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        pat = line.split("#", 1)[0].strip()
        if pat:
            out.append(pat)
    return out


def _self_check(library: str, seed: int) -> Report:
    """flowspec's fixed-input self-check on ``library`` as a report."""
    rep = Report(
        target=library,
        adapter=f"flowspec[{library}] self-check",
        schedule="all",
        capabilities=[],
        missing=[],
        seed=seed,
    )
    try:
        rows: list[Row] = check_library(library, seed=seed)
    except ImportError as exc:
        rep.results.append(Result("import", "error", message=str(exc)))
        return rep
    for row in rows:
        rep.results.append(
            Result(
                f"self.{row.prop}",
                "pass" if row.passed else "fail",
                examples=1,
                worst_ratio=row.worst / row.tol,
                message=row.detail,
            )
        )
    return rep


def _error_report(target: str, exc: BaseException) -> Report:
    rep = Report(target, target, "?", [], [])
    rep.results.append(Result("import", "error", message=f"{type(exc).__name__}: {exc}"))
    return rep


def run_check(args: argparse.Namespace) -> int:
    """Run ``flowspec check``; print the table; return the exit status."""
    if args.max_examples is None:
        args.max_examples = DEFAULT_EXAMPLES if args.targets else QUICK_EXAMPLES
    if args.max_examples < 1:
        print(
            f"flowspec check: --max-examples must be >= 1, got {args.max_examples}", file=sys.stderr
        )
        return 2
    skips, xfails = read_patterns(args.skips), read_patterns(args.xfails)
    have_hypothesis = importlib.util.find_spec("hypothesis") is not None
    reports: list[Report] = []
    jobs: list[tuple[str, Any]] = []  # (target, adapter) for the kit
    manifold_jobs: list[tuple[str, Any]] = []  # (target, manifold adapter)

    from .adapter import LibraryAdapter, ReferenceAdapter, load_target
    from .manifold import load_manifold_target

    targets = list(args.targets)
    if not targets:
        for lib in installed_libraries():
            reports.append(_self_check(lib, args.seed))
        jobs += [("reference", ReferenceAdapter(s)) for s in CATALOGUE]
    for target in targets:
        if target in LIBRARIES:
            reports.append(_self_check(target, args.seed))
            if any(r.status == "error" for r in reports[-1].results):
                continue
            jobs += [(target, LibraryAdapter(target, s)) for s in CATALOGUE]
            continue
        try:
            jobs += [(target, a) for a in load_target(target)]
            # the peer's Riemannian adapters (flowspec.conformance.manifold), if it ships any
            manifold_jobs += [(target, a) for a in load_manifold_target(target)]
        except (ImportError, ValueError, TypeError, AttributeError) as exc:
            reports.append(_error_report(target, exc))

    if jobs and not have_hypothesis:
        print(
            "flowspec check: the conformance kit needs Hypothesis "
            '(pip install ".[conformance]" in a checkout of flowspec); only the self-check ran',
            file=sys.stderr,
        )
        if targets:
            return 2
        jobs = []
    if jobs:
        from .progress import Progress
        from .properties import properties
        from .runner import check

        bar = Progress(sum(len(properties(a)) for _, a in jobs))
        try:
            for target, adapter in jobs:
                bar.label = adapter.name
                reports.append(
                    check(
                        adapter,
                        max_examples=args.max_examples,
                        seed=args.seed,
                        skips=skips,
                        xfails=xfails,
                        target=target,
                        progress=bar,
                    )
                )
        finally:
            bar.close()
    if manifold_jobs:
        from .manifold import check_manifold

        for target, adapter in manifold_jobs:
            reports.append(check_manifold(adapter, seed=args.seed, target=target))

    print(table(reports))
    results = [r for rep in reports for r in rep.results]
    failed = sum(1 for r in results if not r.ok)
    counts = {
        s: sum(1 for r in results if r.status == s) for s in ("pass", "skip", "xfail", "xpass")
    }
    print(
        f"\n{counts['pass']} passed, {failed} failed, {counts['skip']} skipped, "
        f"{counts['xfail']} xfailed, {counts['xpass']} xpassed"
    )
    if args.json:
        Path(args.json).write_text(
            to_json(
                reports,
                targets=targets,
                seed=args.seed,
                max_examples=args.max_examples,
                skips=skips,
                xfails=xfails,
            )
            + "\n"
        )
    return 1 if failed or not reports else 0


def run_golden(args: argparse.Namespace) -> int:
    """Run ``flowspec golden DIR``."""
    from .golden import write

    manifest = write(args.directory)
    n = len(manifest["files"])
    print(
        f"wrote {n} vector files and manifest.json (format version {manifest['version']}) to {args.directory}"
    )
    return 0
