"""The ``flowspec`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _check(args: argparse.Namespace) -> int:
    from .conformance.command import run_check

    return run_check(args)


def _golden(args: argparse.Namespace) -> int:
    from .conformance.command import run_golden

    return run_golden(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowspec`` command; returns the exit status."""
    from .conformance.command import add_check_arguments

    parser = argparse.ArgumentParser(
        prog="flowspec", description="The executable specification of Flow Matching."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="check flowspec on every installed array library, or any implementation "
        "of Flow Matching (TARGET), against the reference and the continuity equation",
    )
    add_check_arguments(check)
    check.set_defaults(run=_check)
    golden = sub.add_parser(
        "golden", help="write versioned golden test vectors (.npz + manifest.json) to DIR"
    )
    from .conformance.command import golden_directory

    golden.add_argument("directory", metavar="DIR", type=golden_directory)
    golden.set_defaults(run=_golden)
    demo = sub.add_parser(
        "demo",
        help="train a small MLP with the CFM loss on 2-D data (torch, else JAX), sample "
        "with Euler and plot it to a PNG",
        description="Train a small MLP with the CFM loss on 2-D data, sample it with Euler "
        "next to the exact marginal field, and plot both with the loss floor of Theorem 2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from .demo import _run_args, add_arguments

    add_arguments(demo)
    demo.set_defaults(run=_run_args)
    # -- the exact marginal of a .npy data set, on a Dask cluster or not (issue 16)
    from .marginal_command import add_marginal_arguments, run_marginal

    marginal = sub.add_parser(
        "marginal",
        help="the exact marginal field (velocity, denoiser, score, log-density, "
        "divergence) of a .npy data set at a query batch, on a dask cluster or locally",
    )
    add_marginal_arguments(marginal)
    marginal.set_defaults(run=run_marginal)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
