"""kernels/values.py: ISO 6346 / IMO check digits and the value recognisers vs Python references."""
from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings, strategies as st

from flowaudit.kernels import values as v

SETTINGS = settings(max_examples=200, deadline=None)


# ---------------------------------------------------------------- references (slow, obvious)
def ref_letter_value(ch: str) -> int:
    """ISO 6346: A=10, then upwards skipping multiples of 11."""
    val = 10
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if val % 11 == 0:
            val += 1
        if c == ch:
            return val
        val += 1
    raise ValueError(ch)


def ref_iso6346(code10: str) -> int:
    total = 0
    for i, ch in enumerate(code10):
        x = ref_letter_value(ch) if i < 4 else int(ch)
        total += x * 2 ** i
    return total % 11 % 10


def ref_imo_ok(d7: str) -> bool:
    return sum(int(d7[i]) * (7 - i) for i in range(6)) % 10 == int(d7[6])


_CONT = re.compile(rb"[A-Za-z]{4}[ -]?[0-9]{6}[ -]?[0-9]")
_IMO = re.compile(rb"(?:[Ii][Mm][Oo][ :.\-]*)?([0-9]{7})")


def ref_parse_container(raw: bytes):
    t = raw.strip(b" \t\r\n")
    if not _CONT.fullmatch(t):
        return -1, None
    val = t.replace(b" ", b"").replace(b"-", b"").upper()
    if val[3:4] not in (b"U", b"J", b"Z"):
        return -1, None
    return (1 if ref_iso6346(val[:10].decode()) == val[10] - 48 else 0), val


def ref_parse_imo(raw: bytes):
    m = _IMO.fullmatch(raw.strip(b" \t\r\n"))
    if not m:
        return -1, None
    d = m.group(1)
    return (1 if ref_imo_ok(d.decode()) else 0), d


_NEXT_CONT = re.compile(rb"(?<![A-Za-z0-9])[A-Z]{3}[UJZ] ?[0-9]{7}(?![A-Za-z0-9])")
_NEXT_IMO = re.compile(rb"(?<![A-Za-z0-9])[Ii][Mm][Oo][ :.\-]{0,3}[0-9]{7}(?![A-Za-z0-9])")


def ref_next(rx, data: bytes, pos: int, end: int):
    m = rx.search(data[pos:end])
    return (-1, -1) if m is None else (pos + m.start(), pos + m.end())


def with_check(code10: str) -> str:
    return code10 + str(ref_iso6346(code10))


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8).copy()


# ---------------------------------------------------------------- check digits
def test_known_values():
    for good in ["SUDU1234569", "TCNU6849731", "MRSU3602965", "CSQU3054383", "HASU4316170"]:
        assert ref_iso6346(good[:10]) == int(good[10])
        assert v.iso6346_check_digit(arr(good.encode()), 0) == int(good[10])
    for imo in ["9118018", "9354351", "9283186", "9644990"]:
        assert ref_imo_ok(imo) and v.imo_check_ok(arr(imo.encode()), 0)
    assert ref_letter_value("A") == 10 and ref_letter_value("K") == 21 and ref_letter_value("L") == 23
    assert ref_letter_value("V") == 34 and ref_letter_value("Z") == 38


owner = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
category = st.sampled_from("UJZ")
serial = st.text(alphabet="0123456789", min_size=6, max_size=6)


@SETTINGS
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=4, max_size=4), serial)
def test_iso6346_check_digit_matches_reference(letters, digits):
    code = letters + digits
    assert v.iso6346_check_digit(arr(code.encode()), 0) == ref_iso6346(code)


@SETTINGS
@given(st.binary(min_size=10, max_size=10))
def test_iso6346_check_digit_rejects_bad_shape(raw):
    s = raw.decode("latin-1")
    ok = all("A" <= c <= "Z" for c in s[:4]) and all("0" <= c <= "9" for c in s[4:])
    got = v.iso6346_check_digit(arr(raw), 0)
    assert got == (ref_iso6346(s) if ok else -1)


@SETTINGS
@given(st.text(alphabet="0123456789", min_size=7, max_size=7))
def test_imo_check_matches_reference(d):
    assert bool(v.imo_check_ok(arr(d.encode()), 0)) == ref_imo_ok(d)


# ---------------------------------------------------------------- parse_container / parse_imo
container_like = st.one_of(
    st.builds(lambda o, c, s, sep1, sep2, low, ws: (ws + (o + c + sep1 + s + sep2 + str(ref_iso6346(o + c + s)))
                                                     + ws),
              owner, category, serial, st.sampled_from(["", " ", "-"]), st.sampled_from(["", " ", "-"]),
              st.booleans(), st.sampled_from(["", " ", "\t", "\r\n"])).map(lambda t: t.encode()),
    st.binary(max_size=16),
    st.text(alphabet="ABCJUXZ0123456789 -", max_size=14).map(str.encode),
)


@SETTINGS
@given(container_like, st.integers(0, 1))
def test_parse_container_matches_reference(raw, flip):
    if flip and raw:
        raw = raw.lower()
    data = arr(b"##" + raw + b"##")
    out = np.zeros(32, np.uint8)
    got = v.parse_container(data, 2, 2 + len(raw), out, 3)
    want, val = ref_parse_container(raw)
    assert got == want
    if want >= 0:
        assert bytes(out[3:14]) == val


@SETTINGS
@given(owner, category, serial)
def test_parse_container_valid_and_mistyped(o, c, s):
    good = with_check(o + c + s)
    out = np.zeros(16, np.uint8)
    assert v.parse_container(arr(good.encode()), 0, 11, out, 0) == 1
    bad = good[:10] + str((int(good[10]) + 1) % 10)
    assert v.parse_container(arr(bad.encode()), 0, 11, out, 0) == 0


@SETTINGS
@given(st.one_of(
    st.text(alphabet="0123456789", min_size=6, max_size=8),
    st.builds(lambda p, sep, d: p + sep + d, st.sampled_from(["IMO", "imo", "Imo", "IM"]),
              st.sampled_from(["", " ", ":", ". ", "-", " :.-"]), st.text(alphabet="0123456789", min_size=7, max_size=7)),
    st.text(alphabet="IMO0123456789 :.-x", max_size=14),
).map(str.encode))
def test_parse_imo_matches_reference(raw):
    data = arr(b"#" + raw + b"#")
    out = np.zeros(32, np.uint8)
    got = v.parse_imo(data, 1, 1 + len(raw), out, 0)
    want, val = ref_parse_imo(raw)
    assert got == want
    if want >= 0:
        assert bytes(out[:7]) == val


# ---------------------------------------------------------------- free-text scanners
text_piece = st.one_of(
    st.builds(lambda o, c, s, sp: o + c + sp + s + str(ref_iso6346(o + c + s)), owner, category, serial,
              st.sampled_from(["", " "])),
    st.builds(lambda d, sep: "IMO" + sep + d, st.text(alphabet="0123456789", min_size=7, max_size=7),
              st.sampled_from(["", " ", ":", "  "])),
    st.text(alphabet="ABCUXZ0123456789 :-.,/imo", max_size=12),
)
free_text = st.lists(text_piece, max_size=6).map(lambda parts: "".join(parts).encode())


@SETTINGS
@given(free_text, st.integers(0, 4), st.integers(0, 4))
def test_next_container_matches_reference(text, cut_a, cut_b):
    data = arr(text)
    pos, end = min(cut_a, len(text)), max(min(cut_a, len(text)), len(text) - cut_b)
    while True:
        got = v.next_container(data, pos, end)
        assert tuple(got) == ref_next(_NEXT_CONT, text, pos, end)
        if got[0] < 0:
            break
        pos = got[1]


@SETTINGS
@given(free_text, st.integers(0, 4), st.integers(0, 4))
def test_next_imo_matches_reference(text, cut_a, cut_b):
    data = arr(text)
    pos, end = min(cut_a, len(text)), max(min(cut_a, len(text)), len(text) - cut_b)
    while True:
        got = v.next_imo(data, pos, end)
        assert tuple(got) == ref_next(_NEXT_IMO, text, pos, end)
        if got[0] < 0:
            break
        pos = got[1]


# ---------------------------------------------------------------- LEI, USCI, EORI, e-mail, phone, UN, MMSI
_USCI_ALPHA = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def ref_lei_ok(s: str) -> bool:
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def ref_usci_check(s17: str) -> str:
    total = sum(_USCI_ALPHA.index(c) * pow(3, i, 31) for i, c in enumerate(s17))
    return _USCI_ALPHA[(31 - total % 31) % 31]


def lei_with_check(s18: str) -> str:
    return s18 + "%02d" % (98 - int("".join(str(int(c, 36)) for c in s18 + "00")) % 97)


def ref_parse(kind: str, raw: bytes):
    t = raw.strip(b" \t\r\n").decode("latin-1")
    if kind == "lei":
        u = t.upper()
        if not re.fullmatch(r"[A-Z0-9]{18}[0-9]{2}", u):
            return -1, None
        return (1 if ref_lei_ok(u) else 0), u
    if kind == "usci":
        u = t.upper()
        if len(u) != 18 or any(c not in _USCI_ALPHA for c in u) or not u[2:8].isdigit():
            return -1, None
        return (1 if ref_usci_check(u[:17]) == u[17] else 0), u
    if kind == "eori":
        u = t.upper()
        if not re.fullmatch(r"[A-Z]{2}[A-Z0-9]{1,15}", u) or not re.search(r"[0-9]", u[2:]):
            return -1, None
        return 1, u
    if kind == "phone":
        if not re.fullmatch(r"\+?[0-9 \-./()]*", t) or t == "":
            return -1, None
        d = re.sub(r"[^0-9]", "", t)
        if not 7 <= len(d) <= 15:
            return -1, None
        return 1, ("+" if t.startswith("+") else "") + d
    if kind == "un":
        m = re.fullmatch(r"(?:[Uu][Nn][ \-]?)?([0-9]{4})", t)
        if not m:
            return -1, None
        return (1 if 4 <= int(m.group(1)) <= 3599 else 0), m.group(1)
    if kind == "mmsi":
        if not re.fullmatch(r"[0-9]{9}", t):
            return -1, None
        return (1 if 201 <= int(t[:3]) <= 775 else 0), t
    raise ValueError(kind)


PARSERS = {"lei": v.parse_lei, "usci": v.parse_usci, "eori": v.parse_eori, "phone": v.parse_phone,
           "un": v.parse_un_number, "mmsi": v.parse_mmsi}

alnum18 = st.text(alphabet="ABCDEFGHJKLMNPQRTUWXY0123456789", min_size=18, max_size=18)
value_like = st.one_of(
    alnum18.map(lei_with_check),
    alnum18.map(lambda s: s[:2] + "123456" + s[8:17]).map(lambda s: s + ref_usci_check(s)),
    st.text(alphabet="ABZ0123456789 +-./()uUnN", max_size=22),
    st.builds(lambda p, d: p + d, st.sampled_from(["", "UN", "UN ", "un-", "GB", "+47 "]),
              st.text(alphabet="0123456789", min_size=3, max_size=16)),
    st.binary(max_size=24).map(lambda b: b.decode("latin-1")),
)


@SETTINGS
@given(value_like, st.sampled_from(sorted(PARSERS)), st.booleans())
def test_new_parsers_match_reference(text, kind, lower):
    raw = (text.lower() if lower else text).encode("latin-1")
    data = arr(b"#" + raw + b"#")
    out = np.zeros(80, np.uint8)
    got, n = PARSERS[kind](data, 1, 1 + len(raw), out, 0)
    want, val = ref_parse(kind, raw)
    assert got == want, (kind, raw)
    if want >= 0:
        assert bytes(out[:n]).decode() == val


def test_known_lei_usci_and_lookalikes():
    out = np.zeros(80, np.uint8)
    for lei in ["5493001KJTIIGC8Y1R12", "HWUPKR0MPOU8FGXBT394", "529900T8BM49AURSDO55"]:
        assert v.parse_lei(arr(lei.encode()), 0, 20, out, 0) == (1, 20)
    assert v.parse_usci(arr(b"91350100M000100Y43"), 0, 18, out, 0) == (1, 18)
    text = (b"IBAN AT611904300234573201; LEI 5493001KJTIIGC8Y1R12, SSCC 006141411234567890 "
            b"USCI 91350100M000100Y43 mail Eva.HW@bring.com. railcar UTLX207444")
    d = arr(text)
    assert tuple(v.next_lei(d, 0, len(text))) == (text.index(b"5493"), text.index(b"5493") + 20)
    a, b = v.next_usci(d, 0, len(text))
    assert text[a:b] == b"91350100M000100Y43"
    a, b = v.next_email(d, 0, len(text))
    assert text[a:b] == b"Eva.HW@bring.com"
    st_, n = v.parse_email(d, a, b, out, 0)
    assert st_ == 1 and bytes(out[:n]) == b"eva.hw@bring.com"
    # an IBAN is never an LEI, an SSCC (GS1 check) never a USCI
    iban = b"AT611904300234573201"
    assert v.iban_ok(arr(iban), 0, 20) and v.next_lei(arr(iban), 0, 20) == (-1, -1)
    assert v.next_usci(arr(b"006141411234567890"), 0, 18) == (-1, -1)


_EMAIL = re.compile(rb"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}")


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(["a.b@ex-ample.com", "x@y.io", "@", ".", " ", "ops@", "foo.bar",
                                            "A_B+c@sub.domain.co.uk", "-", "@@x.de"]),
                          st.text(alphabet="ab.@-_ ", max_size=6)), max_size=8).map("".join))
def test_next_email_finds_valid_addresses(text):
    data = text.encode()
    d = arr(data)
    pos = 0
    while True:
        a, b = v.next_email(d, pos, len(data))
        if a < 0:
            break
        assert _EMAIL.fullmatch(data[a:b]) and data.count(b"@", a, b) == 1, data[a:b]
        out = np.zeros(80, np.uint8)
        assert v.parse_email(d, a, b, out, 0)[0] == 1
        pos = b


def ref_copy_text(raw: bytes, cap: int) -> bytes:
    """copy_text without release characters: UTF-8 as is, else Latin-1 transcoded, cut at ``cap``
    bytes before a character that would not fit."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    out = b""
    for ch in text:
        b = ch.encode("utf-8")
        if len(out) + len(b) > cap:
            break
        out += b
    return out


@SETTINGS
@given(st.binary(max_size=6), st.one_of(st.binary(max_size=60), st.text(max_size=40).map(str.encode),
                                       st.text("ABC xyz-/.,0", max_size=60).map(str.encode)),
       st.binary(max_size=9), st.integers(0, 70))
def test_copy_text_without_release_characters_equals_reference(pre, raw, post, cap):
    """The value inside a buffer (bytes before and after it), ASCII ones (one memcpy after an
    eight-byte look) and others, every cap: the reference's bytes."""
    out = np.full(cap + 16, 0xAA, np.uint8)
    n = v.copy_text(arr(pre + raw + post), len(pre), len(pre) + len(raw), -1, out, 3, cap)
    assert bytes(out[3:3 + n]) == ref_copy_text(raw, cap)
    assert (out[:3] == 0xAA).all() and (out[3 + n:] == 0xAA).all()     # nothing written outside


@SETTINGS
@given(st.binary(max_size=40))
def test_copy_text_always_utf8(raw):
    out = np.zeros(200, np.uint8)
    n = v.copy_text(arr(raw + b"#"), 0, len(raw), 63, out, 0, 200)
    text = bytes(out[:n]).decode("utf-8")          # never raises
    try:
        want = raw.decode("utf-8")
    except UnicodeDecodeError:
        want = raw.decode("latin-1")
    assert text == re.sub(r"\?(.)", r"\1", want, flags=re.S) or "?" in want
