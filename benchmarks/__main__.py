"""``python -m benchmarks``: the benchmark suite, the same entry as ``flowaudit bench``.

Single benchmarks stay runnable on their own: ``python -m benchmarks.e2e``, ``python -m benchmarks.ipset``.
"""
from .suite import main

raise SystemExit(main())
