"""Deterministic synthetic port traffic with ground-truth labels.

``generate(seed, n)`` yields :class:`SynthMessage` objects shaped like the real port messages
in ``shared/corpus/messages`` (UN/EDIFACT, ANSI X12, WCO/UBL XML, DCSA JSON) with every
sensitive value it places labelled (:class:`Label`): data class, normalised value, check-digit
validity, whether it is a deliberate look-alike, and where it sits.

Determinism: everything derives from ``random.Random`` seeded with ``seed`` (no clock, no
uuid).  The same ``(seed, formats, bad_fraction)`` gives byte-identical messages, and the first
``m`` messages of ``generate(seed, n)`` do not depend on ``n``.

Data classes used in labels::

    container_number  ISO 6346, value = 11 chars upper case (split/spaced forms joined).
                      valid = check digit ok.  lookalike=True for booking references shaped
                      like a container number and for railcar marks (UTLX207444: valid=None)
    imo_number        7 digits, valid = IMO mod-10 check
    booking_reference, bill_of_lading, seal_number, un_number, vessel_name, call_sign,
    party_name, contact_person, party_address (street line), email, phone, tax_id, eori

Nothing else placed in a message is shaped like a container number (4 letters + 7 digits) or
like ``IMO`` + 7 digits; stowage positions (``LOC+147+0100406``) are 7 digits on purpose: they
are not in an IMO position.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import random
import unicodedata
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import orjson

__all__ = ["Label", "SynthMessage", "generate", "write_files", "TOPICS", "FORMATS",
           "QUARANTINE_REASONS", "iso6346_check_digit", "imo_valid", "Exposure", "ExposureScenario",
           "exposure_scenario"]

TOPICS = {"edifact": "port.edifact", "x12": "port.x12", "xml": "port.xml", "json": "port.json"}
FORMATS = ("edifact", "x12", "xml", "json")
QUARANTINE_REASONS = ("empty_value", "unterminated_interchange", "malformed_json",
                      "malformed_xml", "invalid_utf8")
_EXT = {"edifact": "edi", "x12": "x12", "xml": "xml", "json": "json"}


@dataclass(frozen=True)
class Label:
    data_class: str
    value: str
    valid: bool | None
    lookalike: bool
    location: str


@dataclass(frozen=True)
class SynthMessage:
    format: str
    msg_type: str
    key: bytes
    value: bytes
    labels: tuple[Label, ...]
    expect_quarantine: str | None = None
    egress: tuple[str, ...] = ()   # platforms this message reaches (watchlist ground truth)


# --------------------------------------------------------------------------- check digits

_ISO_LETTER = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                       (10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
                        29, 30, 31, 32, 34, 35, 36, 37, 38)))


def iso6346_check_digit(s10: str) -> int:
    """Check digit of owner code + category + 6-digit serial (10 chars)."""
    total = 0
    for i, c in enumerate(s10):
        total += (_ISO_LETTER[c] if i < 4 else ord(c) - 48) << i
    return total % 11 % 10


def imo_valid(imo: str) -> bool:
    return sum((ord(imo[i]) - 48) * (7 - i) for i in range(6)) % 10 == ord(imo[6]) - 48


# --------------------------------------------------------------------------- static pools
# All names below are invented (word lists), never taken from the corpus.

_CARRIERS = (  # SCAC, SMDG line code, name
    ("MAEU", "MSK", "MAERSK A/S"), ("MEDU", "MSC", "MEDITERRANEAN SHIPPING COMPANY"),
    ("CMDU", "CMA", "CMA CGM"), ("HLCU", "HLC", "HAPAG-LLOYD AG"),
    ("ONEY", "ONE", "OCEAN NETWORK EXPRESS"), ("COSU", "COS", "COSCO SHIPPING LINES"),
    ("EGLV", "EMC", "EVERGREEN MARINE CORP"), ("OOLU", "OOL", "ORIENT OVERSEAS CONTAINER LINE"),
    ("YMLU", "YML", "YANG MING MARINE TRANSPORT"), ("ZIMU", "ZIM", "ZIM INTEGRATED SHIPPING"),
    ("HDMU", "HMM", "HMM CO LTD"),
)
_OWNER = ("MSCU", "MSKU", "MAEU", "MRKU", "CMAU", "CSNU", "TGHU", "TCNU", "TEMU", "SUDU",
          "HLXU", "HLBU", "OOLU", "OOCU", "CSLU", "EGHU", "EISU", "EMCU", "ONEU", "NYKU",
          "YMLU", "YMMU", "HDMU", "ZIMU", "SEGU", "TRHU", "TRLU", "BMOU", "CAIU", "FCIU",
          "GESU", "TCLU", "KOSU", "OTPU", "RFCU", "APZU", "HASU", "GLDU", "DRYU", "BSIU",
          "FSCU", "CXDU", "TTNU", "INKU", "UETU", "BEAU", "DFSU", "SZLU", "WHSU", "CRSU",
          "TGBU", "XINU", "CBHU", "FFAU", "KKFU", "MOFU", "PONU", "SKLU", "TLLU", "GCXU",
          "DCLZ", "TRAZ", "XTRJ", "GENJ")
_RAILCAR = ("UTLX", "TILX", "GATX", "SHPX", "PROX", "ACFX", "DBUX", "CTCX", "TTGX", "NATX")
_ISO_TYPES = ("22G1", "22G1", "42G1", "45G1", "45G1", "45G1", "45R1", "22R1", "42R1", "22T6",
              "22U1", "45U1", "22P1", "L5G1")
_REEFER = ("45R1", "22R1", "42R1")
_PORTS = (  # UN/LOCODE, name, country
    ("NLRTM", "ROTTERDAM", "NL"), ("DEHAM", "HAMBURG", "DE"), ("DEBRV", "BREMERHAVEN", "DE"),
    ("BEANR", "ANTWERP", "BE"), ("GBFXT", "FELIXSTOWE", "GB"), ("FRLEH", "LE HAVRE", "FR"),
    ("ESVLC", "VALENCIA", "ES"), ("ESALG", "ALGECIRAS", "ES"), ("ITGOA", "GENOA", "IT"),
    ("GRPIR", "PIRAEUS", "GR"), ("PLGDN", "GDANSK", "PL"), ("SGSIN", "SINGAPORE", "SG"),
    ("CNSHA", "SHANGHAI", "CN"), ("CNNGB", "NINGBO", "CN"), ("KRPUS", "BUSAN", "KR"),
    ("JPTYO", "TOKYO", "JP"), ("MYPKG", "PORT KLANG", "MY"), ("AEJEA", "JEBEL ALI", "AE"),
    ("INNSA", "NHAVA SHEVA", "IN"), ("USNYC", "NEW YORK", "US"), ("USSAV", "SAVANNAH", "US"),
    ("USLAX", "LOS ANGELES", "US"), ("USLGB", "LONG BEACH", "US"), ("USHOU", "HOUSTON", "US"),
    ("BRSSZ", "SANTOS", "BR"), ("CRMOB", "MOIN", "CR"), ("PAMIT", "MANZANILLO", "PA"),
    ("MAPTM", "TANGER MED", "MA"), ("ZADUR", "DURBAN", "ZA"), ("AUMEL", "MELBOURNE", "AU"),
)
_TERMINALS = ("ECTDELTA", "RWGMV2", "APMTMVII", "EUROGATEHH", "CTAHH", "CTBHH", "NTB01",
              "PSAANTW", "MPETANTW", "DPWLGW", "CSPVLC", "PSAGOA", "DPWJEA", "APMTMOB")
_RAMPS = ("BNSF MEMPHIS RAMP", "UP ICTF RAMP", "CSX NORTH BALTIMORE", "NS RUTHERFORD",
          "BNSF LOGISTICS PARK", "UP GLOBAL IV")
_VESSEL_A = ("NORDIC", "ATLANTIC", "PACIFIC", "BALTIC", "AURORA", "STELLA", "CAPE", "MARE",
             "OCEAN", "EVER", "CSCL", "MSC", "MAERSK", "CMA CGM", "SEA", "NORTHERN", "GOLDEN",
             "SANTA", "MONTE", "CAP SAN", "HOLSTEN", "ELBE", "POLAR", "SILVER")
_VESSEL_B = ("HORIZON", "PIONEER", "LIBERTY", "SPIRIT", "GRACE", "VOYAGER", "ARIES", "ORION",
             "VEGA", "LYRA", "TITAN", "EXPRESS", "BRIDGE", "STAR", "TRADER", "FORTUNE",
             "HARMONY", "MERIDIAN", "CORAL", "FALCON", "ALTAIR", "RIGEL", "CASSIOPEIA")
_CALLSIGN_PFX = ("9V", "V7", "D5", "9H", "A8", "5L", "DH", "PD", "3E", "H3", "VR", "9HA", "C6")
_FLAGS = ("SG", "LR", "MH", "PA", "MT", "DE", "NL", "HK", "DK", "PT", "BS", "CY")
_CO_A = ("NORDHAFEN", "ELBUFER", "WESERKAI", "RHEINTAL", "ALSTERBLICK", "ATLAS", "MERIDIAN",
         "HORIZONTE", "SÃO JOÃO", "MÜLLER", "BJØRNSTAD", "FORÊT", "GÜNTHER", "CONDOR",
         "PELICAN", "O'BRIEN", "KAPPA", "SÜDSEE", "LUMIÈRE", "ÅSGÅRD", "CORAÇÃO", "VIKING",
         "BLUE HARBOUR", "TRES RÍOS", "GREENLEAF", "SUNRISE", "IRONBRIDGE", "KESTREL",
         "MAPLE", "LOTUS", "JADE DRAGON", "SAHARA", "ANDES", "ÉTOILE", "HAVNEGÅRD",
         "SMITH + SONS", "FIELD: AND CO", "BAKER & PARTNERS", "DUNMORE", "VALLEJO")
_CO_B = ("LOGISTIK GMBH", "SPEDITION GMBH & CO KG", "FREIGHT LTD", "TRADING CO LTD",
         "IMPORT EXPORT SA", "SHIPPING BV", "FORWARDING INC", "TRANSPORTES LTDA", "SARL",
         "AGENCIES PTE LTD", "HANDELS AG", "SUPPLY CHAIN LLC", "MARITIME AS", "S.P.A.",
         "FOODS INC", "CHEMICALS NV", "TEXTILES LTD", "MOTORS CORP")
_FIRST = ("Anna", "Jens", "Maria", "João", "Léa", "Peter", "Sofia", "Ahmed", "Wei", "Kenji",
          "Olga", "Lucas", "Emma", "Mateo", "Fatima", "Nils", "Chloé", "Søren", "Ines",
          "Tomasz", "Priya", "Kwame", "Hanna", "Diego", "Yuki", "Björn", "Zoë", "Rafael")
_LAST = ("Hansen", "Schmidt", "Müller", "Silva", "Dubois", "Rossi", "Kowalski", "Nguyen",
         "Tanaka", "Okafor", "Janssen", "García", "O'Connor", "Lehtonen", "Petersen",
         "Fernández", "Novak", "Andersson", "Bianchi", "Moreau", "Kaya", "Singh", "Ødegaard")
_STREETS = ("Hafenstraße", "Kaiweg", "Quai de la Seine", "Rua do Porto", "Harbour Road",
            "Dock Street", "Via del Molo", "Calle del Muelle", "Industrieweg", "Am Kanal",
            "Stationsplein", "Avenida Marítima", "Pier Lane", "Container Way", "Strandvejen")
_CITIES = (("HAMBURG", "20457", "DE"), ("BREMEN", "28195", "DE"), ("ROTTERDAM", "3011 AA", "NL"),
           ("ANTWERPEN", "2030", "BE"), ("LE HAVRE", "76600", "FR"), ("SANTOS", "11010-000", "BR"),
           ("VALENCIA", "46024", "ES"), ("GENOVA", "16126", "IT"), ("FELIXSTOWE", "IP11 3SY", "GB"),
           ("SINGAPORE", "099253", "SG"), ("SHANGHAI", "200080", "CN"), ("SAVANNAH", "31401", "US"),
           ("NEWARK", "07114", "US"), ("GDANSK", "80-001", "PL"), ("AARHUS", "8000", "DK"),
           ("MUMBAI", "400001", "IN"), ("DURBAN", "4001", "ZA"), ("LIMON", "70101", "CR"))
_PHONE_CC = {"DE": "49", "NL": "31", "BE": "32", "FR": "33", "BR": "55", "ES": "34", "IT": "39",
             "GB": "44", "SG": "65", "CN": "86", "US": "1", "PL": "48", "DK": "45", "IN": "91",
             "ZA": "27", "CR": "506"}
_TLDS = ("com", "de", "nl", "be", "fr", "com.br", "es", "it", "co.uk", "sg", "cn", "dk", "net")
_GOODS = (  # description, HS code, DG (class, UN, packing group) or None
    ("FROZEN CHICKEN PARTS", "020714", None), ("FRESH BANANAS", "080390", None),
    ("AUTO PARTS: BRAKE DISCS", "870830", None), ("PLASTICS: ARTICLES", "392690", None),
    ("CHILDREN'S TOYS", "950300", None), ("COTTON T-SHIRTS", "610910", None),
    ("MACHINERY PARTS + SPARES", "848790", None), ("WINE IN BOTTLES", "220421", None),
    ("FURNITURE, FLAT PACKED", "940360", None), ("COFFEE BEANS, GREEN", "090111", None),
    ("TRUCK TIRES", "401120", None), ("STEEL COILS", "720839", None),
    ("PAINT", "320890", ("3", "1263", "III")), ("LITHIUM ION BATTERIES", "850760", ("9", "3480", "")),
    ("SODIUM HYDROXIDE SOLUTION", "281512", ("8", "1824", "II")),
    ("FLAMMABLE SOLID, ORGANIC, N.O.S.", "380893", ("4.1", "1325", "II")),
    ("AMMONIUM NITRATE FERTILIZER", "310230", ("5.1", "2067", "III")),
    ("PETROLEUM CRUDE OIL", "270900", ("3", "1267", "I")),
    ("VEHICLE, FLAMMABLE LIQUID POWERED", "870323", ("9", "3166", "")),
    ("ETHANOL SOLUTION", "220710", ("3", "1170", "II")),
)

_EDI_ESC = str.maketrans({"?": "??", "'": "?'", "+": "?+", ":": "?:"})
_XML_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE = _dt.datetime(2026, 3, 1, 6, 0, 0)
_P10 = tuple(10 ** k for k in range(16))
_L2 = tuple(a + b for a in _UPPER for b in _UPPER)
_ACTIVE = 256  # shipments in flight at any time


def _ascii(s: str) -> str:
    s = s.replace("ß", "SS").replace("ø", "o").replace("Ø", "O").replace("æ", "ae").replace("Æ", "AE")
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")


def _x12clean(s: str) -> str:
    return _ascii(s).upper().replace("*", " ").replace("~", " ").replace(">", " ").replace("&", "AND")


def _L(cls: str, value: str, loc: str, valid: bool | None = None, look: bool = False) -> tuple:
    return (cls, value, valid, look, loc)


class _Vessel:
    __slots__ = ("name", "imo", "bad_imo", "callsign", "flag")


class _Party:
    __slots__ = ("name", "uname", "street", "ustreet", "city", "postcode", "country",
                 "person", "uperson", "email", "phone", "phone_compact", "tax_id", "eori", "code")


class _Cont:
    __slots__ = ("value", "valid", "type", "seal", "weight", "temp", "lookalike")


class _Shipment:
    __slots__ = ("carrier", "booking", "bk_look", "bk_valid", "bl", "vessel", "voyage", "pol",
                 "pod", "shipper", "consignee", "forwarder", "notify", "conts", "goods")


class _Gen:
    def __init__(self, seed: int, formats: tuple[str, ...], bad_fraction: float):
        for f in formats:
            if f not in TOPICS:
                raise ValueError(f"unknown format {f!r}")
        if not formats:
            raise ValueError("no formats")
        self.rng = random.Random(seed)
        self.prng = random.Random(f"flowaudit-synth-pools-{seed}")
        self.formats = tuple(formats)
        self.bad_fraction = float(bad_fraction)
        self.t = 0  # seconds since _BASE
        self.seq = 0
        self._lab: dict[tuple, Label] = {}
        self.r = self.rng.random
        self._esc: dict[str, str] = {}
        self.bits = self.rng.getrandbits
        self._build_pools()
        self.active = [self.new_shipment() for _ in range(_ACTIVE)]
        w = {"edifact": 0.34, "x12": 0.24, "xml": 0.16, "json": 0.26}
        tot = sum(w[f] for f in self.formats)
        acc, cum = 0.0, []
        for f in self.formats:
            acc += w[f] / tot
            cum.append((acc, f))
        cum[-1] = (1.01, cum[-1][1])
        self.fcum = cum
        self.builders = {"edifact": self.edifact, "x12": self.x12, "xml": self.xml,
                         "json": self.json}

    # ------------------------------------------------------------------ helpers
    def ri(self, n: int) -> int:
        return int(self.r() * n)

    def ch(self, seq):
        return seq[int(self.r() * len(seq))]

    def digits(self, k: int) -> str:
        return str(self.bits(50) % _P10[k]).zfill(k)

    def letters(self, k: int) -> str:
        if k == 2:
            return _L2[int(self.r() * 676)]
        r = self.r
        return "".join(_UPPER[int(r() * 26)] for _ in range(k))

    def labels(self, raw: list) -> tuple[Label, ...]:
        """Raw label tuples (data_class, value, valid, lookalike, location) -> cached Labels."""
        cache = self._lab
        if len(cache) > 300_000:
            cache.clear()
        get = cache.get
        mk = self._mk_label
        return tuple([get(t) or mk(t) for t in raw])

    def _mk_label(self, t: tuple) -> Label:
        lab = self._lab[t] = Label(*t)
        return lab

    def now(self):
        self.t += 5 + self.ri(90)
        return _BASE + _dt.timedelta(seconds=self.t)

    # ------------------------------------------------------------------ pools
    def _build_pools(self):
        p = self.prng
        self.vessels = []
        seen = set()
        while len(self.vessels) < 240:
            v = _Vessel()
            v.name = f"{p.choice(_VESSEL_A)} {p.choice(_VESSEL_B)}"
            if v.name in seen:
                v.name += f" {p.choice(('I', 'II', 'III', 'IV', 'V'))}"
            seen.add(v.name)
            six = str(p.choice((9, 9, 9, 8)) * 100000 + p.randrange(100000))
            cd = sum(int(six[i]) * (7 - i) for i in range(6)) % 10
            v.imo = six + str(cd)
            v.bad_imo = six + str((cd + p.randrange(1, 10)) % 10)
            v.callsign = p.choice(_CALLSIGN_PFX) + "".join(
                p.choice("ABCDEFGHJKLMNPRSTUVWXYZ23456789") for _ in range(3))
            v.flag = p.choice(_FLAGS)
            self.vessels.append(v)
        self.parties = []
        for i in range(360):
            q = _Party()
            a, b = p.choice(_CO_A), p.choice(_CO_B)
            q.uname = f"{a} {b}"
            q.name = _ascii(q.uname).upper()
            st = p.choice(_STREETS)
            no = str(p.randrange(1, 240))
            q.ustreet = f"{st} {no}"
            q.street = _ascii(st).upper() + " " + no
            q.city, q.postcode, q.country = p.choice(_CITIES)
            fn, ln = p.choice(_FIRST), p.choice(_LAST)
            q.uperson = f"{fn} {ln}"
            q.person = _ascii(q.uperson).upper()
            slug = "".join(c for c in _ascii(a).lower() if c.isalnum())
            user = "".join(c for c in _ascii(fn).lower() if c.isalnum()) + p.choice(
                (".", "_", "")) + "".join(c for c in _ascii(ln).lower() if c.isalnum())
            if p.random() < 0.2:
                user = p.choice(("export", "import", "bookings", "docs", "ops", "customs"))
            q.email = f"{user}@{slug}-{p.choice(('logistics', 'group', 'trade', 'shipping'))}.{p.choice(_TLDS)}"
            cc = _PHONE_CC[q.country]
            area = str(p.randrange(10, 99))
            num = str(p.randrange(10 ** 5, 10 ** 8))
            q.phone = f"+{cc} {area} {num}"
            q.phone_compact = f"+{cc}{area}{num}"
            q.tax_id = str(p.randrange(10 ** 8, 10 ** 9)) + str(p.randrange(10, 99))
            q.eori = q.country + str(p.randrange(10 ** 11, 10 ** 12)) + ("" if p.random() < 0.7 else "000")
            q.code = "".join(p.choice(_UPPER) for _ in range(3)) + str(p.randrange(100, 999)) if p.random() < 0.5 else str(p.randrange(10 ** 8, 10 ** 9))
            self.parties.append(q)

    def container(self) -> _Cont:
        r = self.rng.random
        c = _Cont()
        owner = _OWNER[int(r() * len(_OWNER))]
        ten = owner + self.digits(6)
        cd = iso6346_check_digit(ten)
        if r() < 0.02:
            cd = (cd + 1 + int(r() * 9)) % 10
            c.valid = False
        else:
            c.valid = True
        c.value = ten + str(cd)
        c.type = _ISO_TYPES[int(r() * len(_ISO_TYPES))]
        c.temp = None
        if c.type in _REEFER:
            c.temp = self.ch(("-18.0", "-20.0", "2.0", "13.3", "13.6", "7.5", "0.0", "-1.5"))
        k = int(r() * 3)
        c.seal = (self.digits(6), self.letters(2) + self.digits(6), self.letters(1) + self.digits(8))[k]
        c.weight = 8000 + int(r() * 22000)
        c.lookalike = False
        return c

    def booking(self):
        """(value, lookalike, check-digit validity of the look-alike)."""
        r = self.rng.random()
        if r < 0.12:  # shaped exactly like a container number: 4 letters ending in U + 7 digits
            v = self.letters(3) + "U" + self.digits(7)
            return v, True, iso6346_check_digit(v[:10]) == int(v[10])
        if r < 0.40:
            return self.digits(9), False, None
        if r < 0.60:
            return f"{self.ri(10)}{self.letters(3)}{self.digits(6)}", False, None
        if r < 0.80:
            return self.letters(3) + self.digits(8), False, None
        return f"{self.digits(2)}{self.letters(2)}{self.digits(6)}", False, None

    def bill(self, scac: str, smdg: str) -> str:
        r = self.rng.random()
        if r < 0.35:
            return scac + self.digits(9)
        if r < 0.65:
            return scac + self.letters(2) + self.digits(6)
        if r < 0.85:
            return f"{smdg}{self.digits(3)}{self.letters(3)}{self.digits(6)}"
        return self.digits(10)

    def shipment(self) -> _Shipment:
        """A shipment from the active set (a shipment shows up in many messages), or a new one."""
        r = self.r
        if r() < 0.1:
            s = self.new_shipment()
            self.active[int(r() * _ACTIVE)] = s
            return s
        return self.active[int(r() * _ACTIVE)]

    def new_shipment(self) -> _Shipment:
        s = _Shipment()
        s.carrier = self.ch(_CARRIERS)
        s.booking, s.bk_look, s.bk_valid = self.booking()
        s.bl = self.bill(s.carrier[0], s.carrier[1])
        s.vessel = self.ch(self.vessels)
        s.voyage = f"{self.digits(3)}{self.ch('NSEW')}"
        s.pol = self.ch(_PORTS)
        s.pod = self.ch(_PORTS)
        while s.pod is s.pol:
            s.pod = self.ch(_PORTS)
        parties = self.parties
        r = self.r
        n = len(parties)
        s.shipper, s.consignee, s.forwarder, s.notify = (parties[int(r() * n)] for _ in range(4))
        k = 1 + (int(r() * 3) if r() < 0.8 else int(r() * 8))
        s.conts = [self.container() for _ in range(k)]
        s.goods = self.ch(_GOODS)
        return s

    def edi_escape(self, t: str) -> str:
        """EDIFACT release-character escaping (memoised: the set of texts is small)."""
        e = self._esc.get(t)
        if e is None:
            e = self._esc[t] = t.translate(_EDI_ESC)
        return e

    def imo_for(self, v: _Vessel):
        if self.rng.random() < 0.02:
            return v.bad_imo, False
        return v.imo, True

    # ------------------------------------------------------------------ label helpers
    def lab_cont(self, labs: list, c: _Cont, loc: str):
        labs.append(_L("container_number", c.value, loc, c.valid))

    def lab_book(self, labs: list, s: _Shipment, loc: str):
        labs.append(_L("booking_reference", s.booking, loc))
        if s.bk_look:
            labs.append(_L("container_number", s.booking, loc, s.bk_valid, True))

    # ------------------------------------------------------------------ top level
    def one(self) -> SynthMessage:
        r = self.rng.random
        if self.bad_fraction > 0.0 and r() < self.bad_fraction:
            return self.bad()
        x = r()
        for lim, f in self.fcum:
            if x < lim:
                return self.builders[f]()
        raise AssertionError("unreachable")

    def bad(self) -> SynthMessage:
        reasons = ["empty_value"]
        if "edifact" in self.formats:
            reasons.append("unterminated_interchange")
        if "json" in self.formats:
            reasons += ["malformed_json", "invalid_utf8"]
        if "xml" in self.formats:
            reasons.append("malformed_xml")
        reason = self.ch(reasons)
        if reason == "empty_value":
            fmt = self.ch(self.formats)
            good = self.builders[fmt]()
            return SynthMessage(fmt, "bad", good.key, b"", (), reason)
        if reason == "unterminated_interchange":
            good = self.edifact()
            v = good.value.rstrip(b"\r\n")
            assert v.endswith(b"'")
            return SynthMessage("edifact", "bad", good.key, v[:-1], (), reason)
        if reason == "malformed_xml":
            good = self.xml()
            v = good.value
            cut = len(v) // 3 + self.ri(len(v) - 3 - len(v) // 3)
            return SynthMessage("xml", "bad", good.key, v[:cut], (), reason)
        good = self.json()
        v = good.value
        if reason == "malformed_json":
            cut = len(v) // 3 + self.ri(len(v) - 2 - len(v) // 3)
            return SynthMessage("json", "bad", good.key, v[:cut], (), reason)
        i = v.find(b'"', v.find(b":") + 1) + 1  # inside the first string value
        return SynthMessage("json", "bad", good.key, v[:i] + b"\xff\xfe" + v[i:], (), reason)

    # ================================================================== EDIFACT
    def edifact(self) -> SynthMessage:
        r = self.rng.random
        x = r()
        kind = ("BAPLIE" if x < 0.2 else "COPRAR" if x < 0.38 else "COARRI" if x < 0.56 else
                "CODECO" if x < 0.70 else "IFTMIN" if x < 0.87 else "CUSCAR")
        y = r()
        syntax = "UNOC" if y < 0.3 else ("UNOB" if y < 0.4 else "UNOA")
        latin = syntax == "UNOC"
        dt = self.now()
        yymmdd = f"{dt.year % 100:02d}{dt.month:02d}{dt.day:02d}"
        hhmm = f"{dt.hour:02d}{dt.minute:02d}"
        stamp = f"{dt.year}{dt.month:02d}{dt.day:02d}{hhmm}"
        iref = self.digits(6 + self.ri(8))
        mref = self.digits(5 + self.ri(5))
        labs: list[Label] = []
        s = self.shipment()
        carrier = s.carrier
        if kind in ("BAPLIE", "COARRI"):
            sender, recip = self.ch(_TERMINALS), carrier[1]
        elif kind in ("COPRAR", "CODECO"):
            sender, recip = carrier[1], self.ch(_TERMINALS)
        elif kind == "CUSCAR":
            sender, recip = carrier[0], self.ch(("GBCUSTOMS", "NLDOUANE", "DEZOLLHH", "CRCUSTOMS01"))
        else:
            sender, recip = self.ch(self.parties).code, carrier[1]
        if r() < 0.25:
            recip += ":ZZZ"
        segs = []
        add = segs.append
        ver = {"BAPLIE": "D:95B:UN:SMDG22", "COPRAR": "D:95B:UN:SMDG21", "COARRI": "D:95B:UN:ITG13",
               "CODECO": "D:95B:UN:SMDG20", "IFTMIN": "D:99B:UN", "CUSCAR": "D:95B:UN:LOT10"}[kind]
        add(f"UNH+{mref}+{kind}:{ver}")
        blank = r() < 0.08  # blank lines between segment groups (per-line layout only)

        def vessel_tdt(qual="20", mode="1"):
            v = s.vessel
            vname = v.name
            if r() < 0.75:
                imo, ok = self.imo_for(v)
                add(f"TDT+{qual}+{s.voyage}+{mode}++{carrier[1]}:172:20+++{imo}:146:11:{vname}")
                labs.append(_L("imo_number", imo, "TDT/C222:146", ok))
            else:
                add(f"TDT+{qual}+{s.voyage}+{mode}++{carrier[1]}:172:20+++{v.callsign}:103::{vname}")
                labs.append(_L("call_sign", v.callsign, "TDT/C222:103"))
            labs.append(_L("vessel_name", vname, "TDT/C222"))

        def pname(q: _Party) -> str:
            return q.uname if latin else q.name

        def ftx_free(c: _Cont | None):
            """Free text that sometimes mentions a container or the vessel IMO (labelled)."""
            z = r()
            if c is not None and z < 0.12:
                add(f"FTX+AAI+++CONTAINER {c.value} {self.ch(('REPAIRED AT DEPOT', 'RESEALED BY CUSTOMS', 'VGM RECEIVED LATE', 'TRANSHIPPED'))}")
                labs.append(_L("container_number", c.value, "FTX", c.valid))
            elif z < 0.16:
                v = s.vessel
                add(f"FTX+AAI+++EX IMO {v.imo} {v.name}")
                labs.append(_L("imo_number", v.imo, "FTX", True))
                labs.append(_L("vessel_name", v.name, "FTX"))

        def eqd(c: _Cont, tail: str, pre: str = ""):
            z = r()
            if z < 0.08:
                num = f"{c.value[:4]} {c.value[4:]}"
            elif z < 0.2:
                num = f"{c.value}:6346:5"
            else:
                num = c.value
            add(f"{pre}EQD+CN+{num}+{c.type}{tail}")
            labs.append(_L("container_number", c.value, "EQD+CN", c.valid))

        def dgs(goods):
            dg = goods[2]
            if dg is not None:
                add(f"DGS+IMD+{dg[0]}+{dg[1]}{'++' + ('1', '2', '3')[len(dg[2]) - 1] if dg[2] else ''}")
                labs.append(_L("un_number", dg[1], "DGS"))
                if r() < 0.5:
                    add(f"FTX+AAD+++{esc_(goods[0])}")

        esc_ = self.edi_escape

        if kind == "BAPLIE":
            add(f"BGM++{self.digits(8)}+9")
            add(f"DTM+137:{stamp}:203")
            vessel_tdt()
            add(f"LOC+5+{s.pol[0]}:139:6")
            add(f"LOC+61+{s.pod[0]}:139:6")
            add(f"DTM+178:{stamp}:203")
            add(f"DTM+132:{stamp}:203")
            k = 2 + self.ri(9) if r() < 0.93 else 15 + self.ri(25)
            picked: dict[str, tuple] = {}
            sh = s
            for _ in range(4 * k):
                for c in sh.conts:
                    if len(picked) < k:
                        picked.setdefault(c.value, (c, sh))
                if len(picked) >= k:
                    break
                sh = self.shipment()
            for c, sh in picked.values():
                pos = f"{self.ri(90) + 1:03d}{self.ri(18):02d}{(2 * self.ri(10) + (2 if r() < 0.5 else 82)) % 100:02d}"
                add(("\n" if blank else "") + f"LOC+147+{pos}::5")
                if r() < 0.5:
                    add(f"FTX+AAA+++{esc_(sh.goods[0])}")
                add(f"MEA+VGM++KGM:{c.weight}")
                if c.temp is not None:
                    add(f"TMP+2+{c.temp}:CEL")
                add(f"LOC+9+{sh.pol[0]}:139:6")
                add(f"LOC+11+{sh.pod[0]}:139:6")
                if r() < 0.6:
                    add(f"RFF+BN:{sh.booking}")
                    self.lab_book(labs, sh, "RFF+BN")
                else:
                    add("RFF+BM:1")
                eqd(c, "++2+5")
                add(f"NAD+CA+{sh.carrier[1]}:172:20")
                if r() < 0.3:
                    dgs(sh.goods)
        elif kind in ("COPRAR", "COARRI", "CODECO"):
            fn = {"COPRAR": "45", "COARRI": "98", "CODECO": "34"}[kind]
            add(f"BGM+{fn}+{self.digits(10)}+9")
            add(f"DTM+137:{stamp}:203")
            if kind == "CODECO":
                add("TDT+1++3+31")
            else:
                vessel_tdt()
            add(f"LOC+9+{s.pol[0]}:139:6")
            add(f"NAD+CA+{carrier[1]}:160:20")
            n = 0
            for c in s.conts:
                n += 1
                eqd(c, f":102:5++{self.ch('23')}+{self.ch('54')}", "\n" if blank else "")
                add(f"RFF+BN:{s.booking}")
                self.lab_book(labs, s, "RFF+BN")
                if r() < 0.8:
                    add(f"RFF+BM:{s.bl}")
                    labs.append(_L("bill_of_lading", s.bl, "RFF+BM"))
                add(f"DTM+203:{stamp}:203")
                if kind == "COARRI":
                    add(f"LOC+147+{self.ri(90) + 1:03d}{self.ri(18):02d}{2 * self.ri(45) + 2:02d}::5")
                add(f"LOC+11+{s.pod[0]}:139:6")
                add(f"MEA+AAE+VGM+KGM:{c.weight}")
                if c.temp is not None:
                    add(f"TMP+2+{c.temp}:CEL")
                add(f"SEL+{c.seal}+CA")
                labs.append(_L("seal_number", c.seal, "SEL"))
                if r() < 0.4:
                    add(f"FTX+AAA+++{esc_(s.goods[0])}")
                ftx_free(c)
                dgs(s.goods)
                if kind == "COARRI" and r() < 0.3:
                    add(f"NAD+CF+{s.shipper.tax_id}:160:166")
                    labs.append(_L("tax_id", s.shipper.tax_id, "NAD+CF"))
            add(f"CNT+16:{n}")
        else:  # IFTMIN / CUSCAR
            if kind == "IFTMIN":
                add(f"BGM+610+{self.digits(12)}+9")
            else:
                add(f"BGM+85+{self.digits(9)}+9")
            add(f"DTM+137:{stamp}:203")
            if kind == "IFTMIN":
                ftx_free(s.conts[0])
                add(f"RFF+BN:{s.booking}")
                self.lab_book(labs, s, "RFF+BN")
            add(f"RFF+BM:{s.bl}")
            labs.append(_L("bill_of_lading", s.bl, "RFF+BM"))
            vessel_tdt()
            add(f"LOC+9+{s.pol[0]}:139:6")
            add(f"LOC+11+{s.pod[0]}:139:6")
            roles = (("CZ", s.shipper), ("CN", s.consignee), ("FW", s.forwarder))
            if kind == "CUSCAR" and r() < 0.5:
                roles += (("N1", s.notify),)
            for role, q in roles:
                nm = pname(q)
                street = q.ustreet if latin else q.street
                if kind == "CUSCAR" and r() < 0.4:  # name and address in one C058 free-text element
                    add(f"NAD+{role}+{q.code}+{esc_(nm)}")
                else:
                    add(f"NAD+{role}+{q.code}::87++{esc_(nm)}+{esc_(street)}+{q.city}++{q.postcode}+{q.country}")
                    labs.append(_L("party_address", street, f"NAD+{role}"))
                labs.append(_L("party_name", nm, f"NAD+{role}"))
                if kind == "IFTMIN" or r() < 0.3:
                    person = q.uperson if latin else q.person
                    add(f"CTA+IC+:{esc_(person)}")
                    labs.append(_L("contact_person", person, "CTA+IC"))
                    add(f"COM+{q.email}:EM")
                    labs.append(_L("email", q.email, "COM:EM"))
                    if r() < 0.7:
                        add(f"COM+{esc_(q.phone_compact)}:TE")
                        labs.append(_L("phone", q.phone_compact, "COM:TE"))
            g = 0
            for c in s.conts:
                g += 1
                add(f"GID+{g}+{100 + self.ri(900)}:CT")
                add(f"FTX+AAA+++{esc_(s.goods[0])}")
                add(f"MEA+WT+G+KGM:{c.weight}")
                add(f"SGP+{c.value}+{1 + self.ri(60)}")
                labs.append(_L("container_number", c.value, "SGP", c.valid))
                dgs(s.goods)
            for c in s.conts:
                eqd(c, ":102:5++2+5")
                add(f"SEL+{c.seal}+SH")
                labs.append(_L("seal_number", c.seal, "SEL"))
            if kind == "CUSCAR":
                ftx_free(s.conts[-1])
        add(f"UNT+{len(segs) + 1}+{mref}")
        z = r()
        sep = "" if z < 0.3 else ("\r\n" if z < 0.45 else "\n")
        if blank:  # blank lines between groups only make sense in the per-line layout
            segs = [(sep + t[1:]) if t[:1] == "\n" else t for t in segs]
        term = "'" + sep
        una = ""
        if r() < 0.15:
            una = "UNA:+.? '" + sep
        synver = "3" if latin else ("2" if r() < 0.8 else "1")
        unb = f"UNB+{syntax}:{synver}+{sender}+{recip}+{yymmdd}:{hhmm}+{iref}"
        text = una + unb + term + term.join(segs) + term + f"UNZ+1+{iref}" + term
        if latin:
            value = text.encode("latin-1")
        else:
            value = text.encode("ascii")
            if r() < 0.02:
                value = b"\xef\xbb\xbf" + value
        return SynthMessage("edifact", kind, f"{sender}:{iref}".encode("ascii"), value, self.labels(labs))

    # ================================================================== X12
    def x12(self) -> SynthMessage:
        r = self.rng.random
        x = r()
        code = "315" if x < 0.35 else ("301" if x < 0.55 else ("322" if x < 0.8 else "309"))
        dt = self.now()
        ymd = f"{dt.year}{dt.month:02d}{dt.day:02d}"
        hhmm = f"{dt.hour:02d}{dt.minute:02d}"
        labs: list[Label] = []
        s = self.shipment()
        scac = s.carrier[0]
        ctrl = 1 + self.ri(999_999_998)
        gctrl = 1 + self.ri(99_999)
        nsets = 1 if (code != "322" or r() < 0.7) else 2 + self.ri(2)
        sets = []
        sender = scac if code != "322" else self.ch(("BNSF", "UPRR", "CSXT", "NSRR"))
        receiver = self.ch(("PORTAUTH", "TIDEWORKS", "CBPUS", "TERMINALOPS", "NAVIS"))
        if code == "309":
            receiver = "CBPUS"
        for si in range(nsets):
            if si:
                s = self.shipment()
            segs = [f"ST*{code}*{gctrl:05d}{si + 1:04d}"]
            add = segs.append
            getattr(self, "_x" + code)(s, add, labs, ymd, hhmm)
            segs.append(f"SE*{len(segs) + 1}*{gctrl:05d}{si + 1:04d}")
            sets.append(segs)
        fid = {"315": "QO", "301": "RO", "322": "SO", "309": "SO"}[code]
        isa = (f"ISA*00*          *00*          *ZZ*{sender:<15}*ZZ*{receiver:<15}*"
               f"{ymd[2:]}*{hhmm}*U*00401*{ctrl:09d}*0*P*>")
        allsegs = [isa, f"GS*{fid}*{sender}*{receiver}*{ymd}*{hhmm}*{gctrl}*X*004010"]
        for segs in sets:
            allsegs += segs
        allsegs.append(f"GE*{nsets}*{gctrl}")
        allsegs.append(f"IEA*1*{ctrl:09d}")
        term = "~" if r() < 0.5 else ("~\n" if r() < 0.85 else "~\r\n")
        value = (term.join(allsegs) + term).encode("ascii")
        if r() < 0.02:
            value = b"\xef\xbb\xbf" + value
        return SynthMessage("x12", code, f"{sender}:{ctrl:09d}".encode("ascii"), value, self.labels(labs))

    def _x_party(self, add, labs, role: str, q: _Party, full: bool):
        if full and self.rng.random() < 0.6:
            add(f"N1*{role}*{q.name}*25*{q.tax_id}")
            labs.append(_L("tax_id", q.tax_id, f"N1*{role}"))
        else:
            add(f"N1*{role}*{q.name}")
        labs.append(_L("party_name", q.name, f"N1*{role}"))
        if full:
            add(f"N3*{q.street}")
            labs.append(_L("party_address", q.street, "N3"))
            add(f"N4*{q.city}**{q.postcode}*{q.country}")
            if self.rng.random() < 0.4:
                add(f"PER*IC*{q.person}*TE*{q.phone}*EM*{q.email}")
                labs.append(_L("contact_person", q.person, "PER"))
                labs.append(_L("phone", q.phone, "PER"))
                labs.append(_L("email", q.email, "PER"))

    def _x315(self, s, add, labs, ymd, hhmm):
        r = self.rng.random
        c = self.ch(s.conts)
        v = c.value
        port = self.ch((s.pol, s.pod))
        status = self.ch(("VA", "AE", "UV", "VD", "OA", "I", "RL", "AL"))
        if r() < 0.3:  # 6-digit serial with the check digit in B4-13
            add(f"B4***{status}*{ymd}*{hhmm}**{v[:4]}*{v[4:10]}*{self.ch('EL')}*{c.type}*{port[1]}*CI*{v[10]}")
        else:
            add(f"B4***{status}*{ymd}*{hhmm}**{v[:4]}*{v[4:]}*{self.ch('EL')}*{c.type}*{port[1]}*CI")
        labs.append(_L("container_number", v, "B4", c.valid))
        add(f"N9*BM*{s.bl}")
        labs.append(_L("bill_of_lading", s.bl, "N9*BM"))
        add(f"N9*BN*{s.booking}")
        self.lab_book(labs, s, "N9*BN")
        if r() < 0.4:
            add(f"N9*EQ*{v}")
            labs.append(_L("container_number", v, "N9*EQ", c.valid))
        imo, ok = self.imo_for(s.vessel)
        add(f"Q2*{imo}********{s.voyage}***L*{s.vessel.name}")
        labs.append(_L("imo_number", imo, "Q2", ok))
        labs.append(_L("vessel_name", s.vessel.name, "Q2"))
        add(f"R4*L*UN*{s.pol[0]}*{s.pol[1]}*{s.pol[2]}")
        add(f"DTM*140*{ymd}*{hhmm}*LT")
        add(f"R4*D*UN*{s.pod[0]}*{s.pod[1]}*{s.pod[2]}")
        if r() < 0.4:
            add(f"R4*E*UN*{s.pod[0]}*{self.ch(_RAMPS)}*{s.pod[2]}")

    def _x301(self, s, add, labs, ymd, hhmm):
        r = self.rng.random
        bk = s.booking
        add(f"B1*{s.carrier[0]}*{bk}*{ymd}*A")
        self.lab_book(labs, s, "B1")
        add(f"Y3*{bk}*{s.carrier[0]}*{ymd}*{ymd}***{ymd}")
        self.lab_book(labs, s, "Y3")
        add(f"Y4*{bk}**{ymd}**{len(s.conts)}*{s.conts[0].type}")
        self.lab_book(labs, s, "Y4")
        add(f"N9*BN*{bk}")
        self.lab_book(labs, s, "N9*BN")
        self._x_party(add, labs, "SH", s.shipper, True)
        add(f"R4*L*UN*{s.pol[0]}*{s.pol[1]}*{s.pol[2]}")
        add(f"R4*D*UN*{s.pod[0]}*{s.pod[1]}*{s.pod[2]}")
        add("LX*1")
        if r() < 0.5:
            for c in s.conts:
                add(f"N7*{c.value[:4]}*{c.value[4:]}*{c.weight}*G*******CN")
                labs.append(_L("container_number", c.value, "N7", c.valid))
        add(f"L0*1***{sum(c.weight for c in s.conts)}*G***{len(s.conts)}*CNT**K")
        add(f"L5*1*{_x12clean(s.goods[0])}")
        dg = s.goods[2]
        if dg is not None:
            add(f"H1*{dg[1]}*{dg[0]}*I*{_x12clean(s.goods[0])}*****{dg[2]}")
            labs.append(_L("un_number", dg[1], "H1"))
        imo, ok = self.imo_for(s.vessel)
        add(f"V1*{imo}*{s.vessel.name}*{s.vessel.flag}*{s.voyage}****L")
        labs.append(_L("imo_number", imo, "V1", ok))
        labs.append(_L("vessel_name", s.vessel.name, "V1"))

    def _x322(self, s, add, labs, ymd, hhmm):
        r = self.rng.random
        add(f"Q5*{self.ch(('RL', 'AE', 'UV', 'I', 'OA'))}*{ymd}*{hhmm}*LT**{s.pod[1]}*{s.pod[2]}")
        if r() < 0.25:  # railcar (reporting mark ending in X): NOT a container
            mark = self.ch(_RAILCAR)
            num = str(1000 + self.ri(999000))
            add(f"N7*{mark}*{num}*{20000 + self.ri(60000)}*G*******RR*{mark}")
            add(f"W2*{mark}*{num}**RR*L")
            for loc in ("N7", "W2"):
                labs.append(_L("container_number", mark + num, loc, None, True))
        else:
            c = self.ch(s.conts)
            v = c.value
            add(f"N7*{v[:4]}*{v[4:]}*{c.weight}*G*******CN*{v[:4]}")
            add(f"W2*{v[:4]}*{v[4:]}**CN*L")
            for loc in ("N7", "W2"):
                labs.append(_L("container_number", v, loc, c.valid))
        add(f"R4*5*UN*{s.pol[0]}*{s.pol[1]}")
        add(f"R4*7*UN*{s.pod[0]}*{s.pod[1]}")
        self._x_party(add, labs, "SH", s.shipper, False)
        self._x_party(add, labs, "CN", s.consignee, False)
        add(f"N9*BM*{s.bl}")
        labs.append(_L("bill_of_lading", s.bl, "N9*BM"))
        if r() < 0.6:
            add(f"N9*BN*{s.booking}")
            self.lab_book(labs, s, "N9*BN")

    def _x309(self, s, add, labs, ymd, hhmm):
        r = self.rng.random
        v = s.vessel
        imo, ok = self.imo_for(v)
        add(f"M10*{s.carrier[0]}*O*{v.flag}*{imo}*{v.name}*{s.voyage}*{self.digits(8)}*{1 + self.ri(40)}*Y")
        labs.append(_L("imo_number", imo, "M10", ok))
        labs.append(_L("vessel_name", v.name, "M10"))
        if r() < 0.5:
            add(f"V1*{imo}*{v.name}*{v.flag}*{s.voyage}****L")
            labs.append(_L("imo_number", imo, "V1", ok))
            labs.append(_L("vessel_name", v.name, "V1"))
        add(f"P4*{self.digits(4)}*{ymd[2:]}*{1 + self.ri(9)}*{self.letters(1)}{self.digits(3)}")
        ships = [s]
        for _ in range(self.ri(3) if r() < 0.5 else 0):
            sh = self.shipment()
            if all(sh is not x for x in ships):
                ships.append(sh)
        for i, sh in enumerate(ships):
            add(f"LX*{i + 1}")
            add(f"M11*{sh.bl}*{sh.pod[0][2:]}*{100 + self.ri(900)}*PKG*{sum(c.weight for c in sh.conts)}*K")
            labs.append(_L("bill_of_lading", sh.bl, "M11"))
            self._x_party(add, labs, "SH", sh.shipper, True)
            self._x_party(add, labs, "CN", sh.consignee, True)
            for c in sh.conts:
                add(f"VID*CN*{c.value[:4]}*{c.value[4:]}*{c.seal}")
                labs.append(_L("container_number", c.value, "VID", c.valid))
                labs.append(_L("seal_number", c.seal, "VID"))
            txt = _x12clean(sh.goods[0])
            if r() < 0.2:
                c = sh.conts[0]
                txt += f" CONTAINER {c.value}"
                labs.append(_L("container_number", c.value, "N10", c.valid))
            add(f"N10*{100 + self.ri(900)}*{txt}")
            dg = sh.goods[2]
            if dg is not None:
                add(f"H1*{dg[1]}*{dg[0]}")
                labs.append(_L("un_number", dg[1], "H1"))

    # ================================================================== XML
    def xml(self) -> SynthMessage:
        if self.rng.random() < 0.5:
            return self._wco()
        return self._ubl()

    def _wco(self) -> SynthMessage:
        r = self.rng.random
        s = self.shipment()
        dt = self.now()
        labs: list[Label] = []
        xe = _XML_ESC
        p = "dec:" if r() < 0.35 else ""
        ns = (' xmlns:dec="urn:wco:datamodel:WCO:DEC-DMS:2"' if p else
              ' xmlns="urn:wco:datamodel:WCO:DEC-DMS:2"')
        cm = r() < 0.3  # HMRC-style explanatory comments
        ref = f"{dt.year % 10}{s.pol[2]}{self.digits(12)}-{self.digits(4)}"
        typ = self.ch(("EXD", "EXA", "IMZ", "IMA"))
        v = s.vessel
        imo, ok = self.imo_for(v)
        exp, cons = s.shipper, s.consignee
        o = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{p}Declaration{ns}>']
        a = o.append
        a(f"<{p}FunctionCode>9</{p}FunctionCode>")
        if cm:
            a("<!-- Trader reference of the declaration (DUCR). -->")
        a(f"<{p}FunctionalReferenceID>{ref}</{p}FunctionalReferenceID>")
        a(f"<{p}TypeCode>{typ}</{p}TypeCode>")
        a(f"<{p}GoodsItemQuantity>{len(s.conts)}</{p}GoodsItemQuantity>")
        if cm:
            a("<!-- Vessel crossing the border: IMO number, identification type 10. -->")
        a(f"<{p}BorderTransportMeans><{p}ID>{imo}</{p}ID><{p}IdentificationTypeCode>10</{p}IdentificationTypeCode>"
          f"<{p}Name>{v.name}</{p}Name><{p}RegistrationNationalityCode>{v.flag}</{p}RegistrationNationalityCode>"
          f"<{p}ModeCode>1</{p}ModeCode></{p}BorderTransportMeans>")
        labs.append(_L("imo_number", imo, "BorderTransportMeans/ID", ok))
        labs.append(_L("vessel_name", v.name, "BorderTransportMeans/Name"))
        if cm:
            a("<!-- EORI number of the declarant. -->")
        a(f"<{p}Declarant><{p}ID>{s.forwarder.eori}</{p}ID></{p}Declarant>")
        labs.append(_L("eori", s.forwarder.eori, "Declarant/ID"))
        a(f"<{p}Exporter><{p}Name>{exp.uname.translate(xe)}</{p}Name><{p}ID>{exp.eori}</{p}ID>"
          f"<{p}Address><{p}CityName>{exp.city}</{p}CityName><{p}CountryCode>{exp.country}</{p}CountryCode>"
          f"<{p}Line>{exp.ustreet}</{p}Line><{p}PostcodeID>{exp.postcode}</{p}PostcodeID></{p}Address></{p}Exporter>")
        labs.append(_L("party_name", exp.uname, "Exporter/Name"))
        labs.append(_L("eori", exp.eori, "Exporter/ID"))
        labs.append(_L("party_address", exp.ustreet, "Exporter/Address/Line"))
        a(f"<{p}GoodsShipment>")
        if cm:
            a("<!-- Consignee: name and address. -->")
        a(f"<{p}Consignee><{p}Name>{cons.uname.translate(xe)}</{p}Name><{p}Address><{p}CityName>{cons.city}</{p}CityName>"
          f"<{p}CountryCode>{cons.country}</{p}CountryCode><{p}Line>{cons.ustreet}</{p}Line>"
          f"<{p}PostcodeID>{cons.postcode}</{p}PostcodeID></{p}Address></{p}Consignee>")
        labs.append(_L("party_name", cons.uname, "Consignee/Name"))
        labs.append(_L("party_address", cons.ustreet, "Consignee/Address/Line"))
        a(f"<{p}Consignment><{p}ContainerCode>1</{p}ContainerCode>")
        a(f"<{p}TransportContractDocument><{p}ID>{s.bl}</{p}ID><{p}TypeCode>N705</{p}TypeCode></{p}TransportContractDocument>")
        labs.append(_L("bill_of_lading", s.bl, "TransportContractDocument/ID"))
        for i, c in enumerate(s.conts, 1):
            if cm and i == 1:
                a("<!-- Container number and seal. -->")
            a(f"<{p}TransportEquipment><{p}SequenceNumeric>{i}</{p}SequenceNumeric><{p}ID>{c.value}</{p}ID>"
              f"<{p}Seal><{p}SequenceNumeric>1</{p}SequenceNumeric><{p}ID>{c.seal}</{p}ID></{p}Seal></{p}TransportEquipment>")
            labs.append(_L("container_number", c.value, "TransportEquipment/ID", c.valid))
            labs.append(_L("seal_number", c.seal, "TransportEquipment/Seal/ID"))
        a(f"</{p}Consignment>")
        g = s.goods
        desc = g[0]
        if r() < 0.15:
            c = s.conts[0]
            desc += f" - STUFFED IN {c.value}"
            labs.append(_L("container_number", c.value, "Commodity/Description", c.valid))
        a(f"<{p}GovernmentAgencyGoodsItem><{p}SequenceNumeric>1</{p}SequenceNumeric><{p}Commodity>"
          f"<{p}Description>{desc.translate(xe)}</{p}Description>"
          f"<{p}Classification><{p}ID>{g[1]}</{p}ID><{p}IdentificationTypeCode>TSP</{p}IdentificationTypeCode></{p}Classification>")
        if g[2] is not None:
            a(f"<{p}DangerousGoods><{p}UNDGID>{g[2][1]}</{p}UNDGID></{p}DangerousGoods>")
            labs.append(_L("un_number", g[2][1], "DangerousGoods/UNDGID"))
        a(f"</{p}Commodity></{p}GovernmentAgencyGoodsItem>")
        a(f"</{p}GoodsShipment>\n</{p}Declaration>\n")
        nl = "\n" if r() < 0.6 else ""
        value = nl.join(o).encode("utf-8")
        return SynthMessage("xml", "Declaration", f"{s.forwarder.eori}:{ref}".encode("ascii"), value, self.labels(labs))

    def _ubl(self) -> SynthMessage:
        r = self.rng.random
        s = self.shipment()
        dt = self.now()
        labs: list[Label] = []
        xe = _XML_ESC
        root = "Waybill" if r() < 0.6 else "Manifest"
        ships = [s]
        if root == "Manifest":
            for _ in range(self.ri(3)):
                sh = self.shipment()
                if all(sh is not x for x in ships):
                    ships.append(sh)
        v = s.vessel
        imo, ok = self.imo_for(v)
        doc_id = s.bl if root == "Waybill" else f"MF{self.digits(8)}"
        o = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="urn:oasis:names:specification:ubl:schema:xsd:{root}-2"'
             ' xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"'
             ' xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">']
        a = o.append
        a(f"<cbc:UBLVersionID>{'2.1' if root == 'Waybill' else '2.3'}</cbc:UBLVersionID>")
        a(f"<cbc:ID>{doc_id}</cbc:ID>")
        if root == "Waybill":
            labs.append(_L("bill_of_lading", s.bl, "Waybill/cbc:ID"))
            a(f"<cbc:CarrierAssignedID>{s.booking}</cbc:CarrierAssignedID>")
            self.lab_book(labs, s, "cbc:CarrierAssignedID")
        a(f"<cbc:IssueDate>{dt.year}-{dt.month:02d}-{dt.day:02d}</cbc:IssueDate>")
        a(f"<cbc:IssueTime>{dt.hour:02d}:{dt.minute:02d}:00Z</cbc:IssueTime>")
        if root == "Waybill":
            a("<cbc:Name>Sea Waybill</cbc:Name>")

        def party(tag, q: _Party, contact: bool):
            a(f"<cac:{tag}><cac:PartyName><cbc:Name>{q.uname.translate(xe)}</cbc:Name></cac:PartyName>"
              f"<cac:PostalAddress><cbc:StreetName>{q.ustreet}</cbc:StreetName><cbc:CityName>{q.city}</cbc:CityName>"
              f"<cbc:PostalZone>{q.postcode}</cbc:PostalZone><cac:Country><cbc:IdentificationCode>{q.country}"
              f"</cbc:IdentificationCode></cac:Country></cac:PostalAddress>")
            labs.append(_L("party_name", q.uname, f"cac:{tag}/cac:PartyName/cbc:Name"))
            labs.append(_L("party_address", q.ustreet, "cbc:StreetName"))
            if contact:
                a(f"<cac:Contact><cbc:Name>{q.uperson}</cbc:Name><cbc:Telephone>{q.phone}</cbc:Telephone>"
                  f"<cbc:ElectronicMail>{q.email}</cbc:ElectronicMail></cac:Contact>")
                labs.append(_L("contact_person", q.uperson, "cac:Contact/cbc:Name"))
                labs.append(_L("phone", q.phone, "cac:Contact/cbc:Telephone"))
                labs.append(_L("email", q.email, "cac:Contact/cbc:ElectronicMail"))
            a(f"</cac:{tag}>")

        if root == "Waybill":
            party("ConsignorParty", s.shipper, True)
            party("FreightForwarderParty", s.forwarder, r() < 0.5)
        else:
            party("SendingLogisticsOperatorParty", s.forwarder, True)
        for k, sh in enumerate(ships, 1):
            a(f"<cac:Shipment><cbc:ID>{k}</cbc:ID>")
            a(f"<cac:Consignment><cbc:ID>{sh.bl}</cbc:ID>")
            labs.append(_L("bill_of_lading", sh.bl, "cac:Consignment/cbc:ID"))
            if root == "Manifest":
                a(f"<cbc:CarrierAssignedID>{sh.booking}</cbc:CarrierAssignedID>")
                self.lab_book(labs, sh, "cbc:CarrierAssignedID")
            party("ConsigneeParty", sh.consignee, r() < 0.5)
            a("</cac:Consignment>")
            g = sh.goods
            desc = g[0]
            if r() < 0.15:
                c = sh.conts[-1]
                desc = f"{desc}, CONTAINER {c.value}"
                labs.append(_L("container_number", c.value, "cbc:Description", c.valid))
            a(f"<cac:GoodsItem><cbc:ID>1</cbc:ID><cbc:Description>{desc.translate(xe)}</cbc:Description>")
            if g[2] is not None:
                a(f"<cac:HazardousItem><cbc:UNDGCode>{g[2][1]}</cbc:UNDGCode>"
                  f"<cbc:HazardClassID>{g[2][0]}</cbc:HazardClassID></cac:HazardousItem>")
                labs.append(_L("un_number", g[2][1], "cbc:UNDGCode"))
            a("</cac:GoodsItem>")
            a(f"<cac:ShipmentStage><cbc:ID>1</cbc:ID><cbc:TransportModeCode>1</cbc:TransportModeCode>"
              f"<cac:TransportMeans><cac:MaritimeTransport><cbc:VesselID>{imo}</cbc:VesselID>"
              f"<cbc:VesselName>{v.name}</cbc:VesselName></cac:MaritimeTransport></cac:TransportMeans></cac:ShipmentStage>")
            labs.append(_L("imo_number", imo, "cac:MaritimeTransport/cbc:VesselID", ok))
            labs.append(_L("vessel_name", v.name, "cbc:VesselName"))
            for c in sh.conts:
                a(f"<cac:TransportHandlingUnit><cac:TransportEquipment><cbc:ID>{c.value}</cbc:ID>"
                  f"<cbc:TransportEquipmentTypeCode>CN</cbc:TransportEquipmentTypeCode>"
                  f"<cbc:SizeTypeCode>{c.type}</cbc:SizeTypeCode>"
                  f"<cac:TransportEquipmentSeal><cbc:ID>{c.seal}</cbc:ID></cac:TransportEquipmentSeal>"
                  f"</cac:TransportEquipment></cac:TransportHandlingUnit>")
                labs.append(_L("container_number", c.value, "cac:TransportEquipment/cbc:ID", c.valid))
                labs.append(_L("seal_number", c.seal, "cac:TransportEquipmentSeal/cbc:ID"))
            a("</cac:Shipment>")
        a(f"</{root}>\n")
        nl = "\n" if r() < 0.6 else ""
        return SynthMessage("xml", root, f"{s.carrier[0]}:{doc_id}".encode("ascii"),
                            nl.join(o).encode("utf-8"), self.labels(labs))

    # ================================================================== JSON
    def _uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def json(self) -> SynthMessage:
        x = self.rng.random()
        if x < 0.01:
            return self._logink_track()
        if x < 0.62:
            return self._tnt()
        return self._booking()

    def _logink_track(self) -> SynthMessage:
        """An integration log entry of a customs-status query to LOGINK's ocean tracking API, shaped
        like the public client code (domain-facts 1.2: method logink.track.customs, biz_content with
        GoodsDeclarationNumber, LadingBillNumber, PartyFunctionCode ZJEPORT, PortCodeList)."""
        s = self.shipment()
        dt = self.now()
        gdn = f"31{dt.year}{self.digits(12)}"
        doc = {"endpoint": "http://test.logink.org:86/OceanTracking/ClearanceStatus",
               "method": "logink.track.customs",
               "timestamp": f"{dt.year}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d}:00",
               "biz_content": {"GoodsDeclarationNumber": gdn, "LadingBillNumber": s.bl,
                               "PartyFunctionCode": "ZJEPORT", "PortCodeList": f"CNNGB,{s.pod[0]}"}}
        labs = [_L("customs_reference", gdn, "$.biz_content.GoodsDeclarationNumber"),
                _L("bill_of_lading", s.bl, "$.biz_content.LadingBillNumber")]
        return SynthMessage("json", "logink-track", f"{s.carrier[1]}:{gdn}".encode("ascii"),
                            orjson.dumps(doc), self.labels(labs), egress=("LOGINK",))

    def _logink_container(self) -> SynthMessage:
        """An integration log entry of a container query to LOGINK's API gateway, shaped like the
        public client code (domain-facts 1.2: gateway.logink.cn /container/getNingboContainerInfo with
        containerNumber and ladingBillNumber, partyFunctionCode CNNGB)."""
        s = self.shipment()
        c = self.ch(s.conts)
        doc = {"endpoint": "https://gateway.logink.cn/container/getNingboContainerInfo",
               "containerNumber": c.value, "ladingBillNumber": s.bl, "partyFunctionCode": "CNNGB"}
        labs = [_L("container_number", c.value, "$.containerNumber", c.valid),
                _L("bill_of_lading", s.bl, "$.ladingBillNumber")]
        return SynthMessage("json", "logink-container", f"{s.carrier[1]}:{c.value}".encode("ascii"),
                            orjson.dumps(doc), self.labels(labs), egress=("LOGINK",))

    def _logink_waybill(self) -> SynthMessage:
        """A freight-broker waybill sent through LOGINK's SOAP exchange, logged in clear: the ActionType
        LOGINK_CN_FREIGHTBROKER_WAYBILL, ToAddress and a body with consignor and consignee
        (domain-facts 1.2, "cuteinfo"; the real payload is base64-encoded XML)."""
        s = self.shipment()
        xe = _XML_ESC
        ref = self.digits(12)
        body = "".join(f"<{role}><Name>{q.name.translate(xe)}</Name><StreetName>{q.street.translate(xe)}</StreetName>"
                       f"</{role}>" for role, q in (("Consignor", s.shipper), ("Consignee", s.consignee)))
        doc = (f"<SendRequest><ToAddress>jyzx00002</ToAddress><ExchangeEvent>"
               f"<ActionType>LOGINK_CN_FREIGHTBROKER_WAYBILL</ActionType><Root><Header>"
               f"<MessageReferenceNumber>{ref}</MessageReferenceNumber><DocumentName>Waybill</DocumentName></Header>"
               f"<Body>{body}</Body></Root></ExchangeEvent></SendRequest>")
        labs = []
        for q in (s.shipper, s.consignee):
            labs.append(_L("party_name", q.name, "Name"))
            labs.append(_L("party_address", q.street, "StreetName"))
        return SynthMessage("xml", "logink-waybill", f"LOGINK:{ref}".encode("ascii"), doc.encode("utf-8"),
                            self.labels(labs), egress=("LOGINK",))

    def _coprar_to(self, recipient: str) -> SynthMessage:
        """A COPRAR interchange addressed (UNB recipient) to ``recipient``: vessel and containers."""
        s = self.shipment()
        v = s.vessel
        iref = self.digits(8)
        segs = ["UNH+1+COPRAR:D:95B:UN:SMDG21", f"BGM+45+{self.digits(10)}+9",
                f"TDT+20+{s.voyage}+1++{s.carrier[1]}:172:20+++{v.imo}:146:11:{v.name}",
                f"LOC+9+{s.pol[0]}:139:6", f"NAD+CA+{s.carrier[1]}:160:20"]
        labs = [_L("imo_number", v.imo, "TDT/C222:146", True), _L("vessel_name", v.name, "TDT/C222")]
        for c in s.conts:
            segs.append(f"EQD+CN+{c.value}:102:5++2+5")
            labs.append(_L("container_number", c.value, "EQD+CN", c.valid))
        segs.append(f"CNT+16:{len(s.conts)}")
        segs.append(f"UNT+{len(segs) + 1}+1")
        value = "'".join([f"UNB+UNOA:2+PORTEDI:ZZ+{recipient}:ZZ+260301:0620+{iref}"] + segs + [f"UNZ+1+{iref}"]) + "'"
        return SynthMessage("edifact", "COPRAR", f"PORTEDI:{iref}".encode("ascii"), value.encode("ascii"),
                            self.labels(labs), egress=("LOGINK",))

    def _tnt(self) -> SynthMessage:
        r = self.rng.random
        s = self.shipment()
        dt = self.now()
        labs: list[Label] = []
        ts = f"{dt.year}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"
        eid = self._uuid()
        x = r()
        etype = "EQUIPMENT" if x < 0.7 else ("TRANSPORT" if x < 0.85 else "SHIPMENT")
        port = self.ch((s.pol, s.pod))
        ev = {"eventID": eid, "eventType": etype, "eventClassifierCode": self.ch(("ACT", "ACT", "EST", "PLN")),
              "eventDateTime": ts, "eventCreatedDateTime": ts}
        if etype == "EQUIPMENT":
            c = self.ch(s.conts)
            ev["equipmentEventTypeCode"] = self.ch(("LOAD", "DISC", "GTIN", "GTOT", "STUF", "STRP"))
            ev["equipmentReference"] = c.value
            labs.append(_L("container_number", c.value, "$.equipmentReference", c.valid))
            ev["ISOEquipmentCode"] = c.type
            ev["emptyIndicatorCode"] = "LADEN" if r() < 0.8 else "EMPTY"
        elif etype == "TRANSPORT":
            ev["transportEventTypeCode"] = self.ch(("ARRI", "DEPA"))
        else:
            ev["shipmentEventTypeCode"] = self.ch(("CONF", "RECE", "ISSU", "APPR"))
            ev["documentTypeCode"] = self.ch(("BKG", "TRD"))
        ev["eventLocation"] = {"locationName": self.ch(_TERMINALS), "UNLocationCode": port[0],
                               "facilityCode": self.letters(4), "facilityCodeListProvider": "SMDG"}
        if etype != "SHIPMENT":
            v = s.vessel
            imo, ok = self.imo_for(v)
            vessel = {"vesselIMONumber": imo, "vesselName": v.name, "vesselFlag": v.flag,
                      "vesselCallSignNumber": v.callsign, "vesselOperatorCarrierCode": s.carrier[1],
                      "vesselOperatorCarrierCodeListProvider": "SMDG"}
            labs.append(_L("imo_number", imo, "$.transportCall.vessel.vesselIMONumber", ok))
            labs.append(_L("vessel_name", v.name, "$.transportCall.vessel.vesselName"))
            labs.append(_L("call_sign", v.callsign, "$.transportCall.vessel.vesselCallSignNumber"))
            ev["transportCall"] = {"transportCallID": self._uuid(), "carrierServiceCode": self.letters(2) + str(self.ri(10)),
                                   "exportVoyageNumber": s.voyage, "importVoyageNumber": s.voyage,
                                   "UNLocationCode": port[0], "modeOfTransport": "VESSEL", "vessel": vessel}
        if etype != "TRANSPORT" or r() < 0.5:
            ev["carrierBookingReference"] = s.booking
            self.lab_book(labs, s, "$.carrierBookingReference")
            if r() < 0.7:
                ev["transportDocumentReference"] = s.bl
                labs.append(_L("bill_of_lading", s.bl, "$.transportDocumentReference"))
            if r() < 0.4:
                ev["documentReferences"] = [{"documentReferenceType": "BKG", "documentReferenceValue": s.booking},
                                            {"documentReferenceType": "TRD", "documentReferenceValue": s.bl}]
                self.lab_book(labs, s, "$.documentReferences[].documentReferenceValue")
                labs.append(_L("bill_of_lading", s.bl, "$.documentReferences[].documentReferenceValue"))
        if etype == "EQUIPMENT" and r() < 0.6:
            ev["seals"] = [{"sealNumber": c.seal, "sealSource": "CAR", "sealType": "BLT"}]
            labs.append(_L("seal_number", c.seal, "$.seals[].sealNumber"))
        opt = orjson.OPT_INDENT_2 if r() < 0.2 else 0
        return SynthMessage("json", "dcsa-tnt-event", f"{s.carrier[1]}:{eid}".encode("ascii"),
                            orjson.dumps(ev, option=opt), self.labels(labs))

    def _booking(self) -> SynthMessage:
        r = self.rng.random
        s = self.shipment()
        dt = self.now()
        labs: list[Label] = []
        v = s.vessel
        imo, ok = self.imo_for(v)
        ts = f"{dt.year}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:00Z"
        ebl = r() < 0.4
        doc = {"carrierBookingReference": s.booking}
        self.lab_book(labs, s, "$.carrierBookingReference")
        if ebl:
            doc["transportDocumentReference"] = s.bl
            doc["transportDocumentTypeCode"] = self.ch(("BOL", "SWB"))
            labs.append(_L("bill_of_lading", s.bl, "$.transportDocumentReference"))
        doc["bookingStatus" if not ebl else "transportDocumentStatus"] = self.ch(("CONFIRMED", "RECEIVED", "DRAFT", "ISSUED"))
        doc["updatedDateTime"] = ts
        doc["receiptTypeAtOrigin"] = "CY"
        doc["deliveryTypeAtDestination"] = "CY"
        doc["cargoMovementTypeAtOrigin"] = "FCL"
        doc["serviceContractReference"] = f"SC{self.digits(8)}"
        doc["vessel"] = {"name": v.name, "vesselIMONumber": imo}
        labs.append(_L("imo_number", imo, "$.vessel.vesselIMONumber", ok))
        labs.append(_L("vessel_name", v.name, "$.vessel.name"))
        doc["carrierExportVoyageNumber"] = s.voyage
        parties = []
        roles = [("OS", s.shipper), ("CN", s.consignee)]
        if r() < 0.6:
            roles.append(("N1", s.notify))
        if r() < 0.4:
            roles.append(("DDR", s.forwarder))
        for fn, q in roles:
            d = {"partyFunction": fn, "partyName": q.uname,
                 "address": {"street": q.ustreet, "postCode": q.postcode, "city": q.city.title(),
                             "countryCode": q.country}}
            labs.append(_L("party_name", q.uname, "$.documentParties[].partyName"))
            labs.append(_L("party_address", q.ustreet, "$.documentParties[].address.street"))
            if r() < 0.6:
                d["partyContactDetails"] = [{"name": q.uperson, "email": q.email, "phone": q.phone}]
                labs.append(_L("contact_person", q.uperson, "$.documentParties[].partyContactDetails[].name"))
                labs.append(_L("email", q.email, "$.documentParties[].partyContactDetails[].email"))
                labs.append(_L("phone", q.phone, "$.documentParties[].partyContactDetails[].phone"))
            if r() < 0.4:
                d["taxLegalReferences"] = [{"type": "EORI", "countryCode": q.country, "value": q.eori}]
                labs.append(_L("eori", q.eori, "$.documentParties[].taxLegalReferences[].value"))
            parties.append(d)
        doc["documentParties"] = parties
        ute = []
        for c in s.conts:
            e = {"equipment": {"equipmentReference": c.value, "ISOEquipmentCode": c.type,
                               "tareWeight": {"value": 2200 + self.ri(2000), "unit": "KGM"}},
                 "isShipperOwned": False,
                 "cargoGrossWeight": {"value": c.weight, "unit": "KGM"},
                 "seals": [{"number": c.seal, "source": "CAR"}]}
            labs.append(_L("container_number", c.value, "$.utilizedTransportEquipments[].equipment.equipmentReference", c.valid))
            labs.append(_L("seal_number", c.seal, "$.utilizedTransportEquipments[].seals[].number"))
            if c.temp is not None:
                e["activeReeferSettings"] = {"temperatureSetpoint": float(c.temp), "temperatureUnit": "CEL"}
            if r() < 0.15:
                e["shippingMarks"] = [self.ch(("Made in Brazil", "こんにちは 取扱注意", "Håndteres forsigtigt – fragile", "THIS SIDE UP"))]
            ute.append(e)
        doc["utilizedTransportEquipments"] = ute
        g = s.goods
        items = []
        for c in s.conts:
            ci = {"equipmentReference": c.value, "cargoGrossWeight": {"value": c.weight, "unit": "KGM"},
                  "outerPackaging": {"packageCode": "CT", "numberOfPackages": 10 + self.ri(900),
                                     "description": "Cartons"}}
            labs.append(_L("container_number", c.value, "$.consignmentItems[].cargoItems[].equipmentReference", c.valid))
            if g[2] is not None:
                ci["outerPackaging"]["dangerousGoods"] = [{"UNNumber": g[2][1], "imoClass": g[2][0],
                                                           "packingGroup": len(g[2][2]) or None}]
                labs.append(_L("un_number", g[2][1], "$.consignmentItems[].cargoItems[].outerPackaging.dangerousGoods[].UNNumber"))
            items.append(ci)
        doc["consignmentItems"] = [{"carrierBookingReference": s.booking, "descriptionOfGoods": [g[0].title()],
                                    "HSCodes": [g[1]], "cargoItems": items}]
        self.lab_book(labs, s, "$.consignmentItems[].carrierBookingReference")
        doc["shipmentLocations"] = [{"location": {"UNLocationCode": s.pol[0]}, "locationTypeCode": "POL"},
                                    {"location": {"UNLocationCode": s.pod[0]}, "locationTypeCode": "POD"}]
        opt = orjson.OPT_INDENT_2 if r() < 0.3 else 0
        return SynthMessage("json", "dcsa-booking", f"{s.carrier[1]}:{s.booking}".encode("ascii"),
                            orjson.dumps(doc, option=opt), self.labels(labs))


def generate(seed: int, n: int, formats: tuple[str, ...] = FORMATS,
             bad_fraction: float = 0.0) -> Iterator[SynthMessage]:
    """Yield ``n`` synthetic messages; deterministic for a given seed (see module doc)."""
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError("bad_fraction must be within [0, 1]")
    g = _Gen(seed, tuple(formats), bad_fraction)
    one = g.one
    for _ in range(n):
        yield one()


def write_files(messages: Iterable[SynthMessage], out_dir) -> dict:
    """Write one file per message under ``out_dir/<format>/`` and ``out_dir/labels.jsonl``.

    Returns counts: ``messages``, ``bytes``, ``labels``, ``bad`` and ``by_format``.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    made: set[str] = set()
    counts = {"messages": 0, "bytes": 0, "labels": 0, "bad": 0, "by_format": {}}
    by_fmt = counts["by_format"]
    with open(os.path.join(out_dir, "labels.jsonl"), "wb") as lf:
        for i, m in enumerate(messages):
            if m.format not in made:
                os.makedirs(os.path.join(out_dir, m.format), exist_ok=True)
                made.add(m.format)
            rel = f"{m.format}/{i:07d}_{m.msg_type}.{_EXT.get(m.format, 'bin')}"
            with open(os.path.join(out_dir, rel), "wb") as f:
                f.write(m.value)
            rec = {"file": rel, "format": m.format, "msg_type": m.msg_type,
                   "key": m.key.decode("latin-1"), "topic": TOPICS.get(m.format),
                   "labels": [asdict(lab) for lab in m.labels]}
            if m.expect_quarantine is not None:
                rec["expect_quarantine"] = m.expect_quarantine
            if m.egress:
                rec["egress"] = list(m.egress)
            lf.write(orjson.dumps(rec))
            lf.write(b"\n")
            counts["messages"] += 1
            counts["bytes"] += len(m.value)
            counts["labels"] += len(m.labels)
            counts["bad"] += m.expect_quarantine is not None
            by_fmt[m.format] = by_fmt.get(m.format, 0) + 1
    return counts


# --------------------------------------------------------------------------- labelled exposures
# Ground truth for `flowaudit findings` (flowaudit/detect/findings.py).  Every address below is an
# EXAMPLE from the RFC 1918 / RFC 5737 / RFC 2544 ranges; the operator watchlist file gives LOGINK
# an EXAMPLE documentation prefix (no source gives LOGINK addresses, domain-facts 6b).

SCENARIO_T0_MS = 1_772_344_800_000   # 2026-03-01T06:00:00Z, the synth base time
_SCENARIO_POLICY = """# EXAMPLE zone policy with an application inventory (flowaudit synth exposure scenario)
version = "scenario-1"
format = 1
[network]
internal = ["192.0.2.0/24", "198.51.100.0/24"]
[zones.tos]
kind = "tos"
cidrs = ["10.10.0.0/16"]
may_reach = ["it", "dmz", "crane_ot"]
[zones.crane_ot]
kind = "ot"
cidrs = ["10.20.0.0/16"]
may_reach = ["tos"]
[zones.it]
kind = "it"
cidrs = ["10.40.0.0/16"]
may_reach = ["internet", "dmz", "tos", "internal"]
[zones.dmz]
kind = "dmz"
cidrs = ["192.0.2.128/25"]
may_reach = ["internet", "tos"]
[[applications]]
name = "edi-gateway"
hosts = ["192.0.2.130"]
topics = ["port.edifact", "port.x12"]
[[applications]]
name = "tracking-gw"
hosts = ["10.40.1.20"]
topics = ["port.json"]
"""
_SCENARIO_WATCHLIST = """version = "scenario-ops-1"
[[indicators]]
platform = "LOGINK"
type = "cidr"
value = "203.0.113.0/28"
source = "operator: EXAMPLE documentation range (RFC 5737), not a LOGINK address"
[[indicators]]
platform = "LOGINK"
type = "edi_party"
value = "LOGINKHUB"
source = "operator: EXAMPLE interchange recipient id"
"""


@dataclass(frozen=True)
class Exposure:
    """One labelled exposure: the finding `flowaudit findings` must report, and nothing else."""
    platform: str
    rule: str
    entity: str            # host address, app:NAME or topic:NAME
    correlation: str       # message_borne | flow_borne | zone_policy
    classes: frozenset     # data classes placed where the finding must see them
    severity: str          # the level under the shipped schemas/severity.toml
    note: str = ""


@dataclass
class ExposureScenario:
    policy_toml: str       # zones + [[applications]] inventory
    watchlist_toml: str    # an operator watchlist file (EXAMPLE prefix and EDI recipient for LOGINK)
    messages: list         # (topic, SynthMessage, ts_ms)
    flows: list            # (src, dst, src_port, dst_port, protocol, bytes, first_ns, sampling)
    dns: list              # Zeek dns.log JSON lines
    exposures: list        # Exposure
    window_ns: int = 3_600_000_000_000

    def flow_arrays(self) -> dict:
        """The flows in the NetFlow decoder's array contract (flowaudit.detect.egress.FLOW_FIELDS)."""
        import numpy as np

        from .kernels.ipset import keys_of

        f = self.flows
        sh, sl = keys_of([r[0] for r in f])
        dh, dl = keys_of([r[1] for r in f])
        return {"src_hi": sh, "src_lo": sl, "dst_hi": dh, "dst_lo": dl,
                "src_port": np.array([r[2] for r in f], np.uint16), "dst_port": np.array([r[3] for r in f], np.uint16),
                "protocol": np.array([r[4] for r in f], np.uint8), "bytes": np.array([r[5] for r in f], np.uint64),
                "packets": np.array([max(1, r[5] // 1000) for r in f], np.uint64),
                "first_ns": np.array([r[6] for r in f], np.int64),
                "sampling_interval": np.array([r[7] for r in f], np.uint32)}


def exposure_scenario(seed: int = 8, background: int = 1500, spacing_ms: int = 2000) -> ExposureScenario:
    """Background port traffic (one message every ``spacing_ms`` of event time from 06:00:05Z) plus
    labelled exposures, all in the hour from 06:00Z with the defaults.

    Exposures: LOGINK queries (container, B/L, customs references) from the tracking gateway's
    topic, LOGINK waybills with parties on port.xml, COPRARs addressed to a watchlisted EDI
    recipient, the EDI gateway's flows to a LOGINK prefix (inferred from its topics), an office host
    reaching a LOGINK name through DNS (no inventory: no classes), RDP into a crane, a crane PLC
    to the internet, an office host on NEAL-NET (informational), a DMZ host into the office zone.
    Negative controls: the same hosts to allowed partners, look-alike names (notlogink.cn,
    logink.cn.example.net, "LoginKit"), a crane talking to the TOS.
    """
    g = _Gen(seed, FORMATS, 0.0)
    t0 = SCENARIO_T0_MS
    msgs: list = []
    for i in range(background):
        m = g.one()
        msgs.append((TOPICS[m.format], m, t0 + 5_000 + spacing_ms * i))
    extra = [g._logink_track() for _ in range(2)] + [g._logink_container() for _ in range(4)]
    extra += [g._logink_waybill() for _ in range(3)] + [g._coprar_to("LOGINKHUB") for _ in range(2)]
    extra.append(SynthMessage("json", "lookalike", b"lookalike:1",
                              b'{"app":"LoginKit","site":"notlogink.cn","mirror":"logink.cn.example.net"}', ()))
    for k, m in enumerate(extra):
        msgs.append((TOPICS[m.format], m, t0 + 2_400_000 + 10_000 * k))
    ns = 1_000_000

    def at(minute):
        return (t0 + minute * 60_000) * ns

    flows = [("192.0.2.130", "203.0.113.5", 40001, 443, 6, 80_000, at(30), 10),
             ("192.0.2.130", "203.0.113.5", 40002, 443, 6, 80_000, at(31), 10),
             ("192.0.2.130", "203.0.113.5", 40003, 443, 6, 80_000, at(32), 10),
             ("192.0.2.130", "203.0.113.100", 40004, 443, 6, 90_000, at(33), 10),   # allowed partner
             ("10.40.1.5", "198.18.0.9", 50001, 443, 6, 40_000, at(34), 1),
             ("10.40.1.5", "198.18.0.11", 50002, 443, 6, 40_000, at(34), 1),        # notlogink.cn
             ("10.40.1.5", "198.18.0.12", 50003, 443, 6, 40_000, at(34), 1),        # logink.cn.example.net
             ("10.40.1.5", "10.20.1.10", 50004, 3389, 6, 300_000, at(35), 1),       # RDP into a crane
             ("10.20.1.11", "203.0.113.200", 50005, 5938, 6, 12_000, at(36), 1),    # crane PLC to the internet
             ("10.20.1.10", "10.10.0.5", 50006, 443, 6, 5_000, at(36), 1),          # crane to the TOS: allowed
             ("10.40.1.7", "198.18.0.30", 50007, 443, 6, 7_000, at(37), 1),         # NEAL-NET
             ("10.40.1.7", "203.0.113.150", 50008, 443, 6, 7_000, at(37), 1),       # office to the internet
             ("192.0.2.140", "10.40.1.9", 50009, 8080, 6, 3_000, at(38), 1)]        # DMZ into the office

    def dns(name, addr, client, minute):
        return json.dumps({"ts": (t0 + minute * 60_000) / 1000, "id.orig_h": client, "query": name,
                           "qtype_name": "A", "rcode_name": "NOERROR", "answers": [addr],
                           "TTLs": [3600.0]}).encode()

    dns_lines = [dns("gateway.logink.cn", "198.18.0.9", "10.40.1.5", 20),
                 dns("notlogink.cn", "198.18.0.11", "10.40.1.5", 20),
                 dns("logink.cn.example.net", "198.18.0.12", "10.40.1.5", 20),
                 dns("english.neal-net.net", "198.18.0.30", "10.40.1.7", 20)]

    def classes(pred):
        return frozenset(lab.data_class for topic, m, _ in msgs if pred(topic, m)
                         for lab in m.labels if not lab.lookalike)

    expo = [
        Exposure("LOGINK", "watchlist", "app:tracking-gw", "message_borne",
                 classes(lambda t, m: t == TOPICS["json"] and "LOGINK" in m.egress), "critical",
                 "LOGINK API queries (customs, B/L, containers) on the tracking gateway's topic"),
        Exposure("LOGINK", "watchlist", f"topic:{TOPICS['xml']}", "message_borne",
                 frozenset({"party_name", "party_address"}), "high", "LOGINK waybills with consignor and consignee"),
        Exposure("LOGINK", "watchlist", "app:edi-gateway", "message_borne",
                 frozenset({"container_number", "imo_number", "vessel_name"}), "high",
                 "COPRARs addressed to a watchlisted EDI recipient"),
        Exposure("LOGINK", "watchlist", "192.0.2.130", "flow_borne",
                 classes(lambda t, m: t in (TOPICS["edifact"], TOPICS["x12"])), "high",
                 "the EDI gateway's flows to a LOGINK prefix: what it handles, inferred"),
        Exposure("LOGINK", "watchlist", "10.40.1.5", "flow_borne", frozenset(), "medium",
                 "an office host reaches a LOGINK name (DNS-attributed); not in the inventory"),
        Exposure("policy", "remote_access:rdp", "10.20.1.10", "zone_policy", frozenset(), "high",
                 "RDP from the office into a crane"),
        Exposure("policy", "ot_zone_to_internet", "10.20.1.11", "zone_policy", frozenset(), "high",
                 "a crane PLC talks to the internet on TeamViewer's port"),
        Exposure("NEAL-NET", "watchlist", "10.40.1.7", "flow_borne", frozenset(), "info",
                 "NEAL-NET is informational in the watchlist"),
        Exposure("policy", "zone_not_allowed", "192.0.2.140", "zone_policy", frozenset(), "low",
                 "a DMZ host opens a flow into the office zone"),
    ]
    return ExposureScenario(_SCENARIO_POLICY, _SCENARIO_WATCHLIST, msgs, flows, dns_lines, expo)


if __name__ == "__main__":  # pragma: no cover - quick manual check
    import sys
    import time

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    t0 = time.perf_counter()
    tot = 0
    for m in generate(1, n):
        tot += len(m.value)
    dt_s = time.perf_counter() - t0
    print(json.dumps({"n": n, "seconds": round(dt_s, 3), "msg_per_s": round(n / dt_s),
                      "MB_per_s": round(tot / dt_s / 1e6, 2), "avg_bytes": round(tot / n)}))
