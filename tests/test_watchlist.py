"""flowaudit/detect/watchlist.py: shipped defaults, validation, host matching, atomic reload."""
from __future__ import annotations

import os
import re
import tomllib

import pytest
from hypothesis import given, settings, strategies as st

from flowaudit import schemas
from flowaudit.detect import watchlist as W

EXTRA = """
version = "ops-1"
[platforms.ExampleVendor]
severity = "medium"
source = "operator contract register"
[[indicators]]
platform = "LOGINK"
type = "cidr"
values = ["203.0.113.0/24", "2001:db8:10::/48"]
source = "operator: EXAMPLE documentation ranges"
[[indicators]]
platform = "ExampleVendor"
type = "edi_party"
value = "exvendorhub"
source = "operator"
"""


def test_defaults_load_and_every_indicator_has_a_source():
    wl = W.load()
    assert wl.version == tomllib.loads(schemas.path("watchlist.toml").read_text())["version"]
    assert {"LOGINK", "NEAL-NET", "Nuctech", "TeamViewer"} <= set(wl.platforms)
    for ind in wl.indicators:
        assert ind.source.strip(), ind
        assert re.search(r"https?://|[\w.-]+/[\w.-]+|\.java|\.js|\.php|domain-facts", ind.source), ind
    for p in wl.platforms.values():
        assert p.source.startswith("http")


def test_defaults_ship_no_addresses():
    # domain-facts 6b: no source gave LOGINK/ZPMC/Nuctech addresses; never invent them
    wl = W.load()
    assert not [i for i in wl.indicators if i.type in ("ip", "cidr", "edi_party")]
    assert wl.ipset.n_entries == 0


def test_sourced_default_values_present():
    wl = W.load()
    vals = {(i.type, i.value) for i in wl.indicators}
    for h in ("gateway.logink.cn", "ssl.logink.cn", "exb.logink.cn", "gateway.logink.org", "api.logink.org",
              "exa.logink.org", "test.logink.org", "credit.logink.org", "jc.logink.org", "www.logink.org"):
        assert ("host", h) in vals
    assert ("domain", "logink.cn") in vals and ("domain", "logink.org") in vals
    assert ("host_pattern", "master*.teamviewer.com") in vals
    assert ("payload_marker", "LOGINK_CN_FREIGHTBROKER_WAYBILL") in vals
    assert ("party_code", "CNNGB") in vals


@pytest.mark.parametrize("name,want", [
    ("gateway.logink.cn", "gateway.logink.cn"), ("GATEWAY.LOGINK.CN.", "gateway.logink.cn"),
    ("x.logink.cn", "logink.cn"), ("a.b.logink.org", "logink.org"), ("logink.cn", "logink.cn"),
    ("english.neal-net.net", "english.neal-net.net"), ("master7.teamviewer.com", "master*.teamviewer.com"),
    ("router12.teamviewer.com", "router*.teamviewer.com"),
    ("notlogink.cn", None), ("blogink.org", None), ("LoginKit.com", None), ("logink.cn.example.com", None),
    ("logink", None), ("teamviewer.com", None), ("xmaster1.teamviewer.com", None), ("a.master1.teamviewer.com", None),
    ("nuctech.com", None), ("", None),
])
def test_match_host(name, want):
    wl = W.load()
    i = wl.match_host(name)
    assert (wl.indicators[i].value if i >= 0 else None) == want


def test_operator_files_extend(tmp_path):
    (tmp_path / "ops.toml").write_text(EXTRA)
    wl = W.load(tmp_path)
    assert wl.version.startswith(W.load().version + "+")
    i = wl.ipset.lookup_text(["203.0.113.7", "2001:db8:10::1", "198.51.100.1"])
    assert [wl.indicators[wl.ip_indicator[x]].platform if x >= 0 else None for x in i] == ["LOGINK", "LOGINK", None]
    assert wl.indicators[wl.match_edi_party(" EXVENDORHUB ")].platform == "ExampleVendor"


BAD = [
    ('version = "x"\n[[indicators]]\nplatform = "LOGINK"\ntype = "cidr"\nvalue = "10.0.0.0/33"\nsource = "s"\n', "bad cidr"),
    ('version = "x"\n[[indicators]]\nplatform = "LOGINK"\ntype = "ip"\nvalue = "10.0.0.1"\n', "source"),
    ('version = "x"\n[[indicators]]\nplatform = "Nope"\ntype = "ip"\nvalue = "10.0.0.1"\nsource = "s"\n', "not defined"),
    ('version = "x"\n[[indicators]]\nplatform = "LOGINK"\ntype = "regex"\nvalue = "a"\nsource = "s"\n', "type"),
    ('version = "x"\n[[indicators]]\nplatform = "LOGINK"\ntype = "domain"\nvalue = "*.logink.cn"\nsource = "s"\n', "bad domain"),
    ('version = "x"\n[[indicators]]\nplatform = "LOGINK"\ntype = "url_path"\nvalue = "ais"\nsource = "s"\n', "url_path"),
    ('version = "x"\nthis is not toml', "toml"),
    ('[platforms.X]\nseverity = "high"\nsource = "s"\n', "version"),
    ('version = "x"\n[platforms.LOGINK]\nseverity = "high"\nsource = "s"\n', "defined twice"),
]


@pytest.mark.parametrize("text,frag", BAD)
def test_validation_errors_are_one_line(tmp_path, text, frag):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(W.WatchlistError) as e:
        W.load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "bad.toml" in msg and frag in msg, msg


def test_reload_swaps_atomically_and_keeps_old_on_error(tmp_path):
    holder = W.Watchlist(tmp_path)
    first = holder.current
    assert holder.poll() is False  # nothing changed
    (tmp_path / "ops.toml").write_text(EXTRA)
    assert holder.poll() is True
    second = holder.current
    assert second is not first and second.ipset.n_entries == 2
    # a broken edit: the old compiled watchlist stays, the error is kept
    (tmp_path / "ops.toml").write_text(EXTRA.replace("203.0.113.0/24", "203.0.113.0/99"))
    os.utime(tmp_path / "ops.toml", ns=(1, 1))
    assert holder.poll() is False
    assert holder.current is second and "bad cidr" in holder.last_error
    assert holder.failed_reloads == 1
    assert holder.poll() is False  # the same broken file is not retried on every poll
    # fixed again
    (tmp_path / "ops.toml").write_text(EXTRA.replace("203.0.113.0/24", "198.51.100.0/24"))
    assert holder.reload() is True and holder.last_error is None
    assert holder.current.ipset.lookup_text(["198.51.100.9"]).tolist() != [-1]
    # the file removed: back to the defaults only
    (tmp_path / "ops.toml").unlink()
    assert holder.poll() is True and holder.current.ipset.n_entries == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.binary(max_size=8), st.binary(max_size=8))
def test_base64_aliases_are_in_every_encoding_of_the_literal(lit, before, after):
    """Reference: encode the literal with bytes around it.  The alias of its alignment (bytes
    before it, mod 3) is in the standard and in the URL-safe encoding, wherever it sits."""
    import base64

    aliases = W.base64_aliases(lit)
    k = len(before) % 3
    skip = (0, 2, 3)[k]
    std = base64.b64encode(b"\0" * k + lit).rstrip(b"=")[skip:]
    std = std[:-1] if (k + len(lit)) % 3 else std
    assert (std, skip) in aliases
    whole = before + lit + after
    at = 4 * (len(before) // 3) + skip          # where the literal's characters start
    assert base64.b64encode(whole)[at:at + len(std)] == std
    safe = std.replace(b"+", b"-").replace(b"/", b"_")
    assert (safe, skip) in aliases and base64.urlsafe_b64encode(whole)[at:at + len(std)] == safe


def test_long_literals_get_base64_aliases_short_ones_do_not():
    wl = W.compile_files([W.default_path()])
    lits = {bytes(wl.patterns.pat_buf[wl.patterns.pat_off[i]:wl.patterns.pat_off[i + 1]]): i
            for i in range(wl.patterns.n)}
    aliases = {bytes(wl.b64_patterns.pat_buf[wl.b64_patterns.pat_off[i]:wl.b64_patterns.pat_off[i + 1]]):
               wl.patterns.n + i for i in range(wl.b64_patterns.n)}
    for a, skip in W.base64_aliases(b"ssl.logink.cn") + W.base64_aliases(b"SSL.LOGINK.CN"):   # both cases
        assert wl.pattern_indicator[aliases[a]] == wl.pattern_indicator[lits[b"ssl.logink.cn"]]
        assert wl.pattern_kind[aliases[a]] == W._mk.BASE64 and wl.pattern_skip[aliases[a]] == skip
    assert not {a for a, _ in W.base64_aliases(b"ticket:")} & set(aliases)     # 7 bytes: too short
    assert all(len(a) >= 9 for a in aliases)
