"""Value recognisers and check digits, shared by every format kernel.

All functions take the batch buffer and a half-open byte range ``[s, e)`` (``0 <= s``) and
never read outside it; the hottest loops read indices unsigned (``buf[np.uint64(i)]``: numba then
emits no negative-index wraparound code).  Normalised values are written into an output byte array ``out`` at ``o``.
Every kernel here that takes an array is compiled without the runtime's reference counting
(``_nrt=False``: they allocate nothing), so the format kernels' hot loops that call them pay no
atomic incref / decref per array per call.

Public functions (numba kernels; callable from other kernels and from Python):

Structural parsers (the value is the whole trimmed range):

* ``parse_container(buf, s, e, out, o) -> status``   ISO 6346, 11 bytes written (room: 16)
* ``parse_imo(buf, s, e, out, o) -> status``         IMO number, 7 digits written (room: 16)
* ``parse_lei(buf, s, e, out, o) -> (status, n)``     ISO 17442, 20 chars, mod 97-10
* ``parse_usci(buf, s, e, out, o) -> (status, n)``    China USCI (GB 32100), 18 chars, mod-31 check char
* ``parse_eori(buf, s, e, out, o) -> (status, n)``    2-letter country + 1..15 alnum (at least one digit)
* ``parse_email(buf, s, e, out, o) -> (status, n)``   lower-cased, at most 64 bytes
* ``parse_phone(buf, s, e, out, o) -> (status, n)``   ``+`` and 7..15 digits (separators dropped)
* ``parse_un_number(buf, s, e, out, o) -> (status, n)``  4 digits (optional ``UN`` prefix); 0004..3599
* ``parse_mmsi(buf, s, e, out, o) -> (status, n)``    9 digits; valid when the MID is 201..775

  For the ``(status, n)`` parsers the caller guarantees ``len(out) - o >= 64``; ``n`` is the
  number of bytes written (0 when ``status == -1``).

Free-text finders (next token of the shape in ``buf[pos:end]``, ``(start, stop)`` or ``(-1, -1)``):

* ``next_container(buf, pos, end)``  shape only (the check digit is the parser's job)
* ``next_imo(buf, pos, end)``        ``IMO`` + separators + 7 digits
* ``next_email(buf, pos, end)``      local@domain.tld
* ``next_lei(buf, pos, end)``        20 upper-case alnum, mod 97-10 must hold; IBAN look-alikes
                                     (AT/LU IBANs are 20 chars) and tokens after ``IBAN`` skipped
* ``next_usci(buf, pos, end)``       18 chars of the GB 32100 alphabet with a plausible
                                     registration authority / division code, check char must
                                     hold; 18-digit SSCCs (GS1 mod-10 check, ``GIN+BJ``) skipped

Helpers: ``iso6346_check_digit``, ``imo_check_ok``, ``lei_mod97``, ``usci_check_value``,
``iban_ok``, ``gs1_check_ok``, ``trim``, ``copy_text`` (release characters removed, output
always UTF-8: valid UTF-8 kept, anything else read as Latin-1 and transcoded).

Return convention for the ``parse_*`` functions: ``-1`` the bytes do not have the shape,
``0`` shape ok but the check fails (a mistyped value: still sensitive), ``1`` valid (or shape
ok for classes without a check).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel
from .words import HIGH, copy_bytes, load_word

# ISO 6346 letter values: A=10 and upwards, skipping multiples of 11 (11, 22, 33).
_ISO6346_LETTER = np.array(
    [10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 34,
     35, 36, 37, 38], dtype=np.int64)

CONTAINER_LEN = 11
IMO_LEN = 7


@kernel
def is_upper(c):
    return 65 <= c <= 90


@kernel
def is_digit(c):
    return 48 <= c <= 57


@kernel
def is_alnum(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@kernel
def is_space(c):
    return c == 32 or c == 9 or c == 10 or c == 13


@kernel(_nrt=False)
def iso6346_check_digit(v, o):
    """Check digit of the 10 bytes ``v[o:o+10]`` (owner code, category, serial); -1 if bad."""
    total = 0
    weight = 1
    for i in range(10):
        c = v[np.uint64(o + i)]
        if i < 4:
            if not is_upper(c):
                return -1
            x = _ISO6346_LETTER[np.uint64(c - 65)]
        else:
            if not is_digit(c):
                return -1
            x = c - 48
        total += x * weight
        weight *= 2
    return (total % 11) % 10


@kernel(_nrt=False)
def imo_check_ok(v, o):
    """IMO number check: digits 1..6 weighted 7..2, sum mod 10 equals digit 7."""
    total = 0
    for i in range(6):
        total += (v[o + i] - 48) * (7 - i)
    return total % 10 == v[o + 6] - 48


@kernel(_nrt=False)
def trim(buf, s, e):
    """Strip ASCII white space from both ends of ``buf[s:e]``."""
    while s < e and is_space(buf[np.uint64(s)]):
        s += 1
    while e > s and is_space(buf[np.uint64(e - 1)]):
        e -= 1
    return s, e


@kernel(_nrt=False)
def parse_container(buf, s, e, out, o):
    """Normalise an ISO 6346 container number in ``buf[s:e]`` into ``out[o:o+11]``.

    Accepted shapes (after trimming): ``ABCU1234565``, ``ABCU 1234565``, ``ABCU-123456-5``,
    ``ABCU 123456 5`` and lower case letters (written upper case).  Category letter U, J or Z.
    """
    s, e = trim(buf, s, e)
    n = 0
    i = s
    while i < e:
        c = buf[np.uint64(i)]
        if 97 <= c <= 122:
            c -= 32
        if c == 32 or c == 45:
            # one separator allowed after the owner code and one before the check digit
            if not (n == 4 or n == 10) or i + 1 >= e or buf[i + 1] == 32 or buf[i + 1] == 45:
                return -1
        else:
            if n >= CONTAINER_LEN:
                return -1
            if n < 4:
                if not is_upper(c):
                    return -1
            elif not is_digit(c):
                return -1
            out[np.uint64(o + n)] = c
            n += 1
        i += 1
    if n != CONTAINER_LEN:
        return -1
    cat = out[o + 3]
    if cat != 85 and cat != 74 and cat != 90:  # U J Z
        return -1
    cd = iso6346_check_digit(out, o)
    return 1 if cd == out[o + 10] - 48 else 0


@kernel(_nrt=False)
def parse_imo(buf, s, e, out, o):
    """Normalise an IMO ship number (``9118018``, ``IMO9118018``, ``IMO 9118018``) to 7 digits."""
    s, e = trim(buf, s, e)
    if e - s >= 3 and (buf[s] | 32) == 105 and (buf[s + 1] | 32) == 109 and (buf[s + 2] | 32) == 111:
        s += 3
        while s < e and (buf[s] == 32 or buf[s] == 58 or buf[s] == 46 or buf[s] == 45):
            s += 1
    if e - s != IMO_LEN:
        return -1
    for i in range(IMO_LEN):
        c = buf[s + i]
        if not is_digit(c):
            return -1
        out[o + i] = c
    return 1 if imo_check_ok(out, o) else 0


@kernel(_nrt=False)
def next_container(buf, pos, end):
    """Next container-number-shaped token in free text ``buf[pos:end]``.

    A token is ``[A-Z]{3}[UJZ]`` + optional single space + 7 digits, bounded by a
    non-alphanumeric byte (or the range ends) on both sides.  Returns ``(start, stop)`` of the
    raw token or ``(-1, -1)``.  Upper case only: free text in lower case is prose.
    """
    i = pos
    while i + CONTAINER_LEN <= end:
        if i > pos and is_alnum(buf[i - 1]):
            i += 1
            continue
        ok = True
        for k in range(4):
            if not is_upper(buf[i + k]):
                ok = False
                break
        if ok:
            cat = buf[i + 3]
            if cat != 85 and cat != 74 and cat != 90:
                ok = False
        if not ok:
            i += 1
            continue
        j = i + 4
        if j < end and buf[j] == 32:
            j += 1
        if j + 7 > end:
            i += 1
            continue
        for k in range(7):
            if not is_digit(buf[j + k]):
                ok = False
                break
        if ok and j + 7 < end and is_alnum(buf[j + 7]):
            ok = False
        if ok:
            return i, j + 7
        i += 1
    return -1, -1


@kernel(_nrt=False)
def next_imo(buf, pos, end):
    """Next ``IMO`` + optional separators + 7 digits in free text; ``(start, stop)`` or -1s."""
    i = pos
    while i + 10 <= end:
        if (buf[i] | 32) == 105 and (buf[i + 1] | 32) == 109 and (buf[i + 2] | 32) == 111 and (
                i == pos or not is_alnum(buf[i - 1])):
            j = i + 3
            while j < end and j < i + 6 and (buf[j] == 32 or buf[j] == 58 or buf[j] == 46 or buf[j] == 45):
                j += 1
            if j + 7 <= end:
                ok = True
                for k in range(7):
                    if not is_digit(buf[j + k]):
                        ok = False
                        break
                if ok and (j + 7 == end or not is_alnum(buf[j + 7])):
                    return i, j + 7
        i += 1
    return -1, -1


# =========================================================================================
# LEI, USCI, EORI, e-mail, phone, UN number, MMSI

LEI_LEN = 20
USCI_LEN = 18
VALUE_ROOM = 64  # the (status, n) parsers need this much room in ``out``

# GB 32100-2015 alphabet: digits and upper-case letters without I, O, S, V, Z (31 symbols)
_USCI_VAL = np.full(128, -1, dtype=np.int64)
for _i, _c in enumerate("0123456789ABCDEFGHJKLMNPQRTUWXY"):
    _USCI_VAL[ord(_c)] = _i
_USCI_W = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)


@kernel
def _up(c):
    return c - 32 if 97 <= c <= 122 else c


@kernel(_nrt=False)
def lei_mod97(v, o, n):
    """ISO 7064 mod 97-10 remainder of ``v[o:o+n]`` (digits as is, A=10 .. Z=35); -1 if not alnum."""
    r = 0
    for i in range(n):
        c = v[o + i]
        if is_digit(c):
            r = (r * 10 + (c - 48)) % 97
        elif is_upper(c):
            r = (r * 100 + (c - 55)) % 97
        else:
            return -1
    return r


@kernel(_nrt=False)
def iban_ok(v, o, n):
    """IBAN check (ISO 13616): the first 4 characters moved to the end, mod 97 == 1."""
    if n < 15 or n > 34 or not (is_upper(v[o]) and is_upper(v[o + 1]) and is_digit(v[o + 2]) and is_digit(v[o + 3])):
        return False
    r = 0
    for k in range(n):
        c = v[o + (k + 4) % n]
        if is_digit(c):
            r = (r * 10 + (c - 48)) % 97
        elif is_upper(c):
            r = (r * 100 + (c - 55)) % 97
        else:
            return False
    return r == 1


@kernel(_nrt=False)
def gs1_check_ok(v, o, n):
    """GS1 mod-10 check digit (SSCC, GTIN): weights 3,1,3... from the right, excluding the check."""
    total = 0
    for i in range(n - 1):
        c = v[o + i]
        if not is_digit(c):
            return False
        w = 3 if (n - 1 - i) % 2 == 1 else 1
        total += (c - 48) * w
    last = v[o + n - 1]
    return is_digit(last) and (10 - total % 10) % 10 == last - 48


@kernel(_nrt=False)
def usci_check_value(v, o):
    """Expected value (0..30) of the check character of the 17 symbols ``v[o:o+17]``; -1 if bad."""
    total = 0
    for i in range(17):
        c = v[o + i]
        if c >= 128 or _USCI_VAL[c] < 0:
            return -1
        total += _USCI_VAL[c] * _USCI_W[i]
    x = 31 - total % 31
    return 0 if x == 31 else x


@kernel(_nrt=False)
def parse_lei(buf, s, e, out, o):
    """ISO 17442 LEI: 18 alnum + 2 check digits, upper-cased; status 1 when mod 97-10 == 1."""
    s, e = trim(buf, s, e)
    if e - s != LEI_LEN:
        return -1, 0
    for i in range(LEI_LEN):
        c = _up(buf[s + i])
        if not (is_upper(c) or is_digit(c)):
            return -1, 0
        out[o + i] = c
    if not (is_digit(out[o + 18]) and is_digit(out[o + 19])):
        return -1, 0
    return (1 if lei_mod97(out, o, LEI_LEN) == 1 else 0), LEI_LEN


@kernel(_nrt=False)
def parse_usci(buf, s, e, out, o):
    """China Unified Social Credit Identifier: 18 symbols of the GB 32100 alphabet, symbols 3..8
    (administrative division) digits; status 1 when the mod-31 check character is right."""
    s, e = trim(buf, s, e)
    if e - s != USCI_LEN:
        return -1, 0
    for i in range(USCI_LEN):
        c = _up(buf[s + i])
        if c >= 128 or _USCI_VAL[c] < 0:
            return -1, 0
        if 2 <= i <= 7 and not is_digit(c):
            return -1, 0
        out[o + i] = c
    cv = usci_check_value(out, o)
    return (1 if cv == _USCI_VAL[out[o + 17]] else 0), USCI_LEN


@kernel(_nrt=False)
def parse_eori(buf, s, e, out, o):
    """EORI: ISO country code (2 letters) + 1..15 alnum with at least one digit (upper-cased)."""
    s, e = trim(buf, s, e)
    n = e - s
    if n < 3 or n > 17:
        return -1, 0
    digits = 0
    for i in range(n):
        c = _up(buf[s + i])
        if i < 2:
            if not is_upper(c):
                return -1, 0
        elif is_digit(c):
            digits += 1
        elif not is_upper(c):
            return -1, 0
        out[o + i] = c
    if digits == 0:
        return -1, 0
    return 1, n


@kernel
def _email_local(c):
    return is_alnum(c) or c == 46 or c == 95 or c == 37 or c == 43 or c == 45


@kernel
def _email_domain(c):
    return is_alnum(c) or c == 46 or c == 45


@kernel(_nrt=False)
def email_shape(buf, s, e):
    """``buf[s:e]`` is ``local@label(.label)+`` with an alphabetic TLD of 2+ letters."""
    at = -1
    for i in range(s, e):
        if buf[i] == 64:
            if at >= 0:
                return False
            at = i
    if at <= s or at >= e - 1 or e - s > VALUE_ROOM:
        return False
    if buf[s] == 46 or buf[at - 1] == 46:
        return False
    for i in range(s, at):
        if not _email_local(buf[i]):
            return False
    # domain: labels of [A-Za-z0-9-], not starting/ending with '-', separated by single dots
    dots = 0
    lab = 0
    last_dot = -1
    for i in range(at + 1, e):
        c = buf[i]
        if c == 46:
            if lab == 0 or buf[i - 1] == 45:
                return False
            dots += 1
            lab = 0
            last_dot = i
        elif is_alnum(c) or c == 45:
            if lab == 0 and c == 45:
                return False
            lab += 1
        else:
            return False
    if dots == 0 or lab < 2:
        return False
    for i in range(last_dot + 1, e):
        c = buf[i] | 32
        if not (97 <= c <= 122):
            return False
    return True


@kernel(_nrt=False)
def parse_email(buf, s, e, out, o):
    """E-mail address (trimmed, optional ``mailto:``), written lower-case; at most 64 bytes."""
    s, e = trim(buf, s, e)
    if e - s >= 7 and (buf[s] | 32) == 109 and (buf[s + 1] | 32) == 97 and (buf[s + 2] | 32) == 105 and (
            buf[s + 3] | 32) == 108 and (buf[s + 4] | 32) == 116 and (buf[s + 5] | 32) == 111 and buf[s + 6] == 58:
        s += 7
    if not email_shape(buf, s, e):
        return -1, 0
    for i in range(e - s):
        c = buf[s + i]
        out[o + i] = c + 32 if 65 <= c <= 90 else c
    return 1, e - s


@kernel(_nrt=False)
def parse_phone(buf, s, e, out, o):
    """Telephone / fax number: optional leading ``+``, 7..15 digits, separators `` -./()``
    dropped.  Written as ``+`` and digits (or digits only)."""
    s, e = trim(buf, s, e)
    if s >= e:
        return -1, 0
    n = 0
    nd = 0
    i = s
    if buf[i] == 43:
        out[o] = 43
        n = 1
        i += 1
    while i < e:
        c = buf[i]
        if is_digit(c):
            if nd >= 15:
                return -1, 0
            out[o + n] = c
            n += 1
            nd += 1
        elif not (c == 32 or c == 45 or c == 46 or c == 47 or c == 40 or c == 41):
            return -1, 0
        i += 1
    if nd < 7:
        return -1, 0
    return 1, n


@kernel(_nrt=False)
def parse_un_number(buf, s, e, out, o):
    """UN dangerous-goods number: optional ``UN`` (and a blank or hyphen) + 4 digits.
    Status 1 in 0004..3599 (the UN Model Regulations range), 0 otherwise."""
    s, e = trim(buf, s, e)
    if e - s >= 2 and (buf[s] | 32) == 117 and (buf[s + 1] | 32) == 110:
        s += 2
        if s < e and (buf[s] == 32 or buf[s] == 45):
            s += 1
    if e - s != 4:
        return -1, 0
    x = 0
    for i in range(4):
        c = buf[s + i]
        if not is_digit(c):
            return -1, 0
        out[o + i] = c
        x = x * 10 + (c - 48)
    return (1 if 4 <= x <= 3599 else 0), 4


@kernel(_nrt=False)
def parse_mmsi(buf, s, e, out, o):
    """MMSI: 9 digits; status 1 when the maritime identification digits (MID) are 201..775."""
    s, e = trim(buf, s, e)
    if e - s != 9:
        return -1, 0
    for i in range(9):
        c = buf[s + i]
        if not is_digit(c):
            return -1, 0
        out[o + i] = c
    mid = (out[o] - 48) * 100 + (out[o + 1] - 48) * 10 + (out[o + 2] - 48)
    return (1 if 201 <= mid <= 775 else 0), 9


@kernel(_nrt=False)
def next_email(buf, pos, end):
    """Next e-mail address in free text: around each ``@`` the longest local part / domain,
    dots at the edges dropped; ``(start, stop)`` or ``(-1, -1)``."""
    i = pos
    while i < end:
        if buf[i] != 64:
            i += 1
            continue
        a = i
        while a > pos and a > i - 64 and _email_local(buf[a - 1]):
            a -= 1
        while a < i and buf[a] == 46:
            a += 1
        b = i + 1
        while b < end and b < i + 256 and _email_domain(buf[b]):
            b += 1
        while b > i + 1 and (buf[b - 1] == 46 or buf[b - 1] == 45):
            b -= 1
        if a < i and email_shape(buf, a, b):
            return a, b
        i += 1
    return -1, -1


@kernel(_nrt=False)
def _token_end(buf, i, end):
    j = i
    while j < end and is_alnum(buf[j]):
        j += 1
    return j


@kernel(_nrt=False)
def next_lei(buf, pos, end):
    """Next LEI in free text: a token of exactly 20 upper-case letters / digits (bounded by
    non-alphanumerics) ending in 2 digits whose mod 97-10 holds.  Skipped look-alikes: IBANs
    (``CC`` + 2 digits + 16, IBAN check ok) and a token right after the word ``IBAN``."""
    i = pos
    while i < end:
        if not is_alnum(buf[i]) or (i > pos and is_alnum(buf[i - 1])):
            i += 1
            continue
        j = _token_end(buf, i, end)
        if j - i == LEI_LEN and is_digit(buf[j - 1]) and is_digit(buf[j - 2]) and lei_mod97(buf, i, LEI_LEN) == 1:
            ctx = False
            k = i - 1
            while k >= pos and k > i - 4 and not is_alnum(buf[k]):
                k -= 1
            if k - 3 >= pos and (buf[k - 3] | 32) == 105 and (buf[k - 2] | 32) == 98 and (buf[k - 1] | 32) == 97 and (
                    buf[k] | 32) == 110:
                ctx = True
            if not ctx and not iban_ok(buf, i, LEI_LEN):
                return i, j
        i = j
    return -1, -1


@kernel(_nrt=False)
def usci_token_ok(buf, i):
    """Is the 18-byte token at ``buf[i]`` a USCI (GB 32100): registration authority 1-9/A/N/Y,
    type 1-9, division code 6 digits starting 10..82, check character right; an all-digit token
    that passes the GS1 mod-10 check (an SSCC) is not."""
    c0 = buf[i]
    c1 = buf[i + 1]
    if not ((is_digit(c0) and c0 != 48) or c0 == 65 or c0 == 78 or c0 == 89) or not is_digit(c1) or c1 == 48:
        return False
    for k in range(2, 8):
        if not is_digit(buf[i + k]):
            return False
    prov = (buf[i + 2] - 48) * 10 + (buf[i + 3] - 48)
    if not 10 <= prov <= 82:
        return False
    cv = usci_check_value(buf, i)
    last = buf[i + 17]
    if cv < 0 or last >= 128 or _USCI_VAL[last] != cv:
        return False
    for k in range(USCI_LEN):
        if not is_digit(buf[i + k]):
            return True
    return not gs1_check_ok(buf, i, USCI_LEN)


@kernel(_nrt=False)
def next_usci(buf, pos, end):
    """Next China USCI in free text: a token of exactly 18 symbols of the GB 32100 alphabet,
    registration authority 1-9/A/N/Y, type 1-9, division code 6 digits starting 10..82, check
    character right.  An all-digit token that passes the GS1 mod-10 check (an SSCC) is skipped."""
    i = pos
    while i < end:
        if not is_alnum(buf[i]) or (i > pos and is_alnum(buf[i - 1])):
            i += 1
            continue
        j = _token_end(buf, i, end)
        if j - i == USCI_LEN and usci_token_ok(buf, i):
            return i, j
        i = j
    return -1, -1


@kernel(_nrt=False)
def utf8_len_at(buf, i, e):
    """Length of the valid UTF-8 sequence at ``buf[i]`` (1..4), or 0 when invalid / truncated."""
    c = buf[i]
    if c < 0x80:
        return 1
    if 0xC2 <= c <= 0xDF:
        n = 2
    elif 0xE0 <= c <= 0xEF:
        n = 3
    elif 0xF0 <= c <= 0xF4:
        n = 4
    else:
        return 0
    if i + n > e:
        return 0
    c1 = buf[i + 1]
    if c1 < 0x80 or c1 > 0xBF:
        return 0
    if n == 3:
        if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
            return 0
    elif n == 4:
        if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return 0
    for k in range(2, n):
        ck = buf[i + k]
        if ck < 0x80 or ck > 0xBF:
            return 0
    return n


@kernel(_nrt=False)
def utf8_ok(buf, s, e):
    i = s
    while i < e:
        if buf[np.uint64(i)] < 0x80:
            i += 1
            continue
        n = utf8_len_at(buf, i, e)
        if n == 0:
            return False
        i += n
    return True


@kernel(_nrt=False)
def copy_text(buf, s, e, rel, out, o, cap):
    """Copy ``buf[s:e]`` without release characters (``rel`` -1: none) to ``out[o:]`` as UTF-8.

    Valid UTF-8 is copied as is; a value that is not valid UTF-8 is read as Latin-1 (UNOC) and
    transcoded.  At most ``cap`` bytes are written, never splitting a character.  Returns the
    number of bytes written.  Without release characters, a value that is all ASCII (most: names,
    addresses, descriptions), found eight bytes a step, is one ``memcpy``.
    """
    if rel < 0 and s < e:
        i = s
        while i + 8 <= e and (load_word(buf, i) & HIGH) == np.uint64(0):
            i += 8
        while i < e and buf[np.uint64(i)] < 0x80:
            i += 1
        if i >= e:
            n = min(e - s, cap)
            copy_bytes(out, o, buf, s, n)
            return n
    latin = not utf8_ok(buf, s, e)
    n = 0
    i = s
    while i < e:
        c = buf[np.uint64(i)]
        if c == rel and i + 1 < e:
            i += 1
            c = buf[np.uint64(i)]
        if c < 0x80:
            if n + 1 > cap:
                break
            out[np.uint64(o + n)] = c
            n += 1
            i += 1
        elif latin:
            if n + 2 > cap:
                break
            out[o + n] = 0xC0 | (c >> 6)
            out[o + n + 1] = 0x80 | (c & 0x3F)
            n += 2
            i += 1
        else:
            k = utf8_len_at(buf, i, e)
            if k == 0:
                k = 1
            if n + k > cap:
                break
            for t in range(k):
                out[o + n + t] = buf[i + t]
            n += k
            i += k
    return n
