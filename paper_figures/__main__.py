"""``python -m paper_figures [--results results/cpu] [--out figures/]``: regenerate every figure and table.

Missing inputs are listed with the command that produces each; they never make this fail (exit 0).
A malformed result file is reported with its path (exit 1).
"""
from __future__ import annotations

import argparse
import sys

from .regenerate import JOBS, regenerate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figures", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/cpu", help="results root (default: results/cpu)")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(JOBS)}")
    args = parser.parse_args(argv)
    only = None
    if args.only:
        only = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = [s for s in only if s not in JOBS]
        if unknown:
            parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(JOBS)}")
    results = regenerate(args.results, args.out, only=only)
    return 1 if any(r.status == "malformed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
