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
           "exposure_scenario", "write_dump", "dump_schemas", "DUMP_LAYOUTS"]

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


# --------------------------------------------------------------------------- archives (dumps)
# `flowaudit synth --dump DIR` / write_dump(): the same labelled traffic as Parquet archives, in the
# layouts a port's history is found in, for batch audits (`flowaudit audit`) and their benchmark.
#
#   DIR/flat/topic=<topic>/<topic>+<partition>+<start offset>.parquet
#        Kafka Connect S3/GCS sink style: Hive-partitioned by topic, one Kafka partition per file
#        (named as the sink names them: topic+partition+start offset, zero-padded to 10 digits),
#        the Kafka coordinates also as columns (dump_schemas()['flat'])
#   DIR/redpanda/<topic>/data/<partition>-<uuid>.parquet
#        a Redpanda Iceberg topic in key_value mode, data files only (dump_schemas()['redpanda'])
#   DIR/flows/flows-<k>.parquet          flowaudit's own flows dataset (datasets.FLOWS)
#   DIR/goflow2/goflow2-<k>.parquet      the same flows under goflow2's FlowMessage names (['goflow2'])
#   DIR/dns/dns.log                      Zeek dns.log JSON lines (the scenario's DNS attribution)
#   DIR/policy.toml, DIR/watchlist/      the zone policy + inventory and the operator watchlist the labels assume
#   DIR/labels.json                      parameters, files, counts, exposures per findings window, controls
#   DIR/labels/messages.parquet          one row per message (['label_messages'])
#   DIR/labels/values.parquet            one row per labelled value (['label_values'])
#
# Files rotate by record time only (`files` slices of the span), so the same arguments write the
# same bytes; everything is generated and written in one pass with bounded buffers.

DUMP_FORMAT = "flowaudit-synth-dump/1"
DUMP_LAYOUTS = ("flat", "redpanda")
DUMP_START_MS = SCENARIO_T0_MS - 3_600_000   # 2026-03-01T05:00:00Z: the scenario keeps its 06:00Z hour
DUMP_WINDOW_S = 300                          # the findings window the labels are cut into (flowaudit findings' default)
_HOUR_MS = 3_600_000

# What each of exposure_scenario()'s flows is: the labelled exposure (platform, rule, entity) it
# makes, or a negative control that must not become a finding.  Keyed by (src, dst, dst_port);
# write_dump() fails loudly when the scenario has a flow this table does not name.
_SCENARIO_FLOW_ROLES = {
    ("192.0.2.130", "203.0.113.5", 443): ("LOGINK", "watchlist", "192.0.2.130"),
    ("192.0.2.130", "203.0.113.100", 443): "the EDI gateway to an allowed partner outside the LOGINK prefix",
    ("10.40.1.5", "198.18.0.9", 443): ("LOGINK", "watchlist", "10.40.1.5"),
    ("10.40.1.5", "198.18.0.11", 443): "an office host to notlogink.cn (a look-alike name)",
    ("10.40.1.5", "198.18.0.12", 443): "an office host to logink.cn.example.net (a look-alike name)",
    ("10.40.1.5", "10.20.1.10", 3389): ("policy", "remote_access:rdp", "10.20.1.10"),
    ("10.20.1.11", "203.0.113.200", 5938): ("policy", "ot_zone_to_internet", "10.20.1.11"),
    ("10.20.1.10", "10.10.0.5", 443): "a crane talking to the TOS (allowed)",
    ("10.40.1.7", "198.18.0.30", 443): ("NEAL-NET", "watchlist", "10.40.1.7"),
    ("10.40.1.7", "203.0.113.150", 443): "an office host to the internet (allowed)",
    ("192.0.2.140", "10.40.1.9", 8080): ("policy", "zone_not_allowed", "192.0.2.140"),
}
# Background flows: (weight, source pool, destination pool, destination ports, sampling interval).
# Every one is allowed by the scenario's zone policy, on a port no service rule claims, to an
# address no watchlist entry or DNS answer of a watchlisted name covers: none may become a finding.
_BG_POOLS = {
    "it": [f"10.40.1.{i}" for i in range(2, 61)],
    "tos": [f"10.10.0.{i}" for i in range(5, 13)],
    "crane": [f"10.20.1.{i}" for i in range(10, 31)],
    "dmz": [f"192.0.2.{i}" for i in range(130, 140)],
    "web": [f"198.18.1.{i}" for i in range(1, 41)],         # cdn<i>.cloud.example.net
    "partner": [f"203.0.113.{i}" for i in range(64, 128)],  # edi<i>.partner.example
}
_BG_FLOWS = ((0.30, "it", "web", (443,), 1), (0.12, "it", "tos", (443, 8443), 1), (0.08, "it", "dmz", (443,), 1),
             (0.12, "tos", "crane", (443,), 1), (0.12, "crane", "tos", (443, 8443), 1),
             (0.08, "tos", "dmz", (443,), 1), (0.18, "dmz", "partner", (443,), 10))
_EXPORTER = {1: "10.255.0.1", 10: "192.0.2.129"}   # by sampling interval: core router (1:1), DMZ edge (1:10)


def dump_schemas() -> dict:
    """The Arrow schemas of the archive's Parquet files: ``flat``, ``redpanda``, ``goflow2``,
    ``label_messages``, ``label_values`` (the flow archive is datasets.FLOWS).  pyarrow is imported
    here, on first use: the generator itself does not need it."""
    import pyarrow as pa

    def fid(f, i):   # Iceberg data files carry a field id on every column (Parquet field_id)
        return f.with_metadata({b"PARQUET:field_id": str(i).encode()})

    flat = pa.schema([
        pa.field("topic", pa.string(), nullable=False),          # also the Hive partition (topic=<topic>/)
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),   # Kafka record time (CreateTime)
        pa.field("key", pa.binary(), nullable=True),
        pa.field("value", pa.binary(), nullable=True),
    ], metadata={b"flowaudit.synth": DUMP_FORMAT.encode(), b"flowaudit.layout": b"flat"})
    # Redpanda Iceberg topics, redpanda.iceberg.mode=key_value, as documented for Redpanda v25.3+
    # (docs.redpanda.com, manage/iceberg/specify-iceberg-schema "How Iceberg modes translate to table
    # format"; upgrade/iceberg-schema-changes-and-migration-guide): redpanda struct<partition: integer,
    # timestamp: timestamptz, offset: long, headers: array<struct<key: string, value: binary>>, key: binary,
    # timestamp_type: integer>, value binary.  Iceberg timestamptz is Parquet timestamp[us, UTC].  Before
    # v25.3 timestamp had no zone and headers.key was binary.  The field ids are ours (Iceberg's
    # breadth-first numbering); Redpanda's own ids are not documented.
    header = pa.struct([fid(pa.field("key", pa.string()), 10), fid(pa.field("value", pa.binary()), 11)])
    meta = pa.struct([
        fid(pa.field("partition", pa.int32(), nullable=False), 3),
        fid(pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False), 4),
        fid(pa.field("offset", pa.int64(), nullable=False), 5),
        fid(pa.field("headers", pa.list_(fid(pa.field("element", header), 9))), 6),
        fid(pa.field("key", pa.binary()), 7),
        fid(pa.field("timestamp_type", pa.int32()), 8),          # 0 = CreateTime
    ])
    redpanda = pa.schema([fid(pa.field("redpanda", meta, nullable=False), 1), fid(pa.field("value", pa.binary()), 2)],
                         metadata={b"flowaudit.synth": DUMP_FORMAT.encode(), b"flowaudit.layout": b"redpanda"})
    # goflow2's FlowMessage (netsampler/goflow2 pb/flow.proto): its field names and proto3 types
    # (uint32/uint64; addresses as bytes, 4 for IPv4 and 16 for IPv6), the fields a flow audit
    # uses; the FlowType enum as its name, as goflow2's JSON renders it.
    u32, u64 = pa.uint32(), pa.uint64()
    goflow2 = pa.schema([
        ("type", pa.string()), ("time_received_ns", u64), ("sequence_num", u32), ("sampling_rate", u64),
        ("sampler_address", pa.binary()), ("time_flow_start_ns", u64), ("time_flow_end_ns", u64),
        ("bytes", u64), ("packets", u64), ("src_addr", pa.binary()), ("dst_addr", pa.binary()),
        ("etype", u32), ("proto", u32), ("src_port", u32), ("dst_port", u32), ("in_if", u32), ("out_if", u32),
        ("tcp_flags", u32), ("observation_domain_id", u32),
    ], metadata={b"flowaudit.synth": DUMP_FORMAT.encode(), b"flowaudit.layout": b"goflow2"})
    label_messages = pa.schema([
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("origin", pa.string()),        # background (generate(seed, n)) or scenario (exposure_scenario)
        ("seq", pa.int64()),            # index in generate(seed, n), or in exposure_scenario(seed, 0).messages
        ("format", pa.string()), ("msg_type", pa.string()), ("key", pa.binary()), ("bytes", pa.int32()),
        ("expect_quarantine", pa.string()),   # the quarantine reason of a deliberately broken message, else null
        ("egress", pa.list_(pa.string())),    # platforms the message reaches (watchlist ground truth)
        ("n_labels", pa.int32()),
    ], metadata={b"flowaudit.synth": DUMP_FORMAT.encode()})
    label_values = pa.schema([
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("data_class", pa.string()), ("value", pa.string()), ("valid", pa.bool_()), ("lookalike", pa.bool_()),
        ("location", pa.string()),
    ], metadata={b"flowaudit.synth": DUMP_FORMAT.encode()})
    return {"flat": flat, "redpanda": redpanda, "goflow2": goflow2, "label_messages": label_messages,
            "label_values": label_values}


def _start_ms(start) -> int:
    """``start`` (None, ms since the epoch, a datetime, or ISO 8601 text; UTC unless it says) -> ms."""
    ms = _start_ms_of(start)
    if not 0 <= ms < _LAST_START_MS:      # record times are int64 ns and hour folders dates after 1970
        raise ValueError(f"start: {_iso_ms(ms) if 0 <= ms < 253402300799000 else ms} is outside "
                         f"1970-01-01 .. {_iso_ms(_LAST_START_MS)[:10]}")
    return ms


_LAST_START_MS = 7_258_118_400_000       # 2200-01-01: ns times to spare for any --hours


def _start_ms_of(start) -> int:
    if start is None:
        return DUMP_START_MS
    if isinstance(start, bool):
        raise ValueError("start: a time is required")
    if isinstance(start, int):
        return start
    if isinstance(start, str):
        try:
            start = _dt.datetime.fromisoformat(start.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"start: not an ISO 8601 time: {start!r}") from None
    if not isinstance(start, _dt.datetime):
        raise ValueError(f"start: not a time: {start!r}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=_dt.timezone.utc)
    return int(start.timestamp() * 1000)


def _iso_ms(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _partition_of(key: bytes, partitions: int) -> int:
    """FNV-1a of the key, as flowaudit.demo.hash_partition: the partition the demo produces it to."""
    h = 0xCBF29CE484222325
    for c in key:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % partitions


def _file_uuid(*parts) -> str:
    """A UUID-shaped file name part derived from ``parts`` (Redpanda names data files by UUID)."""
    import hashlib
    import uuid

    return str(uuid.UUID(bytes=hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:16], version=4))


class _Rotating:
    """The files of one stream of rows (a topic partition, or the flow archive) in one or more
    layouts: rows are buffered into row groups of ``rg_rows`` and a new file starts at every time
    slice.  ``tables(cols)`` turns the buffered columns into one table per layout; ``paths(slice,
    first_row)`` names the files; ``done`` receives a record per closed file."""

    def __init__(self, names, rg_rows, tables, paths, options, done):
        self.names, self.rg_rows = tuple(names), rg_rows
        self.tables, self.paths, self.options, self.done = tables, paths, options, done
        self.cols = {n: [] for n in names}
        self.slice = None
        self.writers = None
        self.stats = None

    def add(self, slice_, row: tuple) -> None:
        if slice_ != self.slice:
            self.close()
            self.slice = slice_
        for c, v in zip(self.cols.values(), row):
            c.append(v)
        if len(self.cols[self.names[0]]) >= self.rg_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow.parquet as pq

        cols = self.cols
        n = len(cols[self.names[0]])
        if not n:
            return
        tables = self.tables(cols)
        if self.writers is None:
            paths = self.paths(self.slice, {k: v[0] for k, v in cols.items()})
            self.writers = []
            for (layout, path), t in zip(paths, tables):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.writers.append((layout, path, pq.ParquetWriter(path, t.schema, **self.options[layout])))
            self.stats = {"rows": 0, "row_groups": 0, "first": {k: v[0] for k, v in cols.items()}}
        for (_, _, w), t in zip(self.writers, tables):
            w.write_table(t, row_group_size=n)
        self.stats["rows"] += n
        self.stats["row_groups"] += 1
        self.stats["last"] = {k: v[-1] for k, v in cols.items()}
        self.cols = {k: [] for k in self.names}

    def close(self) -> None:
        self.flush()
        if self.writers is not None:
            for layout, path, w in self.writers:
                w.close()
                self.done(layout, path, self.stats)
        self.writers = None



class _Dump:
    """One archive being written (write_dump() validates, stages and publishes it)."""

    def __init__(self, root: str, n: int, seed: int, files: int, rg_rows: int, layouts: tuple, start_ms: int,
                 span_ms: int, partitions: int, bad_fraction: float, flows_per_message: float):
        import tomllib

        from .detect.inventory import from_dict as inventory_from_dict

        self.root, self.n, self.seed, self.files, self.rg_rows = root, n, seed, files, rg_rows
        self.layouts, self.start_ms, self.span_ms, self.partitions = layouts, start_ms, span_ms, partitions
        self.bad_fraction, self.flows_per_message = bad_fraction, flows_per_message
        self.scen_t0_ms = start_ms - start_ms % _HOUR_MS + _HOUR_MS   # the first whole hour after the start
        self.shift_ms = self.scen_t0_ms - SCENARIO_T0_MS
        self.sc = exposure_scenario(seed, background=0)
        self.inventory = inventory_from_dict(tomllib.loads(self.sc.policy_toml))
        sch = dump_schemas()
        self.flat_schema, self.rp_schema, self.gf_schema = sch["flat"], sch["redpanda"], sch["goflow2"]
        self.lm_schema, self.lv_schema = sch["label_messages"], sch["label_values"]
        self.written: dict[str, list] = {k: [] for k in ("flat", "redpanda", "flows", "goflow2")}
        self.window_ns = DUMP_WINDOW_S * 1_000_000_000
        # the scenario's flows, shifted to the dump's scenario hour, with their roles
        self.scen_flows = []
        for f in self.sc.flows:
            role = _SCENARIO_FLOW_ROLES.get((f[0], f[1], f[3]))
            if role is None:
                raise AssertionError(f"synth: exposure_scenario flow {f[:4]} has no role in _SCENARIO_FLOW_ROLES")
            self.scen_flows.append((f[:6] + (f[6] + self.shift_ms * 1_000_000,) + f[7:], role))
        # flow-borne exposures of inventory hosts: their classes are what the host's topics carry in the window
        self.infer: dict[tuple, list] = {}      # (topic, window start ns) -> exposure keys
        self.infer_classes: dict[tuple, set] = {}
        for f, role in self.scen_flows:
            if isinstance(role, tuple):
                w = f[6] // self.window_ns * self.window_ns
                for app in self.inventory.apps_for_host(role[2]):
                    for t in app.topics:
                        if role not in self.infer.setdefault((t, w), []):
                            self.infer[(t, w)].append(role)
                    self.infer_classes.setdefault((role, w), set())
        self.msg_exposures: dict[tuple, list] = {}   # (platform, rule, entity) -> [(topic, partition, offset, ts_ms, classes)]
        self.controls_msgs: list = []

    # ------------------------------------------------------------------ messages
    def _messages(self):
        """(ts_ms, origin, seq, message) in record-time order: the background spread evenly over the
        span, the scenario's messages at their own times (shifted to the dump's scenario hour)."""
        import heapq

        n, t0, span = self.n, self.start_ms, self.span_ms
        bg = ((t0 + i * span // n, 0, i, m) for i, m in enumerate(generate(self.seed, n, bad_fraction=self.bad_fraction)))
        scen = sorted(((ts + self.shift_ms, 1, k, m) for k, (_, m, ts) in enumerate(self.sc.messages)),
                      key=lambda r: r[:3])
        return heapq.merge(bg, scen, key=lambda r: r[:3])

    def _message_stream(self, topic: str, part: int) -> _Rotating:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat_schema, rp_schema = self.flat_schema, self.rp_schema
        rp_fields = list(rp_schema.field("redpanda").type)
        headers_type = rp_schema.field("redpanda").type.field("headers").type
        layouts = self.layouts

        def tables(cols):
            n = len(cols["offset"])
            off = pa.array(cols["offset"], pa.int64())
            key = pa.array(cols["key"], pa.binary())
            val = pa.array(cols["value"], pa.binary())
            parts = pa.array([part] * n, pa.int32())
            out = []
            for layout in layouts:
                if layout == "flat":
                    ts = pa.array(cols["timestamp"], pa.timestamp("ms", tz="UTC"))
                    out.append(pa.Table.from_arrays([pa.array([topic] * n, pa.string()), parts, off, ts, key, val],
                                                    schema=flat_schema))
                else:
                    ts = pa.array([t * 1000 for t in cols["timestamp"]], pa.timestamp("us", tz="UTC"))
                    meta = pa.StructArray.from_arrays(
                        [parts, ts, off, pa.array([[]] * n, headers_type), key, pa.array([0] * n, pa.int32())],
                        fields=rp_fields)
                    out.append(pa.Table.from_arrays([meta, val], schema=rp_schema))
            return out

        def paths(_slice, first):
            out = []
            for layout in layouts:
                if layout == "flat":
                    out.append((layout, os.path.join(self.root, "flat", f"topic={topic}",
                                                     f"{topic}+{part}+{first['offset']:010d}.parquet")))
                else:
                    name = f"{part}-{_file_uuid(self.seed, topic, part, first['offset'])}.parquet"
                    out.append((layout, os.path.join(self.root, "redpanda", topic, "data", name)))
            return out

        options = {
            "flat": dict(compression="zstd", use_dictionary=["topic"],
                         write_statistics=["topic", "partition", "offset", "timestamp"],
                         sorting_columns=[pq.SortingColumn(1), pq.SortingColumn(2)]),
            "redpanda": dict(compression="zstd", use_dictionary=False,
                             write_statistics=["redpanda.partition", "redpanda.offset", "redpanda.timestamp"]),
        }

        def done(layout, path, st):
            self.written[layout].append({
                "path": os.path.relpath(path, self.root), "topic": topic, "partition": part, "rows": st["rows"],
                "row_groups": st["row_groups"], "first_offset": st["first"]["offset"],
                "last_offset": st["last"]["offset"], "first_timestamp_ms": st["first"]["timestamp"],
                "last_timestamp_ms": st["last"]["timestamp"], "bytes": os.path.getsize(path)})

        return _Rotating(("offset", "timestamp", "key", "value"), self.rg_rows, tables, paths, options, done)

    def write_messages(self) -> dict:
        import pyarrow as pa

        P, files, start, span = self.partitions, self.files, self.start_ms, self.span_ms
        lm_schema, lv_schema = self.lm_schema, self.lv_schema
        label_dir = os.path.join(self.root, "labels")

        def label_tables(cols):
            return [pa.Table.from_pydict(cols, schema=lm_schema)]

        def value_tables(cols):
            return [pa.Table.from_pydict(cols, schema=lv_schema)]

        lm = _Rotating(lm_schema.names, 65_536, label_tables,
                       lambda s, f: [("labels", os.path.join(label_dir, "messages.parquet"))],
                       {"labels": dict(compression="zstd")}, lambda *a: None)
        lv = _Rotating(lv_schema.names, 262_144, value_tables,
                       lambda s, f: [("labels", os.path.join(label_dir, "values.parquet"))],
                       {"labels": dict(compression="zstd")}, lambda *a: None)
        streams: dict[tuple, _Rotating] = {}
        next_off: dict[tuple, int] = {}
        topics: dict[str, dict] = {}
        quarantine: dict[str, int] = {}
        egress: dict[str, int] = {}
        n_labels = 0
        app_of = {}
        for t in TOPICS.values():
            apps = self.inventory.apps_for_topic(t)
            app_of[t] = f"app:{apps[0].name}" if apps else f"topic:{t}"
        W = self.window_ns
        for ts, origin, seq, m in self._messages():
            topic = TOPICS[m.format]
            part = _partition_of(m.key, P)
            k = (topic, part)
            off = next_off.get(k, 0)
            next_off[k] = off + 1
            s = streams.get(k)
            if s is None:
                s = streams[k] = self._message_stream(topic, part)
            s.add(min(files - 1, (ts - start) * files // span), (off, ts, m.key, m.value))
            # ground truth
            lm.add(0, (topic, part, off, ts, "scenario" if origin else "background", seq, m.format, m.msg_type,
                       m.key, len(m.value), m.expect_quarantine, list(m.egress), len(m.labels)))
            for lab in m.labels:
                lv.add(0, (topic, part, off, lab.data_class, lab.value, lab.valid, lab.lookalike, lab.location))
            n_labels += len(m.labels)
            st = topics.setdefault(topic, {"messages": 0, "bytes": 0, "partitions": {}})
            st["messages"] += 1
            st["bytes"] += len(m.value)
            ps = st["partitions"].setdefault(str(part), {"messages": 0, "first_offset": off, "last_offset": off,
                                                         "first_timestamp_ms": ts, "last_timestamp_ms": ts})
            ps["messages"] += 1
            ps["last_offset"], ps["last_timestamp_ms"] = off, ts
            if m.expect_quarantine is not None:
                quarantine[m.expect_quarantine] = quarantine.get(m.expect_quarantine, 0) + 1
            classes = None
            if m.egress:
                classes = {lab.data_class for lab in m.labels if not lab.lookalike}
                for platform in m.egress:
                    egress[platform] = egress.get(platform, 0) + 1
                    self.msg_exposures.setdefault((platform, "watchlist", app_of[topic]), []).append(
                        (topic, part, off, ts, classes))
            if origin and m.msg_type == "lookalike":
                self.controls_msgs.append((topic, part, off, ts))
            for key in self.infer.get((topic, ts * 1_000_000 // W * W), ()):
                if classes is None:
                    classes = {lab.data_class for lab in m.labels if not lab.lookalike}
                self.infer_classes[(key, ts * 1_000_000 // W * W)] |= classes
        for s in streams.values():
            s.close()
        lm.close()
        lv.close()
        for layout in self.layouts:
            self.written[layout].sort(key=lambda r: (r["topic"], r["partition"], r["first_offset"]))
        total = sum(t["messages"] for t in topics.values())
        return {"messages": total, "background": self.n, "scenario": total - self.n,
                "bytes": sum(t["bytes"] for t in topics.values()), "labels": n_labels,
                "quarantine": dict(sorted(quarantine.items())), "egress": dict(sorted(egress.items())),
                "topics": {t: topics[t] for t in sorted(topics)}}

    # ------------------------------------------------------------------ flows
    def _flows(self):
        """(first_ns, origin, seq, (src, dst, src_port, dst_port, protocol, bytes, first_ns, sampling)) in
        flow-start order: the scenario's flows and the background's."""
        import heapq

        rng = random.Random(f"flowaudit-synth-dump-flows-{self.seed}")
        nbg = int(round(self.n * self.flows_per_message))
        t0, span = self.start_ms * 1_000_000, self.span_ms * 1_000_000
        weights = [k[0] for k in _BG_FLOWS]

        def bg():
            for j in range(nbg):
                _, src, dst, ports, sampling = rng.choices(_BG_FLOWS, weights)[0]
                size = min(50_000_000, 60 + int(rng.lognormvariate(8.5, 1.7)))
                yield (t0 + j * span // nbg, 0, j, (rng.choice(_BG_POOLS[src]), rng.choice(_BG_POOLS[dst]),
                                                    rng.randrange(32768, 61000), rng.choice(ports), 6, size,
                                                    t0 + j * span // nbg, sampling))

        scen = sorted(((f[6], 1, k, f) for k, (f, _) in enumerate(self.scen_flows)), key=lambda r: r[:3])
        return heapq.merge(bg(), scen, key=lambda r: r[:3])

    def write_flows(self) -> dict:
        import ipaddress

        import pyarrow as pa

        from .datasets import FLOWS, SCHEMA_VERSION

        gf_schema = self.gf_schema
        root = self.root

        def dict_of(values):
            return pa.array(values, pa.string()).dictionary_encode()

        def tables(c):
            n = len(c["offset"])
            u64 = pa.uint64()
            flows = pa.Table.from_arrays([
                dict_of(["netflow"] * n), pa.array([0] * n, pa.int32()), pa.array(c["offset"], pa.int64()),
                pa.array(c["ts_ms"], pa.int64()), dict_of(c["exporter"]), pa.array([10] * n, pa.uint8()),
                pa.array([1] * n, pa.uint32()), pa.array([256] * n, pa.uint16()), pa.array(c["src"], pa.string()),
                pa.array(c["dst"], pa.string()), pa.array(c["sport"], pa.uint16()), pa.array(c["dport"], pa.uint16()),
                pa.array(c["proto"], pa.uint8()), pa.array(c["tcp_flags"], pa.uint8()), pa.array(c["bytes"], u64),
                pa.array(c["packets"], u64), pa.nulls(n, u64), pa.nulls(n, u64), pa.array(c["first_ns"], pa.int64()),
                pa.array(c["last_ns"], pa.int64()), pa.array(c["sampling"], pa.uint32()), pa.array([4] * n, pa.uint8()),
                pa.array([3] * n, pa.uint8()), dict_of([SCHEMA_VERSION] * n)], schema=FLOWS)
            packed = {a: ipaddress.ip_address(a).packed for a in set(c["src"]) | set(c["dst"]) | set(c["exporter"])}
            goflow = pa.Table.from_arrays([
                pa.array(["IPFIX"] * n, pa.string()), pa.array([t * 1_000_000 for t in c["ts_ms"]], u64),
                pa.array([o & 0xFFFFFFFF for o in c["offset"]], pa.uint32()), pa.array(c["sampling"], u64),
                pa.array([packed[a] for a in c["exporter"]], pa.binary()), pa.array(c["first_ns"], u64),
                pa.array(c["last_ns"], u64), pa.array(c["bytes"], u64), pa.array(c["packets"], u64),
                pa.array([packed[a] for a in c["src"]], pa.binary()), pa.array([packed[a] for a in c["dst"]], pa.binary()),
                pa.array([0x0800] * n, pa.uint32()), pa.array(c["proto"], pa.uint32()), pa.array(c["sport"], pa.uint32()),
                pa.array(c["dport"], pa.uint32()), pa.array([0] * n, pa.uint32()), pa.array([0] * n, pa.uint32()),
                pa.array(c["tcp_flags"], pa.uint32()), pa.array([1] * n, pa.uint32())], schema=gf_schema)
            return [flows, goflow]

        def paths(s, _first):
            return [("flows", os.path.join(root, "flows", f"flows-{s:04d}.parquet")),
                    ("goflow2", os.path.join(root, "goflow2", f"goflow2-{s:04d}.parquet"))]

        def done(layout, path, st):
            self.written[layout].append({
                "path": os.path.relpath(path, root), "rows": st["rows"], "row_groups": st["row_groups"],
                "first_offset": st["first"]["offset"], "last_offset": st["last"]["offset"],
                "first_start_ns": st["first"]["first_ns"], "last_start_ns": st["last"]["first_ns"],
                "bytes": os.path.getsize(path)})

        names = ("offset", "ts_ms", "exporter", "src", "dst", "sport", "dport", "proto", "tcp_flags", "bytes",
                 "packets", "first_ns", "last_ns", "sampling")
        out = _Rotating(names, self.rg_rows, tables, paths,
                        {"flows": dict(compression="zstd"), "goflow2": dict(compression="zstd")}, done)
        files, start_ns, span_ns = self.files, self.start_ms * 1_000_000, self.span_ms * 1_000_000
        self.flow_refs: dict = {}        # role -> [flow record dicts]
        n = 0
        for first_ns, origin, seq, f in self._flows():
            src, dst, sport, dport, proto, size, _, sampling = f
            last_ns = first_ns + (20 if origin else 1 + size % 120) * 1_000_000_000
            ts_ms = last_ns // 1_000_000
            out.add(min(files - 1, max(0, (first_ns - start_ns) * files // span_ns)),
                    (n, ts_ms, _EXPORTER[sampling], src, dst, sport, dport, proto, 0x1B, size, max(1, size // 1000),
                     first_ns, last_ns, sampling))
            if origin:
                role = self.scen_flows[seq][1]
                self.flow_refs.setdefault(role, []).append({
                    "offset": n, "src_addr": src, "dst_addr": dst, "src_port": sport, "dst_port": dport,
                    "protocol": proto, "bytes": size, "sampling_interval": sampling, "first_ns": first_ns})
            n += 1
        out.close()
        return {"flows": n, "scenario_flows": len(self.scen_flows)}

    # ------------------------------------------------------------------ DNS, policy
    def write_dns(self) -> int:
        """Zeek dns.log JSON lines: the scenario's answers (shifted) and hourly answers for the
        background's destination names, in time order."""
        rng = random.Random(f"flowaudit-synth-dump-dns-{self.seed}")
        lines = []
        for raw in self.sc.dns:
            d = json.loads(raw)
            d["ts"] = round(d["ts"] + self.shift_ms / 1000, 3)
            lines.append((d["ts"], json.dumps(d)))
        names = ([(f"cdn{a.rsplit('.', 1)[1]}.cloud.example.net", a, "it") for a in _BG_POOLS["web"]]
                 + [(f"edi{a.rsplit('.', 1)[1]}.partner.example", a, "dmz") for a in _BG_POOLS["partner"]])
        for h in range(-(-self.span_ms // _HOUR_MS)):
            for j, (name, addr, clients) in enumerate(names):
                ts = (self.start_ms + h * _HOUR_MS + j * 17_000) / 1000
                lines.append((ts, json.dumps({"ts": ts, "id.orig_h": rng.choice(_BG_POOLS[clients]), "query": name,
                                              "qtype_name": "A", "rcode_name": "NOERROR", "answers": [addr],
                                              "TTLs": [3600.0]})))
        lines.sort(key=lambda x: x[0])
        os.makedirs(os.path.join(self.root, "dns"))
        with open(os.path.join(self.root, "dns", "dns.log"), "w", encoding="utf-8") as f:
            for _, line in lines:
                f.write(line + "\n")
        return len(lines)

    def write_policy(self) -> None:
        with open(os.path.join(self.root, "policy.toml"), "w", encoding="utf-8") as f:
            f.write(self.sc.policy_toml)
        os.makedirs(os.path.join(self.root, "watchlist"))
        with open(os.path.join(self.root, "watchlist", "ops.toml"), "w", encoding="utf-8") as f:
            f.write(self.sc.watchlist_toml)

    # ------------------------------------------------------------------ labels
    def exposures(self) -> tuple[list, list]:
        """The labelled exposures (each with its events and its findings windows) and the negative controls."""
        W = self.window_ns
        out = []
        known = set()
        for i, e in enumerate(self.sc.exposures, 1):
            key = (e.platform, e.rule, e.entity)
            known.add(key)
            wins: dict[int, dict] = {}
            rec = {"id": f"E{i}", "platform": e.platform, "rule": e.rule, "entity": e.entity,
                   "correlation": e.correlation, "severity": e.severity, "note": e.note}
            if e.correlation == "message_borne":
                rec["exposure"] = "observed"
                events = self.msg_exposures.get(key, [])
                for topic, part, off, ts, classes in events:
                    w = wins.setdefault(ts * 1_000_000 // W * W, {"messages": 0, "flows": 0, "classes": set()})
                    w["messages"] += 1
                    w["classes"] |= classes
                rec["messages"] = [{"topic": t, "partition": p, "offset": o, "timestamp_ms": ts}
                                   for t, p, o, ts, _ in events]
                times = [ts * 1_000_000 for *_, ts, _ in events]
            else:
                inferred = bool(self.inventory.apps_for_host(e.entity)) and e.correlation == "flow_borne"
                rec["exposure"] = "inferred" if inferred else "none"
                flows = self.flow_refs.get(key, [])
                for f in flows:
                    ws = f["first_ns"] // W * W
                    w = wins.setdefault(ws, {"messages": 0, "flows": 0, "classes": set()})
                    w["flows"] += 1
                    if inferred:
                        w["classes"] |= self.infer_classes.get((key, ws), set())
                rec["flows"] = flows
                times = [f["first_ns"] for f in flows]
            if not times:
                raise AssertionError(f"synth: labelled exposure {key} has no event in the dump")
            rec["first_ns"], rec["last_ns"] = min(times), max(times)
            rec["windows"] = [{"start_ns": ws, "end_ns": ws + W, "messages": w["messages"], "flows": w["flows"],
                               "classes": sorted(w["classes"])} for ws, w in sorted(wins.items())]
            rec["classes"] = sorted(set().union(*(w["classes"] for w in wins.values())))
            out.append(rec)
        unknown = set(self.msg_exposures) - known
        if unknown:
            raise AssertionError(f"synth: messages reach {sorted(unknown)}, which no labelled exposure names")
        controls = [{"kind": "flow", "note": role, "flows": refs}
                    for role, refs in self.flow_refs.items() if isinstance(role, str)]
        controls.append({"kind": "message", "note": "look-alike names in a payload (LoginKit, notlogink.cn, "
                         "logink.cn.example.net): no watchlist match", "messages": [
                             {"topic": t, "partition": p, "offset": o, "timestamp_ms": ts}
                             for t, p, o, ts in self.controls_msgs]})
        return out, controls


MAX_DUMP_HOURS = 366 * 24


def write_dump(out_dir, n_messages: int, seed: int = 7, files: int = 4, row_group_rows: int = 4096,
               layouts=DUMP_LAYOUTS, start=None, *, partitions: int = 3, hours: float = 6.0,
               bad_fraction: float = 0.01, flows_per_message: float = 0.2) -> dict:
    """Write a labelled archive of synthetic port traffic under ``out_dir`` (layouts above; README
    "Synthetic archives"); returns what ``labels.json`` holds.

    Messages: ``generate(seed, n_messages, bad_fraction=...)`` spread evenly over ``hours`` from
    ``start`` (default 2026-03-01T05:00Z), plus ``exposure_scenario(seed, background=0)``'s messages
    in the first whole hour after ``start``.  Each goes to topic ``TOPICS[format]``, partition
    FNV-1a(key) mod ``partitions`` (as the demo produces), offsets in record-time order.  Files:
    ``files`` time slices per topic partition (and of the flow archive), row groups of
    ``row_group_rows`` rows.  Flows: the scenario's plus ``flows_per_message`` background flows per
    message.  Memory stays bounded whatever ``n_messages``.  ``out_dir`` must not exist or be empty;
    the archive is written beside it and renamed into place when complete.  Deterministic: the same
    arguments (and pyarrow version) write byte-identical files.
    """
    import shutil

    layouts = tuple(dict.fromkeys(layouts))
    if not layouts or set(layouts) - set(DUMP_LAYOUTS):
        raise ValueError(f"layouts: one or more of {', '.join(DUMP_LAYOUTS)}")
    for name, v, lo in (("n_messages", n_messages, 0), ("files", files, 1), ("row_group_rows", row_group_rows, 1),
                        ("partitions", partitions, 1), ("seed", seed, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name}: an integer >= {lo} is required")
    if not hours >= 2:
        raise ValueError("hours: at least 2 (the scenario takes the first whole hour after the start)")
    if hours > MAX_DUMP_HOURS:          # the background flows are drawn hour by hour: 1e9 hours never ends
        raise ValueError(f"hours: at most {MAX_DUMP_HOURS} (a leap year)")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError("bad_fraction must be within [0, 1]")
    if not 0.0 <= flows_per_message <= 100.0:
        raise ValueError("flows_per_message must be within [0, 100]")
    start_ms = _start_ms(start)
    span_ms = int(round(hours * _HOUR_MS))
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder")
    stage = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.partial-{os.getpid()}")
    if os.path.exists(stage):
        shutil.rmtree(stage)
    os.makedirs(stage)
    try:
        d = _Dump(stage, n_messages, seed, files, row_group_rows, layouts, start_ms, span_ms, partitions,
                  bad_fraction, flows_per_message)
        d.write_policy()
        counts = d.write_messages()
        counts.update(d.write_flows())
        counts["dns_lines"] = d.write_dns()
        exposures, controls = d.exposures()
        topics = counts.pop("topics")
        labels = {
            "format": DUMP_FORMAT,
            "parameters": {"seed": seed, "messages": n_messages, "files": files, "row_group_rows": row_group_rows,
                           "layouts": list(layouts), "partitions": partitions, "hours": float(hours),
                           "bad_fraction": float(bad_fraction), "flows_per_message": float(flows_per_message),
                           "start": _iso_ms(start_ms)},
            "span": {"start": _iso_ms(start_ms), "end": _iso_ms(start_ms + span_ms), "start_ms": start_ms,
                     "end_ms": start_ms + span_ms, "scenario_hour_start": _iso_ms(d.scen_t0_ms),
                     "scenario_hour_start_ms": d.scen_t0_ms},
            "inputs": {"messages": [f"{x}/" for x in layouts], "flows": "flows/", "goflow2": "goflow2/",
                       "dns": "dns/dns.log", "policy": "policy.toml", "watchlist_dir": "watchlist/",
                       "label_messages": "labels/messages.parquet", "label_values": "labels/values.parquet"},
            "counts": counts,
            "topics": topics,
            "files": d.written,
            "window_s": DUMP_WINDOW_S,
            "exposures": exposures,
            "controls": controls,
        }
        with open(os.path.join(stage, "labels.json"), "w", encoding="utf-8") as f:
            json.dump(labels, f, indent=1)
            f.write("\n")
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return labels


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
