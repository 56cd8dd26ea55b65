"""The ``flowspec`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _check(args: argparse.Namespace) -> int:
    from .conformance import check_library, installed_libraries

    names = args.libraries or installed_libraries()
    rows = []
    header = f"{'library':<18} {'property':<12} {'worst/tol':>11}  result"
    print(header)
    print("-" * len(header))
    for name in names:
        try:
            lib_rows = check_library(name, seed=args.seed)
        except ImportError as exc:
            print(f"{name:<18} {'(import)':<12} {'':>11}  FAIL: {exc}")
            rows.append(None)
            continue
        for row in lib_rows:
            verdict = "ok" if row.passed else "FAIL"
            print(f"{row.library:<18} {row.prop:<12} {row.worst:>11.3g}  {verdict}")
            rows.append(row)
    failed = sum(1 for r in rows if r is None or not r.passed)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowspec`` command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="flowspec", description="The executable specification of Flow Matching."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="check flowspec on every installed array library against the "
        "NumPy reference and the continuity equation",
    )
    check.add_argument(
        "libraries",
        nargs="*",
        metavar="LIBRARY",
        help="numpy, array-api-strict, torch, jax, cupy (default: all installed)",
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    check.set_defaults(run=_check)
    demo = sub.add_parser(
        "demo",
        help="train a small MLP with the CFM loss on 2-D data (torch, else JAX), sample "
        "with Euler and plot it to a PNG",
    )
    from .demo import _run_args, add_arguments

    add_arguments(demo)
    demo.set_defaults(run=_run_args)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
