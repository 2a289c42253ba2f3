"""kernels/split.py: the interchange splitter against a slow Python reference, and against the
ground truth of generated archives (which bytes belong to which interchange is known by
construction)."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from flowaudit.kernels import split as S

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------- the slow reference

WS = set(b" \t\r\n")
ALNUM = set(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
BOM = b"\xef\xbb\xbf"


def ref_header(d: bytes, i: int):
    """'UNA' / 'UNB' / 'ISA' when an interchange header starts at d[i], else None."""
    if len(d) - i < 4:
        return None
    tag = d[i:i + 3]
    if tag == b"UNA":
        return "UNA" if len(d) - i >= 9 else None
    if tag in (b"UNB", b"ISA") and d[i + 3] not in ALNUM and d[i + 3] not in WS:
        return tag.decode()
    return None


def ref_header_here(d: bytes, i: int):
    if d.startswith(BOM, i):
        j = i + 3
        while j < len(d) and (d[j] in WS or d[j] == 0):
            j += 1
        return ref_header(d, j), j
    return ref_header(d, i), i


def ref_bad_sep(c: int) -> bool:
    return c in ALNUM or c in WS or c == 0


def ref_edifact_seps(d: bytes, hp: int, kind: str):
    """(terminator, release or None, first segment)."""
    if kind == "UNA":
        comp, elem, _dec, rel, _res, term = d[hp + 3:hp + 9]
        rel = None if rel == 32 else rel
        seps = [comp, elem, term] + ([rel] if rel is not None else [])
        if not any(ref_bad_sep(c) for c in seps) and len(set(seps)) == len(seps):
            return term, rel, hp + 9
        return ord("'"), ord("?"), hp + 9
    if d[hp + 3] == 0x1D:
        return 0x1C, None, hp
    return ord("'"), ord("?"), hp


def ref_x12_seps(d: bytes, hp: int):
    """(terminator, newline mode)."""
    elem = d[hp + 3]
    isa = d[hp:hp + 512]
    stop = min([k for k in (isa.find(b"\r"), isa.find(b"\n")) if k >= 0], default=len(isa))
    seps = [k for k in range(3, stop) if isa[k] == elem]
    if len(seps) < 16 or hp + seps[15] + 2 >= len(d):
        return ord("~"), False
    comp, term = d[hp + seps[15] + 1], d[hp + seps[15] + 2]
    if term in (10, 13):
        return term, True
    if ref_bad_sep(term) or term in (elem, comp):
        return ord("~"), False
    return term, False


def ref_segment_end(d: bytes, i: int, term: int, rel, nl: bool):
    """('term', index after the terminator) | ('broken', index of the header after a line
    break) | ('eof', len(d)) for the segment starting at d[i]."""
    j = i
    while j < len(d):
        c = d[j]
        if rel is not None and c == rel:
            j += 2
        elif c == term or (nl and c in (10, 13)):
            return "term", j + 1
        elif c in (10, 13) and ref_header_here(d, j + 1)[0] is not None:
            return "broken", j + 1
        else:
            j += 1
    return "eof", len(d)


def ref_split(d: bytes) -> list[tuple[int, int, int]]:
    """[(start, stop, kind)] of the pieces of d, following the rules of kernels/split.py."""
    if not d:
        return []
    p = 0
    while p < len(d):
        if d[p] in WS or d[p] == 0:
            p += 1
        elif d.startswith(BOM, p):
            p += 3
        else:
            break
    head = d[p:p + 4]
    if not (head[:3] in (b"UNA", b"UNB", b"ISA") or head == b"UNH+" or head[:3] in (b"GS*", b"ST*")):
        return [(0, len(d), S.K_WHOLE)]
    pieces = []
    pos, prev_term = 0, None
    while pos < len(d):
        q = pos
        while q < len(d) and (d[q] in WS or d[q] == 0):
            q += 1
        if q == len(d):
            pieces.append((pos, len(d), S.K_OTHER))
            break
        kind, hp = ref_header_here(d, q)
        if kind is None:
            seplike = WS | {0, ord("'"), ord("~"), 0x1C} | ({prev_term} if prev_term is not None else set())
            i = q + 1
            while i < len(d) and not (d[i - 1] in seplike and ref_header_here(d, i)[0] is not None):
                i += 1
            pieces.append((pos, i, S.K_OTHER))
            pos = i
            continue
        x12 = kind == "ISA"
        if x12:
            (term, nl), rel, i = ref_x12_seps(d, hp), None, hp
        else:
            (term, rel, i), nl = ref_edifact_seps(d, hp, kind), False
        nseg, closed, cut = 0, False, len(d)
        while True:
            while i < len(d) and (d[i] in WS or d[i] == 0):
                i += 1
            if i == len(d):
                cut = i
                break
            h2 = ref_header_here(d, i)[0]
            if h2 is not None and (nseg > 0 or h2 == "UNA"):
                cut = i
                break
            trailer = d[i:i + 3] == (b"IEA" if x12 else b"UNZ") and i + 3 < len(d) and d[i + 3] not in ALNUM
            how, j = ref_segment_end(d, i, term, rel, nl)
            if how != "term":
                cut = j
                closed = how == "eof" and trailer and nl
                break
            i, nseg = j, nseg + 1
            if trailer:
                closed = True
                while i < len(d) and (d[i] in WS or d[i] == 0):
                    i += 1
                cut = i
                break
        kinds = (S.K_X12, S.K_X12_OPEN) if x12 else (S.K_EDIFACT, S.K_EDIFACT_OPEN)
        pieces.append((pos, cut, kinds[0] if closed else kinds[1]))
        prev_term = term
        pos = cut
    return pieces


def kernel_split(d: bytes) -> list[tuple[int, int, int]]:
    cuts, kinds = S.split_interchanges(np.frombuffer(d, np.uint8), 0, len(d))
    c = cuts.tolist()
    assert c[0] == 0 and c[-1] == len(d) and len(c) == len(kinds) + 1
    assert all(a < b for a, b in zip(c, c[1:])), "pieces are never empty"
    return [(c[k], c[k + 1], int(kinds[k])) for k in range(len(kinds))]


# ----------------------------------------------------------------------- generated archives

PUNCT = b":+.?'*~|^!#@%&/;=>"
TEXT = b"ABCXYZ0189 -,/abcUNBISAUNZ"   # letters that spell tags too, inside segments


@st.composite
def edifact(draw, closed=True):
    """An EDIFACT interchange: bytes, with separators drawn from PUNCT (or the defaults, or
    syntax level B control characters)."""
    style = draw(st.sampled_from(["default", "una", "una-norel", "level-b"]))
    nlsep = draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    una = b""
    if style.startswith("una"):
        comp, elem, dec, rel, term = draw(st.permutations(list(PUNCT)))[:5]
        if style == "una-norel":
            rel = 32
        una = b"UNA" + bytes([comp, elem, dec, rel, 32, term]) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    elif style == "level-b":
        comp, elem, term, rel = 0x1F, 0x1D, 0x1C, 32
    else:
        comp, elem, term, rel = ord(":"), ord("+"), ord("'"), ord("?")
    specials = [comp, elem, term] + ([rel] if rel != 32 else [])

    def text():
        out = b""
        for tok in draw(st.lists(st.one_of(st.sampled_from(list(TEXT)), st.sampled_from(specials)),
                                 max_size=12)):
            if tok in specials and tok not in (comp, elem):
                if rel == 32:
                    continue                        # no release character: a terminator cannot be data
                out += bytes([rel, tok])             # released terminator / release character
            else:
                out += bytes([tok])
        return out

    E, C, T = bytes([elem]), bytes([comp]), bytes([term])
    segs = [b"UNB" + E + b"UNOA" + C + b"2" + E + b"S" + E + b"R" + E + b"260301" + C + b"1200" + E + b"7"]
    for _ in range(draw(st.integers(0, 4))):
        segs.append(draw(st.sampled_from([b"UNH", b"FTX", b"EQD", b"NAD", b"UNT"])) + E + text())
    if closed:
        segs.append(b"UNZ" + E + b"1" + E + b"7")
    bom = BOM if draw(st.integers(0, 9)) == 0 else b""
    return bom + una + b"".join(s + T + nlsep for s in segs)


def isa(elem: bytes, comp: bytes, term: bytes) -> bytes:
    fields = [b"00", b" " * 10, b"00", b" " * 10, b"ZZ", b"SENDER".ljust(15), b"ZZ", b"RECEIVER".ljust(15),
              b"260301", b"1200", b"U", b"00401", b"000000007", b"0", b"P"]
    return b"ISA" + elem + elem.join(fields) + elem + comp + term


@st.composite
def x12(draw, closed=True):
    nl = draw(st.booleans())
    if nl:
        elem, comp = draw(st.permutations(list(PUNCT)))[:2]
        term = draw(st.sampled_from([b"\n", b"\r\n"]))
        after = b""
    else:
        elem, comp, t = draw(st.permutations(list(PUNCT)))[:3]
        term = bytes([t])
        after = draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    E = bytes([elem])
    segs = [b"GS" + E + b"QO" + E + b"S" + E + b"R", b"ST" + E + b"315" + E + b"0001"]
    for _ in range(draw(st.integers(0, 4))):
        data = bytes(draw(st.lists(st.sampled_from(list(TEXT) + [elem, comp]), max_size=12)))
        segs.append(b"N1" + E + data)
    segs += [b"SE" + E + b"3" + E + b"0001", b"GE" + E + b"1" + E + b"1"]
    if closed:
        segs.append(b"IEA" + E + b"1" + E + b"000000007")
    bom = BOM if draw(st.integers(0, 9)) == 0 else b""
    return bom + isa(E, bytes([comp]), term) + after + b"".join(s + term + after for s in segs)


GARBAGE = st.builds(lambda a, b: bytes([a]) + bytes(b), st.sampled_from(list(b"{<#xyz0189-")),
                    st.lists(st.sampled_from(list(b"abcxyz0189 -,{}<>")), max_size=20))
SEP = st.sampled_from([b"", b"\n", b"\r\n", b"\n\n", b"  \r\n", b"\x00\x00\n"])


@st.composite
def archive(draw):
    """(file bytes, expected [(start, stop, kind or None)]): interchanges (closed or not, EDIFACT
    or X12), garbage between them, a truncated last one; each piece = its item + the white space
    after it."""
    items = []
    for k in range(draw(st.integers(1, 8))):
        what = draw(st.sampled_from(["edifact", "x12", "edifact-open", "x12-open", "garbage"]))
        if what == "garbage" and (k == 0 or items[-1][2] not in (S.K_EDIFACT, S.K_X12)):
            # a file that starts with garbage is not split; an interchange without its trailer
            # runs on to the next header (so does garbage): garbage only after a closed one
            what = "edifact"
        if what == "garbage":
            items.append((draw(GARBAGE), draw(SEP.filter(bool)), S.K_OTHER))
        elif what.startswith("edifact"):
            items.append((draw(edifact(closed=what == "edifact")), draw(SEP),
                          S.K_EDIFACT if what == "edifact" else S.K_EDIFACT_OPEN))
        else:
            items.append((draw(x12(closed=what == "x12")), draw(SEP),
                          S.K_X12 if what == "x12" else S.K_X12_OPEN))
    if draw(st.booleans()):
        last = draw(st.one_of(edifact(), x12()))
        items.append((last[:draw(st.integers(12, len(last)))], b"", None))
    lead = draw(st.sampled_from([b"", b"\n", b" \r\n"]))
    expected, pos, data = [], 0, lead
    for k, (body, sep, kind) in enumerate(items):
        stop = len(data) + len(body) + len(sep)
        expected.append((pos, stop, kind))
        data += body + sep
        pos = stop
    return data, expected


@SETTINGS
@given(archive())
def test_generated_archives_split_at_every_interchange(case):
    data, expected = case
    got = kernel_split(data)
    assert [(a, b) for a, b, _k in got] == [(a, b) for a, b, _k in expected]
    assert [k for _a, _b, k in got] == [k if k is not None else g for (_a, _b, k), (_x, _y, g) in zip(expected, got)]
    assert got == ref_split(data)


NOISE = st.lists(st.one_of(st.sampled_from([b"UNA:+.? '", b"UNA*+.? ~", b"UNB+", b"UNB\x1d", b"ISA*", b"UNZ+1'",
                                            b"IEA*1~", b"'", b"~", b"?", b"\n", b"\r\n", b"\x1c", b"\x00",
                                            b"UNH+", b"ST*", BOM, b" ", b"x"]),
                           st.binary(max_size=4)), max_size=40).map(b"".join)


@SETTINGS
@given(st.one_of(NOISE, st.binary(max_size=200), archive().map(lambda c: c[0])))
def test_kernel_equals_reference_on_any_bytes(data):
    assert kernel_split(data) == ref_split(data)


@SETTINGS
@given(archive(), st.integers(0, 40), st.integers(0, 40))
def test_sub_ranges_stay_inside_their_bounds(case, a, b):
    """``start`` / ``end`` select a range of a larger buffer: cuts never leave it."""
    data = case[0]
    s, e = min(a, len(data)), max(min(a, len(data)), len(data) - b)
    cuts, kinds = S.split_interchanges(np.frombuffer(data, np.uint8), s, e)
    assert cuts[0] == s and cuts[-1] == e and len(cuts) == len(kinds) + 1
    assert [(x + s, y + s, k) for x, y, k in ref_split(data[s:e])] == \
        [(int(cuts[i]), int(cuts[i + 1]), int(kinds[i])) for i in range(len(kinds))]


def test_out_of_range_bounds_are_clamped():
    data = np.frombuffer(b"UNB+UNOA:2+S+R+260301:1200+7'UNZ+1+7'", np.uint8)
    cuts, kinds = S.split_interchanges(data, -5, 10_000)
    assert cuts.tolist() == [0, data.shape[0]] and kinds.tolist() == [S.K_EDIFACT]
    cuts, kinds = S.split_interchanges(data, 20, 3)
    assert cuts.tolist() == [20] and kinds.size == 0


def test_documented_cases():
    una = b"UNA:+.? '\r\nUNB+UNOA:2+S+R+260301:1200+7'\r\nUNH+1+X'\r\nUNT+2+1'\r\nUNZ+1+7'\r\n"
    # UNA then a line break then UNB: one interchange, not two
    assert kernel_split(una * 3) == [(0, len(una), 1), (len(una), 2 * len(una), 1), (2 * len(una), 3 * len(una), 1)]
    # a released terminator followed by UNB+ is data
    rel = b"UNB+UNOA:2+S+R+1:1+7'FTX+AAA+++A?'UNB+X'UNZ+1+7'"
    assert kernel_split(rel) == [(0, len(rel), S.K_EDIFACT)]
    # ... but an even run of release characters ends the segment
    even = b"UNB+UNOA:2+S+R+1:1+7'FTX+AAA+++A??'UNB+X'UNZ+1+7'"
    assert [k for _a, _b, k in kernel_split(even)] == [S.K_EDIFACT_OPEN, S.K_EDIFACT]
    # UNA with '~' as terminator: a stray ' is data
    tilde = b"UNA:+.? ~UNB+UNOA:2+S+R+1:1+7~FTX+AAA+++it's~UNZ+1+7~"
    assert kernel_split(tilde + tilde) == [(0, len(tilde), 1), (len(tilde), 2 * len(tilde), 1)]
    # an unterminated segment: the line break before the next header still cuts
    broken = b"UNB+UNOA:2+S+R+1:1+7'UNZ+1+7\n"
    good = b"UNB+UNOA:2+S+R+1:1+8'UNZ+1+8'"
    assert kernel_split(broken + good) == [(0, len(broken), S.K_EDIFACT_OPEN), (len(broken), len(broken + good), 1)]
    # garbage between interchanges is its own piece, the unterminated tail too
    junk = b"some junk\n"
    tail = b"ISA*00*x"
    got = kernel_split(good + b"\n" + junk + good + tail)
    assert [k for _a, _b, k in got] == [S.K_EDIFACT, S.K_OTHER, S.K_EDIFACT, S.K_X12_OPEN]
    # not EDI: one piece
    doc = b'{"a": "UNB+UNOA\\nUNB+"}\nUNB+UNOA'
    assert kernel_split(doc) == [(0, len(doc), S.K_WHOLE)]


def test_large_archive_equals_reference():
    """Thousands of interchanges in one buffer: the kernel equals the reference, piece by piece
    (the kernel's single left-to-right pass is what makes it linear; the bench times it)."""
    one = b"UNA:+.? '\nUNB+UNOA:2+S+R+260301:1200+%d'\nUNH+1+CODECO'\nFTX+AAA+++A?'UNB+B'\nUNT+3+1'\nUNZ+1+%d'\r\n"
    x = isa(b"*", b">", b"~") + b"\r\nGS*QO*S*R~ST*315*0001~SE*2*0001~GE*1*1~IEA*1*000000007~\n"
    data = b"".join((one % (k, k)) if k % 3 else x for k in range(3000)) + b"UNB+UNOA:2+S+R+1:1+9'UNH+1"
    got = kernel_split(data)
    assert len(got) == 3001
    assert got == ref_split(data)
    assert [k for _a, _b, k in got[:3]] == [S.K_X12, S.K_EDIFACT, S.K_EDIFACT] and got[-1][2] == S.K_EDIFACT_OPEN


# ----------------------------------------------------------------- a big file, a step at a time

def stepped_split(d: bytes, step: int, margin: int) -> list[tuple[int, int, int]]:
    """flowaudit.scan.interchange_steps end to end, as (start, end, kind) pieces."""
    from flowaudit.scan import interchange_steps
    out, last = [], 0
    for cuts, kinds in interchange_steps(np.frombuffer(d, np.uint8), step, margin):
        c = cuts.tolist()
        assert c[0] == last and len(c) == len(kinds) + 1, "steps follow one another"
        out.extend((c[k], c[k + 1], int(kinds[k])) for k in range(len(kinds)))
        last = c[-1]
    assert last == len(d)
    return out


# the least margin the module doc's argument allows: an ISA's look-ahead and a header's bytes
TIGHT = S.ISA_SCAN_LIMIT + 16


@SETTINGS
@given(st.lists(archive().map(lambda c: c[0]) | NOISE, min_size=1, max_size=12).map(b"".join),
       st.integers(1, 4000))
def test_steps_equal_one_pass(data, extra):
    """A file split a step at a time gives exactly the one-pass pieces, whatever the step (steps
    just over the margin included, so that nearly every step ends inside an interchange)."""
    assert stepped_split(data, TIGHT + extra, TIGHT) == kernel_split(data) if data else True


def test_steps_on_a_long_archive():
    """Thousands of interchanges with UNA + line breaks, X12, garbage and a BOM between them, in
    steps of a few kB: the same pieces as one pass; an interchange longer than the step grows it."""
    one = b"UNA:+.? '\nUNB+UNOA:2+S+R+260301:1200+%d'\nUNH+1+CODECO'\nFTX+AAA+++A?'UNB+B'\nUNT+3+1'\nUNZ+1+%d'\r\n"
    x = isa(b"*", b">", b"~") + b"\r\nGS*QO*S*R~ST*315*0001~SE*2*0001~GE*1*1~IEA*1*000000007~\n"
    big = b"UNB+UNOA:2+S+R+1:1+5'" + b"FTX+AAA+++" + b"x" * 20_000 + b"'UNZ+1+5'"
    parts = [(one % (k, k)) if k % 3 else x for k in range(2000)]
    parts[700:700] = [b"junk between\n", BOM + b"  \n", big]
    data = b"".join(parts) + b"UNB+UNOA:2+S+R+1:1+9'UNH+1"
    want = kernel_split(data)
    assert len(want) >= 2003
    for step in (TIGHT + 1, 3000, 65536):
        assert stepped_split(data, step, TIGHT) == want
    assert stepped_split(data, 8192, 4096) == want
    doc = b'{"a": "UNB+UNOA\\nUNB+"}\n' * 400       # not EDI: one piece, as in one pass
    assert stepped_split(doc, 2000, 1000) == kernel_split(doc) == [(0, len(doc), S.K_WHOLE)]
