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

DNS attribution needs the answers and the flows they name in one member's map.  Where the topics
hold both names (``dns``, ``eve``) and flows (``netflow``, ``goflow``, ``zeek_conn``, ``eve``),
worker 0 reads every topic and the other workers the message topics only: members of one group
may subscribe to different topics, and the group assigns a topic's partitions to the members
subscribed to it (:func:`worker_topics`).
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


# flowaudit.decode.TELEMETRY_NAMES spelled out: cli imports this module, and the light commands
# (collect) start without numpy (tests/test_collect.py)
FLOW_FORMATS = ("netflow", "goflow", "zeek_conn", "eve")   # the telemetry topics whose flows names name
NAME_FORMATS = ("dns", "eve")          # the telemetry topics that name addresses (eve: both)
TELEMETRY_FORMATS = ("dns", *FLOW_FORMATS)


def strip_option(argv: list[str], opt: str) -> list[str]:
    """``argv`` without its ``opt VALUE`` / ``opt=VALUE`` options."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == opt:
            skip = True
        elif not a.startswith(opt + "="):
            out.append(a)
    return out


def strip_workers(argv: list[str]) -> list[str]:
    """``argv`` without its ``--workers N`` / ``--workers=N`` options."""
    return strip_option(argv, "--workers")


def worker_topics(topics: dict[str, str], n: int) -> list[dict | None]:
    """The topics (name -> format) of each of ``n`` workers; None: the configured ones.  With
    topics of names and of flows among them (an ``eve`` topic is both), worker 0 keeps every topic
    and the others get the message topics only, so that one member holds every DNS answer and
    every flow; a worker left with no topic is not started (the list is shorter)."""
    fmts = set(topics.values())
    if n <= 1 or not fmts & set(NAME_FORMATS) or not fmts & set(FLOW_FORMATS):
        return [None] * n
    rest = {t: f for t, f in topics.items() if f not in TELEMETRY_FORMATS}
    return [None] + ([rest] * (n - 1) if rest else [])


def worker_argv(argv: list[str], i: int, metrics_port: int, topics: dict[str, str] | None = None) -> list[str]:
    """Worker ``i``'s command line: the stream's own arguments, one worker, its metrics port, and
    its own ``--topics`` where :func:`worker_topics` gave it some."""
    args = strip_workers(argv)
    if topics is not None:
        args = strip_option(args, "--topics") + ["--topics", ",".join(f"{t}={f}" for t, f in topics.items())]
    cmd = [sys.executable, "-m", "flowaudit", *args, "--workers", "1"]
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


def supervise(argv: list[str], n: int, metrics_port: int, poll_s: float = 0.2,
              topics: dict[str, str] | None = None) -> int:
    """Run ``n`` workers of ``flowaudit stream`` (``argv``: the stream's command line; ``topics``:
    the configured topics, name -> format) until all have exited; returns the supervisor's exit
    status (module docstring)."""
    own = worker_topics(topics or {}, n)
    if len(own) < n:
        print(f"flowaudit: every topic is a telemetry topic, read by worker 0 alone (DNS attribution needs "
              f"the answers and the flows in one member): 1 worker, not {n}", file=sys.stderr, flush=True)
        n = len(own)
    elif own[1:] and own[1] is not None:
        print("flowaudit: worker 0 reads the telemetry topics (DNS attribution needs the answers and the flows "
              "in one member); the message topics are shared by every worker", file=sys.stderr, flush=True)
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
            procs.append(subprocess.Popen(worker_argv(argv, i, metrics_port, own[i]), env=env,
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
