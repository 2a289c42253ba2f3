"""``flowaudit stream --workers N``: N stream processes in one consumer group on one host.

Each worker is a whole ``flowaudit stream`` with the same settings, so the group shares the
partitions as members on separate hosts would: Kafka's group protocol balances them, each
partition's writer holds its lock in ``<root>/.locks/``, and storage stays the one source of
truth (README, *Reliability*).  A worker serves ``/metrics`` on the configured port plus its
index (0, 1, ...), and tags its log lines and summary ``[worker i/N]``.

The supervisor only starts, signals and waits; it never consumes:

* SIGTERM or SIGINT is passed on to every worker, which publishes, commits and exits;
* a worker that exits non-zero while the others run stops them all (SIGTERM), and the
  supervisor exits with that worker's status (a signal ``S`` as ``128 + S``), so systemd
  (``Restart=on-failure``) or the orchestrator restarts the lot;
* under ``--until-drained`` each worker ends once the group is drained, and the supervisor
  exits 0 when every worker has;
* a supervisor that dies (kill -9) takes its workers with it: each was started with
  ``PR_SET_PDEATHSIG`` = SIGTERM, so it stops cleanly instead of running on unsupervised.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .memory import _libc

WORKER_ENV = "FLOWAUDIT_WORKER"     # "i/N" in a worker's environment: its log and summary tag
_PR_SET_PDEATHSIG = 1


def worker_tag() -> str:
    """``[worker i/N] `` inside a worker, else ``""``."""
    w = os.environ.get(WORKER_ENV)
    return f"[worker {w}] " if w else ""


def strip_workers(argv: list[str]) -> list[str]:
    """``argv`` without its ``--workers N`` / ``--workers=N`` options."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def worker_argv(argv: list[str], i: int, metrics_port: int) -> list[str]:
    """Worker ``i``'s command line: the stream's own arguments, one worker, its metrics port."""
    cmd = [sys.executable, "-m", "flowaudit", *strip_workers(argv), "--workers", "1"]
    if metrics_port:
        cmd += ["--metrics-port", str(metrics_port + i)]
    return cmd


def _die_with(parent: int):
    """A ``preexec_fn`` (the child, between fork and exec): SIGTERM when ``parent`` dies.  libc
    is looked up here, in the parent: the child only makes the call."""
    prctl = getattr(_libc(), "prctl", None)      # None: not Linux, the worker outlives a killed supervisor

    def preexec() -> None:
        if prctl is None:
            return
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:               # it died before the prctl took effect
            os._exit(143)
    return preexec


def exit_status(returncode: int) -> int:
    """A child's ``returncode`` as a shell reports it (killed by signal S: 128 + S)."""
    return 128 - returncode if returncode < 0 else returncode


def supervise(argv: list[str], n: int, metrics_port: int, poll_s: float = 0.2) -> int:
    """Run ``n`` workers of ``flowaudit stream`` (``argv``: the stream's command line) until all
    have exited; returns the supervisor's exit status (module docstring)."""
    stop_requested = False
    procs: list[subprocess.Popen] = []

    def on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for i in range(n):
            env = dict(os.environ, **{WORKER_ENV: f"{i}/{n}"})
            procs.append(subprocess.Popen(worker_argv(argv, i, metrics_port), env=env,
                                          preexec_fn=_die_with(os.getpid())))
            print(f"flowaudit: worker {i}/{n} started, pid {procs[-1].pid}"
                  + (f", metrics on port {metrics_port + i}" if metrics_port else ""),
                  file=sys.stderr, flush=True)
            if stop_requested:           # a signal while starting: stop those already started
                on_signal(signal.SIGTERM, None)
                break
        failed = False
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                rc = p.poll()
                if rc and not failed:
                    failed, status = True, exit_status(rc)
                    if not stop_requested:
                        print(f"flowaudit: worker {i}/{n} (pid {p.pid}) exited {status}; stopping the others",
                              file=sys.stderr, flush=True)
                        on_signal(signal.SIGTERM, None)
            time.sleep(poll_s)
        if not failed:
            status = next((exit_status(p.returncode) for p in procs if p.returncode), 0)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for p in procs:                  # an exception here: no worker is left behind
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()
    return status
