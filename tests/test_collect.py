"""A real exporter -> ``flowaudit collect`` -> Kafka (embedded broker) -> NetflowDecoder, checked
against nfdump's reading of the same export.

How the ground truth is made sound: Debian's ``softflowd`` reads a capture of the corpus and
exports v5, v9 or IPFIX to ``flowaudit collect`` on 127.0.0.1.  Collect forwards each datagram
to a topic (key = exporter address).  The test consumes the topic and (1) decodes the values with
:class:`NetflowDecoder`, (2) sends *the very same bytes*, in order, over UDP from 127.0.0.1 to
Debian's ``nfcapd`` on another loopback port and reads its file with ``nfdump -o json``.  So
nfdump reads byte for byte what went through collect and Kafka -- the same export -- and the
comparison cannot be confused by a second, possibly different softflowd run.  That nothing was
lost on the way is checked separately: softflowd reports "exported ... in N packets", and collect
must have received, and Kafka must hold, exactly N datagrams.

All traffic is on 127.0.0.1; every process is stopped by PID; every wait is bounded.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flowaudit.decode.netflow import NetflowDecoder

INPUTS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "netflow" / "inputs"
CAPTURE = "mix_remote_access.pcap"

pytestmark = pytest.mark.slow
# Debian's softflowd and nfdump are required (deploy/install-system-deps.sh installs them): a
# missing tool fails these tests instead of skipping them
assert shutil.which("softflowd") and shutil.which("nfcapd") and shutil.which("nfdump"), \
    "tests/test_collect.py needs Debian's softflowd and nfdump (bash deploy/install-system-deps.sh test)"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _env(**extra) -> dict:
    """This process's environment without FLOWAUDIT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAUDIT_")}
    env.update(extra)
    return env


def start_collect(bootstrap: str, topic: str):
    return collect_process("--listen", "127.0.0.1:0", "--bootstrap", bootstrap, "--topic", topic)


def collect_process(*flags: str, env: dict | None = None):
    """``flowaudit collect FLAGS``; returns the process and the UDP port it listens on."""
    cmd = [sys.executable, "-m", "flowaudit", "collect", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or _env())
    line = proc.stdout.readline()
    if not line:
        _stop(proc)
        _, err = proc.communicate(timeout=10)
        raise AssertionError(err)
    info = json.loads(line)
    return proc, int(info["listening"].rsplit(":", 1)[1])


def run_softflowd(version: int, port: int, tmp: Path) -> int:
    """Export the capture; returns the number of export datagrams softflowd says it sent."""
    # -d foreground, -a follow pcap time; no -c: a control socket blocks forever after -r (README)
    cmd = ["softflowd", "-r", CAPTURE, "-v", str(version), "-a", "-n", f"127.0.0.1:{port}", "-d",
           "-p", str(tmp / "softflowd.pid")]
    r = subprocess.run(cmd, cwd=INPUTS, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    m = re.search(r"Flows exported: \d+ \(\d+ records\) in (\d+) packets \((\d+) failures\)", out)
    assert m, out[-2000:]
    assert m.group(2) == "0"
    return int(m.group(1))


def consume_all(bootstrap: str, topic: str, n: int, timeout: float = 60):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{topic}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])   # one partition; no group join to wait for
    msgs = []
    deadline = time.monotonic() + timeout
    try:
        while len(msgs) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    msgs.append(m)
        # nothing more than n
        for m in c.consume(num_messages=10, timeout=0.5):
            if m.error() is None:
                msgs.append(m)
    finally:
        c.close()
    msgs.sort(key=lambda m: (m.partition(), m.offset()))
    return msgs


def nfdump_of(datagrams: list[bytes], tmp: Path) -> list[dict]:
    """Send the datagrams to a fresh nfcapd on 127.0.0.1 and return nfdump's JSON records."""
    port = _free_udp_port()
    d = tmp / f"nfcapd-{port}"
    d.mkdir()
    log = open(tmp / f"nfcapd-{port}.log", "w")
    proc = subprocess.Popen(["nfcapd", "-w", str(d), "-p", str(port), "-b", "127.0.0.1", "-t", "3600",
                             "-B", "8388608"], stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)   # nfcapd binds its socket
        assert proc.poll() is None, (tmp / f"nfcapd-{port}.log").read_text()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for x in datagrams:
                s.sendto(x, ("127.0.0.1", port))
                time.sleep(0.002)
        time.sleep(1.0)
    finally:
        _stop(proc)
        log.close()
    r = subprocess.run(["nfdump", "-R", str(d), "-o", "json"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TZ="UTC"))
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    return json.loads(text) if text else []


def _ms(text: str) -> int:
    t = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.timezone.utc)
    return round(t.timestamp() * 1000)


@pytest.mark.parametrize("version", [5, 9, 10])
def test_softflowd_collect_kafka_matches_nfdump(broker, tmp_path, version):
    topic = f"netflow-sfd-v{version}-{os.getpid()}"
    broker.create_topics({topic: 1})
    collect, port = start_collect(broker.bootstrap, topic)
    try:
        sent = run_softflowd(version, port, tmp_path)
        # wait (bounded) until collect has forwarded everything, then stop it cleanly
        msgs = consume_all(broker.bootstrap, topic, sent)
    finally:
        _stop(collect)
    out, err = collect.communicate(timeout=10)
    assert collect.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])["final"]
    # loss-free: softflowd's datagrams == collect's == Kafka's
    assert final["datagrams"] == sent and final["delivered"] == sent and final["socket_drops"] == 0
    assert len(msgs) == sent
    assert {m.key() for m in msgs} == {b"127.0.0.1"}
    assert all(dict(m.headers())["exporter"] == b"127.0.0.1" for m in msgs)

    values = [m.value() for m in msgs]
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    dec = NetflowDecoder()
    keys = sorted({m.key().decode() for m in msgs})
    res = dec.decode_result(np.frombuffer(b"".join(values), np.uint8), offsets, keys,
                            [keys.index(m.key().decode()) for m in msgs], sources=[topic],
                            partition=[m.partition() for m in msgs], offset=[m.offset() for m in msgs],
                            ts_ms=[m.timestamp()[1] for m in msgs])
    assert not res.status.any() and dec.flush() == 0
    ours = res.table.to_pylist()
    assert ours and all(r["source"] == topic and r["exporter"] == "127.0.0.1" for r in ours)

    truth = nfdump_of(values, tmp_path)
    assert len(ours) == len(truth)

    def key_ours(r):
        first, last = r["first_ns"] // 1_000_000, r["last_ns"] // 1_000_000
        return (r["src_addr"], r["dst_addr"], r["src_port"], r["dst_port"], r["protocol"], r["bytes"],
                r["packets"], first, last)

    def key_nfdump(r):
        first, last = _ms(r["first"]), _ms(r["last"])
        if version == 10:
            # nfdump 1.7.1 swaps flowStartSysUpTime/flowEndSysUpTime (IE 22/21) in IPFIX (corpus
            # README, class 1); RFC 7011/IANA: 22 is the start, 21 the end -- the same flows
            # exported as v9 agree with us unswapped, so undo nfdump's swap here
            first, last = last, first
        dport = r.get("dst_port", 0)
        if "icmp_type" in r:
            # nfdump shows ICMP type/code instead of ports.  v5 has no ICMP field: exporters put
            # type << 8 | code in the record's dst port, and so do we (it is what the record says);
            # v9/IPFIX softflowd exports icmpTypeCode (IE 32/139), which is not a transport port
            dport = (r["icmp_type"] << 8 | r["icmp_code"]) if version == 5 else 0
        return (r.get("src4_addr") or r.get("src6_addr"), r.get("dst4_addr") or r.get("dst6_addr"),
                r.get("src_port", 0), dport, r.get("proto", 0), r.get("in_bytes", 0),
                r.get("in_packets", 0), first, last)

    want = collections.Counter(key_nfdump(r) for r in truth)
    got = collections.Counter(key_ours(r) for r in ours)
    assert got == want, (list((got - want).items())[:5], list((want - got).items())[:5])


def test_collect_uses_the_settings_model(broker, tmp_path):
    """``collect --config``: kafka.bootstrap_servers and kafka.extra from the file reach the producer,
    the environment overrides the file, a flag overrides both."""
    from flowaudit.sources.pcap import read_datagrams

    topic = f"netflow-cfg-{os.getpid()}"
    broker.create_topics({topic: 1})
    client = f"fa-collect-{os.getpid()}"
    cfg = tmp_path / "flowaudit.toml"
    cfg.write_text(f'''
[kafka]
bootstrap_servers = "{broker.bootstrap}"

[kafka.extra]
"client.id" = "{client}"
debug = "generic"

[collect]
listen = "256.0.0.1:0"   # not an address: the --listen flag below must win
topic = "not-this-topic"
''')
    dg = read_datagrams([INPUTS.parent / "generated" / "softflowd" / "remote_access_sfd_v5.pcap"])
    values = [dg.buf[dg.offsets[i]:dg.offsets[i + 1]].tobytes() for i in range(min(5, len(dg)))]
    assert values
    collect, port = collect_process("--config", str(cfg), "--listen", "127.0.0.1:0",
                                    env=_env(FLOWAUDIT_COLLECT_TOPIC=topic))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            for v in values:
                s.sendto(v, ("127.0.0.1", port))
        msgs = consume_all(broker.bootstrap, topic, len(values))
    finally:
        _stop(collect)
    out, err = collect.communicate(timeout=10)
    assert collect.returncode == 0, err[-2000:]
    assert [m.value() for m in msgs] == values
    assert json.loads(out.strip().splitlines()[-1])["final"]["delivered"] == len(values)
    # librdkafka's own debug log (kafka.extra "debug") names the instance after kafka.extra's client.id
    assert f"|{client}#producer-1|" in err


@pytest.mark.parametrize("extra, message", [
    ('"no.such.property" = "1"', 'kafka.extra: No such configuration property: "no.such.property"'),
    ('"linger.ms" = "soon"', "kafka.extra: Invalid value"),
])
def test_collect_bad_kafka_property_is_one_line(tmp_path, extra, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[kafka.extra]\n{extra}\n")
    r = subprocess.run([sys.executable, "-m", "flowaudit", "collect", "--config", str(cfg), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flowaudit: {message}"), r.stderr


def test_listen_addresses_are_parsed_and_a_bad_port_is_one_line():
    """--listen HOST:PORT, [V6]:PORT, :PORT or HOST; a port beyond 65535 (or not a number) was an
    OverflowError traceback from bind(): now collect.listen's one-line error."""
    from flowaudit.sources.udp import parse_listen

    assert parse_listen("127.0.0.1:9995") == ("127.0.0.1", 9995)
    assert parse_listen("[::1]:2055") == ("::1", 2055) and parse_listen("[::1]") == ("::1", 2055)
    assert parse_listen(":0") == ("0.0.0.0", 0) and parse_listen("host") == ("host", 2055)
    assert parse_listen("fe80::1") == ("fe80::1", 2055)
    for bad in ("127.0.0.1:99999", "127.0.0.1:abc", "[::1]:-1", "127.0.0.1:"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    bad = "127.0.0.1:99999"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "collect", "--listen", bad, "--max-seconds", "1"],
                       capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 2 and r.stderr.strip() == f"flowaudit: collect.listen: expected HOST:PORT, got {bad!r}"


def test_a_datagram_the_producer_refuses_is_counted(tmp_path):
    """kafka.extra's message.max.bytes makes librdkafka refuse a larger datagram at produce time:
    collect counts it as a delivery error and keeps running (exit 1 at the end), no traceback."""
    cfg = tmp_path / "small.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n[kafka.extra]\n"message.max.bytes" = 1000\n')
    collect, port = collect_process("--config", str(cfg), "--listen", "127.0.0.1:0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x00\x05" + bytes(1998), ("127.0.0.1", port))
        time.sleep(0.5)           # SIGTERM drains the socket anyway; this just lets the loop see it first
    finally:
        _stop(collect)
    out, err = collect.communicate(timeout=10)
    final = json.loads(out.strip().splitlines()[-1])["final"]
    assert collect.returncode == 1 and "Traceback" not in err
    assert final["datagrams"] == 1 and final["delivery_errors"] == 1 and final["delivered"] == 0
    assert "too large" in final["errors"][0].lower()


_LIGHT_PROBE = """
import contextlib, io, sys
from flowaudit.cli import build_parser, main
from flowaudit.sources import udp   # what cmd_collect runs
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main([sys.argv[1], "--help"])
print(" ".join(m for m in ("numpy", "pyarrow", "numba", "polars") if m in sys.modules))
"""


def test_light_commands_start_without_pyarrow_or_numba():
    """``flowaudit collect`` (and the other commands whose parsers need neither) builds its command
    line without importing pyarrow or numba: the relay runs in about 25 MB, not 150."""
    from flowaudit import cli

    full = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert cli._LIGHT <= full                                          # no stale name
    assert {"scan", "flows", "aggregates", "findings", "bench", "quarantine"} <= full
    light = set(cli.build_parser("collect")._subparsers._group_actions[0].choices)
    assert light == set(cli._LIGHT)                                    # the heavy parsers left out
    for command in ("collect", "stream", "audit"):
        out = subprocess.run([sys.executable, "-c", _LIGHT_PROBE, command], capture_output=True, text=True,
                             timeout=60, check=True)
        assert out.stdout.strip() == "", (command, out.stdout)
    # an unknown or heavy command still gets every parser (argparse names the choices)
    out = subprocess.run([sys.executable, "-m", "flowaudit", "scna"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "quarantine" in out.stderr and "scan" in out.stderr
