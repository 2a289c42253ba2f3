"""``flowaudit scan``: offline classification with the stream's code path."""
from __future__ import annotations

import subprocess
import sys

import orjson

from flowaudit.scan import split_interchanges

EDI = (b"UNB+UNOA:2+A+B+260301:1200+1'UNH+1+CODECO:D:95B:UN'EQD+CN+SUDU1234569'UNT+3+1'UNZ+1+1'")
EDI2 = (b"UNA:+.? 'UNB+UNOA:2+A+B+260301:1200+2'UNH+1+CODECO:D:95B:UN'FTX+AAA+++SHIPPER?'S UNB+ NOTE'"
        b"EQD+CN+MSCU1234565'UNT+4+1'UNZ+1+2'")
X12 = (b"ISA*00*          *00*          *ZZ*A              *ZZ*B              *260301*1200*U*00401*000000001*0*P*>~"
       b"GS*QO*A*B*20260301*1200*1*X*004010~ST*315*0001~B4***D*20260301*1200*USLAX*SUDU*1234569~SE*3*0001~"
       b"GE*1*1~IEA*1*000000001~")


def test_split_edifact_and_x12_interchanges():
    assert split_interchanges(EDI + b"\n" + EDI2) == [EDI + b"\n", EDI2]
    assert split_interchanges(EDI) == [EDI]
    assert split_interchanges(X12 + b"\r\n" + X12) == [X12 + b"\r\n", X12]
    # 'UNB+' inside a released free text is not an interchange start
    assert split_interchanges(EDI2) == [EDI2]
    doc = b'{"a": "UNB+UNOA"}'
    assert split_interchanges(doc) == [doc]


def test_scan_cli_writes_jsonl_and_summary(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "two.edi").write_bytes(EDI + b"\n" + EDI2)
    (tmp_path / "in" / "one.x12").write_bytes(X12)
    (tmp_path / "in" / "bad.json").write_bytes(b'{"equipmentReference": ')
    out = tmp_path / "hits.jsonl"
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "in"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 files, 4 messages" in r.stdout and "1 quarantined" in r.stdout
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    got = sorted((row["source"].rsplit("/", 1)[1], row["offset"], row["value_masked"], row["check_digit_valid"])
                 for row in rows if row["data_class"] == "container_number")
    assert got == [("one.x12", 0, "SUDU******9", True), ("two.edi", 0, "SUDU******9", True),
                   ("two.edi", 1, "MSCU******5", False)]
    assert all(row["value_raw"] is None for row in rows)


def test_scan_reports_missing_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flowaudit", "scan", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file or folder" in r.stderr
