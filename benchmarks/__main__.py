"""``python -m benchmarks``: the benchmark suite (today: the end-to-end stream benchmark)."""
from .e2e import main

raise SystemExit(main())
