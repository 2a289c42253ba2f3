"""Every input the fuzzer saved (``tests/fuzz_crashers/<decoder>/<sha1>.bin``, see ``flowaudit fuzz``)
replayed through the normal path: this process, the normal compiled kernels, no bounds checking.

Each one once crashed its decoder (the ``.txt`` beside it says how); now every input must end as a
decoded message or a quarantine row (or, for ``pcap``, as the documented "not a capture" error),
with the fuzzer's invariants holding.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from flowaudit import fuzz

CRASHERS = sorted(Path(__file__).parent.glob("fuzz_crashers/*/*.bin"))


def test_every_crasher_names_a_decoder_and_says_how_it_crashed():
    assert CRASHERS, "tests/fuzz_crashers holds the fuzzer's findings"
    for path in CRASHERS:
        assert path.parent.name in fuzz.PUBLIC, path
        note = path.with_suffix(".txt").read_text()
        assert note.startswith(f"decoder: {path.parent.name}\ncrash: "), path


@pytest.mark.parametrize("path", CRASHERS, ids=[f"{p.parent.name}/{p.stem[:12]}" for p in CRASHERS])
def test_crasher_is_handled(path):
    batches = fuzz.decode_episode(path.read_bytes())
    stats = fuzz.replay(path.parent.name, path.read_bytes())   # raises what the input still breaks
    assert len(stats) == len(batches)
    for st, batch in zip(stats, batches):
        assert st["inputs"] == len(batch)
        if "captures" in st:     # pcap: read as a capture, or refused as none
            assert st["captures"] + st["not_a_capture"] == len(batch)
        elif "decoded" in st:    # every message (scan: interchange) in exactly one of messages and quarantine
            assert st["decoded"] + st["quarantined"] == st.get("interchanges", len(batch))
