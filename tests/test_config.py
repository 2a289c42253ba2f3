"""Settings: TOML + FLOWAUDIT_* environment, clear one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from flowaudit.config import ConfigError, hmac_key, load


def test_defaults_toml_env_and_overrides_in_order(tmp_path):
    f = tmp_path / "fa.toml"
    f.write_text('[kafka]\nbootstrap_servers = "file:1"\ngroup_id = "g"\n[sink]\nrotate_records = 10\n')
    s = load(f, env={"FLOWAUDIT_KAFKA_BOOTSTRAP_SERVERS": "env:2", "FLOWAUDIT_SINK_RAW_VALUES": "true",
                     "FLOWAUDIT_KAFKA_TOPICS": "a=edifact, b=auto"},
             overrides={"sink": {"rotate_records": 20}})
    assert s.kafka.bootstrap_servers == "env:2"
    assert s.kafka.group_id == "g"
    assert s.sink.raw_values is True
    assert s.sink.rotate_records == 20
    assert s.kafka.topics == {"a": "edifact", "b": "auto"}


@pytest.mark.parametrize("toml,env,needle", [
    ('[kafka]\nbootstrap_server = "x"\n', {}, "unknown key kafka.bootstrap_server (did you mean kafka.bootstrap_servers?)"),
    ('[sink]\nrotate_records = "many"\n', {}, "sink.rotate_records: expected int"),
    ('[kafka.topics]\n"port.x" = "csv"\n', {}, "format 'csv' is not one of"),
    ("[kafka\n", {}, "config file"),
    ("", {"FLOWAUDIT_SINK_ROTATE_RECORDS": "ten"}, "sink.rotate_records: expected int"),
    ("", {"FLOWAUDIT_BOGUS_X": "1"}, "unknown environment variable FLOWAUDIT_BOGUS_X"),
    ("", {"FLOWAUDIT_KAFKA_TOPICS": "justatopic"}, "expected key=value"),
    ("", {"FLOWAUDIT_FINDINGS_MEMORY_MB": "-1"}, "findings.memory_mb must be >= 0"),
    ("[kafka]\nkernel_threads = 0\n", {}, "kafka.kernel_threads must be 1..64"),
    ("[collect]\nsockets = 0\n", {}, "collect.sockets must be 1..64"),
    ("", {"FLOWAUDIT_COLLECT_RCVBUF_BYTES": "0"}, "collect.rcvbuf_bytes must be positive"),
    ("[netflow]\ntemplate_ttl_s = -1\n", {}, "netflow.template_ttl_s must be 0..31622400"),
    ("", {"FLOWAUDIT_SINK_ROTATE_RECORDS": "0"}, "sink.rotate_records must be positive"),
    # a window of 1e20 s ran `findings` for ever (its nanoseconds overflow int64)
    ("", {"FLOWAUDIT_FINDINGS_WINDOW_S": "99999999999999999999"}, "findings.window_s must be at most 31622400"),
    ("[findings]\nlookback_s = 31622401\n", {}, "findings.lookback_s must be at most 31622400 (366 days)"),
    ("", {"FLOWAUDIT_FINDINGS_EPISODE_GAP_S": "40000000"}, "findings.episode_gap_s must be at most"),
    ("", {"FLOWAUDIT_EGRESS_SILENT_WINDOW_S": "-1"}, "egress.silent_window_s must be >= 0"),
])
def test_errors_are_one_line(tmp_path, toml, env, needle):
    f = tmp_path / "fa.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(f, env=env)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_hmac_key_created_once_and_private(tmp_path):
    s = load(None, env={})
    k1, src = hmac_key(s, tmp_path)
    k2, _ = hmac_key(s, tmp_path)
    assert k1 == k2 and len(k1) >= 32 and src.endswith(".hmac-key")
    assert (tmp_path / ".hmac-key").stat().st_mode & 0o077 == 0
    s.security.hmac_key = "operator-key-0123456789"
    assert hmac_key(s, tmp_path)[0] == b"operator-key-0123456789"


@pytest.mark.parametrize("env,where", [
    ({"FLOWAUDIT_SECURITY_HMAC_KEY": "short-key"}, "security.hmac_key"),
    ({"FLOWAUDIT_SECURITY_HMAC_KEY_FILE": "{kf}"}, "security.hmac_key_file"),
])
def test_operator_keys_need_16_bytes_wherever_they_come_from(tmp_path, env, where):
    kf = tmp_path / "key"
    kf.write_bytes(b"short-key\n")
    s = load(None, env={k: v.format(kf=kf) for k, v in env.items()})
    with pytest.raises(ConfigError) as exc:
        hmac_key(s, tmp_path)
    assert str(exc.value) == f"{where}: the key must be at least 16 bytes (got 9)"
    # the auto-created key file is held to the same rule when read back
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / ".hmac-key").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        hmac_key(load(None, env={}), tmp_path / "root")
    assert hmac_key(load(None, env={"FLOWAUDIT_SECURITY_HMAC_KEY": "0123456789abcdef"}), tmp_path)[0] == \
        b"0123456789abcdef"


def test_readers_never_create_a_key(tmp_path):
    with pytest.raises(ConfigError, match="no operator key"):
        hmac_key(load(None, env={}), tmp_path, create=False)
    assert list(tmp_path.iterdir()) == []


_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from flowaudit.config import ConfigError, hmac_key, load
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a failed write returns EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))     # no file may grow past 16 bytes: the key needs 64
try:
    hmac_key(load(None, env={}), Path(sys.argv[1]))
except ConfigError as exc:
    print(exc)
    sys.exit(2)
"""


def test_a_failed_key_write_leaves_no_temp_file(tmp_path):
    root = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, str(root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stdout.strip() == f"cannot create the HMAC key file {root / '.hmac-key'}: File too large"
    assert r.stderr == ""
    assert list(root.iterdir()) == []          # neither a temp file nor a partial key
    assert root.stat().st_mode & 0o027 == 0     # 0750: no group write, nothing for others
    # with room to write, the next start creates the key
    key, _ = hmac_key(load(None, env={}), root)
    assert len(key) == 64 and [p.name for p in root.iterdir()] == [".hmac-key"]


def test_a_settings_file_that_is_not_text_or_not_a_file_is_one_line(tmp_path):
    """A config file in another encoding, or a folder given as one, was a traceback."""
    f = tmp_path / "latin1.toml"
    f.write_bytes(b"# Cr\xe9dit\n")
    for path, needle in ((f, "not UTF-8 text"), (tmp_path, "cannot read")):
        with pytest.raises(ConfigError) as exc:
            load(path, env={})
        assert str(exc.value).startswith(f"config file {path}: {needle}") and "\n" not in str(exc.value)
    r = subprocess.run([sys.executable, "-m", "flowaudit", "findings", str(tmp_path), "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == f"flowaudit: config file {f}: not UTF-8 text (TOML is UTF-8)"


def test_cli_reports_config_errors_without_traceback(tmp_path):
    f = tmp_path / "fa.toml"
    f.write_text('[sink]\nrotate_record = 5\n')
    r = subprocess.run([sys.executable, "-m", "flowaudit", "stream", "--config", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "flowaudit: unknown key sink.rotate_record (did you mean sink.rotate_records?)"
    # a flag of 0 is refused like the setting, not taken for "not given" (it was the default)
    r = subprocess.run([sys.executable, "-m", "flowaudit", "stream", "--rotate-records", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "flowaudit: sink.rotate_records must be positive"


@pytest.mark.parametrize("argv, flag, bad, good", [
    (["aggregates", "R"], "--window", "0", 60.0), (["aggregates", "R"], "--top", "-1", 0),
    (["findings", "R"], "--top", "-1", 0), (["scan", "P"], "--batch-mib", "0", 0.5),
    (["synth", "--out", "O"], "--count", "-5", 0), (["demo"], "--count", "0", 1),
    (["audit", "I", "--out", "O"], "--threads", "0", 1), (["audit", "I", "--out", "O"], "--workers", "-1", 1),
    (["audit", "I", "--out", "O"], "--unit-rows", "0", 1), (["stream"], "--max-seconds", "-1", 0.5),
    (["collect"], "--max-seconds", "0", 0.5), (["collect"], "--stats-every", "0", 0.5), (["warmup"], "--jobs", "0", 1),
    (["flows", "P", "--out", "O"], "--template-ttl", "-5", 0), (["synth", "--out", "O"], "--partitions", "0", 1),
    (["demo"], "--partitions", "0", 1), (["synth", "--out", "O"], "--bad-fraction", "1.5", 1.0),
    (["synth", "--out", "O"], "--bad-fraction", "nan", 0.0), (["demo"], "--metrics-port", "65536", 65535),
    (["fuzz"], "--seconds", "-1", 0.5), (["fuzz"], "--inputs", "-5", 1), (["fuzz"], "--hang-seconds", "0", 0.5),
    (["fuzz"], "--minimise-seconds", "-1", 0), (["quarantine", "reinject", "R"], "--timeout", "0", 0.5),
    (["findings", "R"], "--episode-gap", "-1", 0), (["report", "R", "--out", "O"], "--episode-gap", "-1", 0),
    (["audit", "I", "--out", "O"], "--episode-gap", "-60", 0),
    (["aggregates", "R"], "--window", "1e20", 31622400.0),     # (an OverflowError traceback)
    (["flows", "P", "--out", "O"], "--template-ttl", str(10**20), 31622400)])   # (a numba TypingError)
def test_counts_and_sizes_out_of_range_are_usage_errors(argv, flag, bad, good, capsys):
    """A negative or zero count, window or batch size is named by argparse (exit 2); they were
    tracebacks (aggregates --window 0, synth --bad-fraction 1.5), silently nothing (synth --count
    -5, findings --top -1), silently the default (audit --threads 0), minutes of work to no end
    (fuzz --seconds -1 compiled and ran every decoder) or an error only after the broker had started
    (demo --metrics-port 65536).  The bound itself is accepted."""
    from flowaudit.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser(argv[0]).parse_args([*argv, flag, bad])
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
    a = build_parser(argv[0]).parse_args([*argv, flag, str(good)])
    assert getattr(a, flag.lstrip("-").replace("-", "_")) == good


def test_an_output_path_of_the_wrong_kind_is_a_usage_error(tmp_path, capsys):
    """An output file named where a folder is (scan, report, flows, aggregates) was a traceback
    after the work was done; an output folder named where a file is (audit, stream, synth) was a
    puzzling key-file error or a traceback.  Both are now argparse errors, exit 2, before any work."""
    from flowaudit.cli import build_parser

    folder, file = tmp_path / "d", tmp_path / "f"
    folder.mkdir()
    file.write_text("x")
    for argv, flag, bad in ((["scan", "P"], "--out", folder), (["report", "R", "--out", "o.html"], "--json", folder),
                            (["report", "R"], "--out", folder), (["flows", "P", "--out", "o"], "--quarantine", folder),
                            (["flows", "P"], "--out", folder), (["aggregates", "R"], "--out", folder),
                            (["audit", "I"], "--out", file), (["stream"], "--root", file), (["synth"], "--out", file)):
        with pytest.raises(SystemExit) as e:
            build_parser(argv[0]).parse_args([*argv, flag, str(bad)])
        kind = "a folder: give a file name" if bad == folder else "a file: give a folder"
        assert e.value.code == 2 and f"argument {flag}: {bad} is {kind}" in capsys.readouterr().err, argv
        ok = tmp_path / "new" if bad == file else tmp_path / "new.parquet"
        a = build_parser(argv[0]).parse_args([*argv, flag, str(ok)])          # a new path is taken as given
        assert getattr(a, flag.lstrip("-")) == str(ok)


def test_a_collector_port_is_a_port(capsys):
    from flowaudit.cli import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser("flows").parse_args(["flows", "P", "--out", "O", "--port", "2055", "--port", "70000"])
    assert e.value.code == 2 and "argument --port: must be at most 65535" in capsys.readouterr().err
    assert build_parser("flows").parse_args(["flows", "P", "--out", "O", "--port", "0", "--port", "65535"]).port \
        == [0, 65535]


def test_cli_reports_unreachable_broker_in_one_line(tmp_path):
    from flowaudit.broker import free_port
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "flowaudit", "stream", "--bootstrap", f"127.0.0.1:{port}",
                        "--root", str(tmp_path), "--metrics-port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("flowaudit:")]
    assert lines and f"cannot reach Kafka at 127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in r.stderr
