"""``flowaudit bench``: the benchmark suite (code in ``benchmarks/`` at the repository root).

``cli.py`` registers it with one line: ``bench_cli.add_parser(sub)``.
"""
from __future__ import annotations

import argparse


def _suite():
    # benchmarks/ is installed as flowaudit.benchmarks (pyproject package-dir); in a checkout it is
    # also the top-level package ``benchmarks`` (python -m benchmarks)
    from flowaudit.benchmarks import suite
    return suite


def cmd_bench(args) -> int:
    return _suite().run_cli(args)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="benchmark every stage side by side with its peers (JSON, Markdown, PNG)",
        description="Generate or reuse a deterministic corpus (cached by seed and size), measure each stage "
                    "single-threaded next to its peers on the same bytes, check the counts agree, and print "
                    "the table with the ratios.  --quick: about a minute; the full run is what gets reported.")
    _suite().add_arguments(p)
    p.set_defaults(fn=cmd_bench)
    return p
