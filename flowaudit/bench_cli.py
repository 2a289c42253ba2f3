"""``flowaudit bench``: the benchmark suite (code in ``benchmarks/`` at the repository root).

``cli.py`` registers it with one line: ``bench_cli.add_parser(sub)``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _suite():
    try:
        from benchmarks import suite
    except ImportError:
        # an editable install: benchmarks/ sits beside the flowaudit package in the checkout
        root = Path(__file__).resolve().parents[1]
        if not (root / "benchmarks" / "suite.py").exists():
            raise SystemExit("flowaudit bench: the benchmarks/ folder was not found; run it from a "
                             "flowaudit checkout (pip install -e '.[bench]')") from None
        sys.path.insert(0, str(root))
        from benchmarks import suite
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
