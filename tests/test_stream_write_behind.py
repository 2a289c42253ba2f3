"""Write-behind (``sink.write_behind``, on by default: a writer thread publishes
the file sets the worker seals) against publishing in the consuming thread
(``kafka.pipeline_depth = 0``: no worker, no writer thread), on the real embedded broker: the
same files, with the same names and the same rows, exactly once."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flowaudit import synth

from .conftest import produce_labelled, run_stream
from .test_stream_integration import assert_exactly_once, assert_no_partial_files, expected_hits, found_hits

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, list]:
    """dataset/file name -> the file's rows (published files only; the hour folders included).
    ``raw`` (quarantined records, sealed with a fresh nonce each time) is left out; the exactly
    once check opens it."""
    out = {}
    for f in sorted(root.rglob("*.parquet")):
        if not f.name.startswith("."):
            t = pq.read_table(f)
            out[str(f.relative_to(root))] = t.drop_columns([c for c in t.column_names if c == "raw"]).to_pylist()
    return out


def test_write_behind_writes_the_same_files_as_the_consuming_thread(broker, topics, tmp_path):
    """Rotation by record count closes many file sets mid-run (the writer thread publishes them
    while the worker classifies the next batch); file names are offset ranges, so both runs must
    leave the very same files, row for row."""
    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=21, n=3000, bad_fraction=0.02))
    roots = {}
    for name, depth in (("inline", "0"), ("behind", "2")):
        root = roots[name] = tmp_path / name
        args = ("--until-drained", "--group", f"g-wb-{name}", "--metrics-port", "0", "--rotate-records", "150")
        env = {"FLOWAUDIT_FINDINGS_ENABLED": "false", "FLOWAUDIT_KAFKA_PIPELINE_DEPTH": depth,
               "FLOWAUDIT_KAFKA_POLL_MAX_MESSAGES": "200"}
        env["FLOWAUDIT_SINK_WRITE_BEHIND"] = "true" if name == "behind" else "false"
        r = run_stream(broker.bootstrap, topics, root, *args, **env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert ("write-behind " in r.stdout) == (name == "behind"), r.stdout
        assert_exactly_once(root, placed)
        assert_no_partial_files(root)
        assert found_hits(root) == expected_hits(placed)
    inline, behind = _files(roots["inline"]), _files(roots["behind"])
    messages = [k for k in inline if k.startswith("dataset=messages")]
    assert len(messages) > 16          # 8 partitions, several file sets each: rotation happened mid-run
    assert sorted(inline) == sorted(behind)
    for k in inline:
        assert inline[k] == behind[k], k


def test_a_fault_in_the_writer_thread_stops_the_service_and_loses_nothing(broker, topics, tmp_path, monkeypatch):
    """A fault in the writer thread outside a publish (here the heap trim after a hand-off) used
    to end the thread; the worker then waited for it for ever, and the service hung with its
    partitions.  Now the service stops with the error, publishes nothing after it, and the next
    start consumes every offset exactly once."""
    import threading

    from flowaudit import service as S
    from flowaudit.config import Settings

    from .conftest import HMAC_KEY

    placed = produce_labelled(broker.bootstrap, topics, synth.generate(seed=22, n=1500))
    root = tmp_path / "root"
    calls = []

    def trim_failing_once():
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise RuntimeError("injected fault in the writer thread")
        return True

    monkeypatch.setattr(S, "trim", trim_failing_once)
    st = Settings()
    st.kafka.bootstrap_servers = broker.bootstrap
    st.kafka.topics = {t: f for f, t in topics.items()}
    st.kafka.group_id = "g-wb-fault"
    st.kafka.session_timeout_ms = 6000
    st.kafka.poll_max_messages = 200
    st.sink.root = str(root)
    st.sink.rotate_records = 150
    st.findings.enabled = False
    st.security.hmac_key = HMAC_KEY
    got: dict = {}

    def run():
        try:
            got["summary"] = S.StreamService(st.validate(), metrics=None, until_drained=True,
                                             install_signals=False).run()
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            got["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the service hung on its writer thread"
    assert "flowaudit-writer" in calls[:2], calls
    assert isinstance(got.get("error"), RuntimeError) and "injected" in str(got["error"]), got
    monkeypatch.undo()
    r = run_stream(broker.bootstrap, topics, root, "--until-drained", "--group", "g-wb-fault", "--metrics-port", "0",
                   "--rotate-records", "150", FLOWAUDIT_FINDINGS_ENABLED="false")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_exactly_once(root, placed)
    assert_no_partial_files(root)
    assert found_hits(root) == expected_hits(placed)
