"""Export datagrams from pcap / pcapng files (offline input of ``flowaudit flows``).

dpkt reads the file containers; the link, IP and UDP headers are taken apart here with explicit
length checks, because only four fields matter (exporter address and port, collector port,
payload).  Supported link types: Ethernet (with 802.1Q / QinQ tags), raw IP, Linux cooked
captures v1 (SLL) and v2 (SLL2), BSD loopback (NULL / LOOP).  IPv4 and IPv6 (extension headers
walked).  Everything else -- non-UDP frames, IP fragments, truncated frames, unknown link
types, a damaged record (which ends the file) -- is skipped and counted, never raised; a file that
is no capture at all raises :class:`PcapError`.
"""
from __future__ import annotations

import gzip
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import GZIP_ERRORS, open_input

DLT_NULL, DLT_EN10MB, DLT_RAW, DLT_RAW_ALT, DLT_LOOP, DLT_LINUX_SLL, DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = (
    0, 1, 101, 12, 108, 113, 228, 229, 276)
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_V6_EXT = (0, 43, 60)   # hop-by-hop, routing, destination options (fragment 44 is skipped)


@dataclass
class PcapDatagrams:
    """UDP datagrams of one or more captures, in file order, as one batch."""

    buf: np.ndarray                      # uint8 payloads end to end
    offsets: np.ndarray                  # int64, n+1
    exporters: list                      # distinct exporter (IP source) addresses
    exporter_idx: np.ndarray             # int32 per datagram
    src_port: np.ndarray                 # uint16 exporter port (informational; never a template key)
    dst_port: np.ndarray                 # uint16 collector port
    ts_ns: np.ndarray                    # int64 capture time
    frame: np.ndarray                    # int64 frame index in its file (0-based)
    file_idx: np.ndarray                 # int32 index into files
    files: list
    skipped: dict = field(default_factory=dict)  # reason -> frames

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)


def _ip_udp(data: bytes, p: int):
    """(src address text, sport, dport, payload start, payload end) or a skip reason (str)."""
    n = len(data)
    if n - p < 1:
        return "truncated"
    ver = data[p] >> 4
    if ver == 4:
        if n - p < 20:
            return "truncated"
        ihl = (data[p] & 15) * 4
        total = (data[p + 2] << 8) | data[p + 3]
        if ihl < 20 or n - p < ihl:
            return "truncated"
        if data[p + 9] != 17:
            return "not_udp"
        frag = ((data[p + 6] << 8) | data[p + 7]) & 0x3FFF
        if frag:
            return "ip_fragment"
        src = "%d.%d.%d.%d" % (data[p + 12], data[p + 13], data[p + 14], data[p + 15])
        end = min(n, p + total) if total >= ihl else n
        u = p + ihl
    elif ver == 6:
        if n - p < 40:
            return "truncated"
        plen = (data[p + 4] << 8) | data[p + 5]
        nxt = data[p + 6]

        src = ipaddress.IPv6Address(data[p + 8:p + 24]).compressed
        end = min(n, p + 40 + plen)
        u = p + 40
        hops = 0
        while nxt in _V6_EXT and hops < 8:
            if end - u < 8:
                return "truncated"
            nxt, hl = data[u], (data[u + 1] + 1) * 8
            u += hl
            hops += 1
        if nxt == 44:
            return "ip_fragment"
        if nxt != 17:
            return "not_udp"
    else:
        return "not_ip"
    if end - u < 8:
        return "truncated"
    sport, dport, ulen = struct.unpack_from(">HHH", data, u)
    pend = min(end, u + ulen) if ulen >= 8 else end
    return src, sport, dport, u + 8, pend


def _l3_start(linktype: int, data: bytes):
    """Offset of the IP header in a frame, or a skip reason."""
    n = len(data)
    if linktype == DLT_EN10MB:
        if n < 14:
            return "truncated"
        et = (data[12] << 8) | data[13]
        p = 14
        while et in _ETH_VLAN:
            if n - p < 4:
                return "truncated"
            et = (data[p + 2] << 8) | data[p + 3]
            p += 4
        return p if et in (0x0800, 0x86DD) else "not_ip"
    if linktype in (DLT_RAW, DLT_RAW_ALT, DLT_IPV4, DLT_IPV6):
        return 0
    if linktype == DLT_LINUX_SLL:
        if n < 16:
            return "truncated"
        et = (data[14] << 8) | data[15]
        return 16 if et in (0x0800, 0x86DD) else "not_ip"
    if linktype == DLT_LINUX_SLL2:
        if n < 20:
            return "truncated"
        et = (data[0] << 8) | data[1]
        return 20 if et in (0x0800, 0x86DD) else "not_ip"
    if linktype in (DLT_NULL, DLT_LOOP):
        if n < 4:
            return "truncated"
        fam = struct.unpack_from(">I" if linktype == DLT_LOOP else "<I", data, 0)[0]
        if fam > 0xFFFF:  # DLT_NULL written on a host of the other byte order
            fam = struct.unpack_from(">I", data, 0)[0]
        return 4 if fam in (2, 24, 28, 30) else "not_ip"
    return "unknown_linktype"


class PcapError(ValueError):
    """A file that is not a pcap or pcapng capture (one line, for the CLI)."""


def _reader(f, path):
    import dpkt

    try:
        magic = f.read(4)
        f.seek(0)
        if magic == b"\x0a\x0d\x0d\x0a":
            return dpkt.pcapng.Reader(f)
        return dpkt.pcap.Reader(f)
    except (ValueError, struct.error, dpkt.dpkt.Error, *GZIP_ERRORS) as exc:
        raise PcapError(f"{path}: not a pcap or pcapng capture ({exc})") from None


def _frames(rd, skipped: dict):
    """The reader's (ts, frame) records; a damaged record ends the file, counted as ``corrupt_record``."""
    import dpkt

    it = iter(rd)
    while True:
        try:
            ts, frame = next(it)
        except StopIteration:
            return
        except (ValueError, struct.error, EOFError, dpkt.dpkt.Error, zlib.error, gzip.BadGzipFile):
            skipped["corrupt_record"] = skipped.get("corrupt_record", 0) + 1   # (a gzip capture cut short too)
            return
        yield ts, frame


def _ts_ns(ts) -> int:
    """Capture time in ns; -1 (unknown) when the file's timestamp does not fit int64 ns."""
    t = float(ts) * 1e9
    return int(round(t)) if 0.0 <= t < 9.2e18 else -1


def iter_udp(path: str | Path, ports: set[int] | None = None):
    """Yield ``(frame_index, ts_ns, exporter, sport, dport, payload)`` for each UDP datagram;
    skipped frames are counted in the dict yielded last as ``(None, skipped)``."""
    skipped: dict[str, int] = {}
    with open_input(path) as f:        # plain, or gzip (tcpdump -z gzip, rotated captures)
        rd = _reader(f, path)
        lt = rd.datalink()
        for i, (ts, frame) in enumerate(_frames(rd, skipped)):
            p = _l3_start(lt, frame)
            if isinstance(p, str):
                skipped[p] = skipped.get(p, 0) + 1
                continue
            r = _ip_udp(frame, p)
            if isinstance(r, str):
                skipped[r] = skipped.get(r, 0) + 1
                continue
            src, sport, dport, a, b = r
            if ports and dport not in ports:
                skipped["other_port"] = skipped.get("other_port", 0) + 1
                continue
            yield i, _ts_ns(ts), src, sport, dport, frame[a:b]
    yield None, skipped


def read_datagrams(paths, ports: set[int] | None = None) -> PcapDatagrams:
    """All UDP datagrams of ``paths`` (in order) as one batch."""
    payloads, exp_idx, sps, dps, tss, frames, fidx = [], [], [], [], [], [], []
    exps: dict[str, int] = {}
    skipped: dict[str, int] = {}
    files = [str(p) for p in paths]
    for fi, path in enumerate(files):
        for item in iter_udp(path, ports):
            if item[0] is None:
                for k, v in item[1].items():
                    skipped[k] = skipped.get(k, 0) + v
                continue
            i, ts, src, sport, dport, payload = item
            payloads.append(payload)
            exp_idx.append(exps.setdefault(src, len(exps)))
            sps.append(sport)
            dps.append(dport)
            tss.append(ts)
            frames.append(i)
            fidx.append(fi)
    lens = np.fromiter((len(x) for x in payloads), np.int64, len(payloads))
    offsets = np.zeros(len(payloads) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    joined = b"".join(payloads)
    return PcapDatagrams(
        buf=np.frombuffer(joined, np.uint8) if joined else np.zeros(0, np.uint8), offsets=offsets,
        exporters=list(exps), exporter_idx=np.asarray(exp_idx, np.int32),
        src_port=np.asarray(sps, np.uint16), dst_port=np.asarray(dps, np.uint16),
        ts_ns=np.asarray(tss, np.int64), frame=np.asarray(frames, np.int64),
        file_idx=np.asarray(fidx, np.int32), files=files, skipped=skipped)
