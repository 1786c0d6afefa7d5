"""The DNS records a served domain publishes for mail, and how to judge what DNS has now.

:func:`wanted_records` builds, from :class:`Settings` (made from the config by
:func:`settings_from_config`), the records ``mailserver dns DOMAIN`` prints: MX, SPF, DKIM (one
TXT per key, from :mod:`mailserver.msgauth.keys`), DMARC, MTA-STS, TLSRPT, the RFC 6186 SRV
records and the MX host's addresses. :func:`judge` compares one wanted record with what a
look-up found, for ``mailserver dns check``.

Design rules:

1. Pure: no DNS, no files, no reactor. The caller reads the keys and does the look-ups
   (through :class:`mailserver.dns.Resolver`, whose :class:`~mailserver.dns.Records` values
   :func:`judge` takes as they come).
2. Output is zone-file text (RFC 1035 §5.1): absolute names with the final dot, TXT values as
   quoted strings of at most 255 bytes (RFC 1035 §3.3.14), which DNS joins back together
   (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
3. Judging is semantic where the exact text does not matter: SPF terms as a set (ours must all
   be there with the same ``all``; extra terms are the domain's own business and only noted),
   DMARC and TLSRPT by tag (defaults applied, our report address among ``rua``), DKIM by key
   type and ``p=`` equality, MX by our host being among the most preferred, SRV by port and
   target, addresses by value, a report receiver's consent (RFC 7489 §7.1) by being there.
   Only the MTA-STS id is compared exactly: it is derived from the policy text
   (:func:`mta_sts_id`), so a different id means the published policy is not the one printed
   here.
4. A name's records of one type are judged together: "missing" when there is none of the
   kind we want (a TXT of another kind does not count), "wrong" with what was found, "ok".
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from publicsuffixlist import PublicSuffixList

from mailserver.config import Config
from mailserver.msgauth.dmarc import organizational_domain
from mailserver.msgauth.keys import DKIMKey

__all__ = [
    "DMARC_POLICIES",
    "MTA_STS_MODES",
    "SERVICES",
    "Record",
    "Service",
    "Settings",
    "Verdict",
    "autoconfig_xml",
    "judge",
    "mta_sts_id",
    "mta_sts_policy",
    "service_port",
    "settings_from_config",
    "txt_strings",
    "wanted_records",
]

DMARC_POLICIES = ("none", "quarantine", "reject")
MTA_STS_MODES = ("testing", "enforce")
#: RFC 8461 §3.2 asks for weeks: one week.
MTA_STS_MAX_AGE = 604800


@dataclass(frozen=True)
class Service:
    """One RFC 6186 / RFC 8314 service: its SRV label, standard port, the config section and
    key listing its endpoints, and whether it is implicit TLS."""

    label: str
    port: int
    section: str
    key: str
    implicit_tls: bool


#: The client services, in the order their SRV records are printed.
SERVICES = (
    Service("_submission._tcp", 587, "submission", "listen", False),
    Service("_submissions._tcp", 465, "submission", "tls_listen", True),  # RFC 8314 §5.1
    Service("_imap._tcp", 143, "imap", "listen", False),
    Service("_imaps._tcp", 993, "imap", "tls_listen", True),
    Service("_pop3._tcp", 110, "pop3", "listen", False),
    Service("_pop3s._tcp", 995, "pop3", "tls_listen", True),
)


@dataclass(frozen=True)
class Settings:
    """Everything the records depend on. ``ports`` maps SRV labels to the port clients use,
    or None when the service is not offered (RFC 6186 §3.4: target ``.``)."""

    domain: str
    mx_host: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    dkim: tuple[DKIMKey, ...] = ()
    dkim_active: str | None = None
    dmarc_policy: str = "quarantine"
    dmarc_rua: str = ""
    tlsrpt_rua: str = ""
    mta_sts_mode: str = "testing"
    mta_sts_max_age: int = MTA_STS_MAX_AGE
    ports: Mapping[str, int | None] = field(default_factory=dict)

    @property
    def dmarc_address(self) -> str:
        return self.dmarc_rua or f"dmarc-reports@{self.domain}"

    @property
    def tlsrpt_address(self) -> str:
        return self.tlsrpt_rua or f"tls-reports@{self.domain}"


@dataclass(frozen=True)
class Record:
    """One record to publish. ``value`` is the presentation form: MX ``10 host``, SRV
    ``0 1 587 host``, A/AAAA the address, TXT the whole text (split only for the zone file).
    ``kind`` says how it is judged (design rule 3); ``comment`` explains it in one line."""

    name: str
    rdtype: str
    value: str
    kind: str
    comment: str

    def zone_line(self) -> str:
        """The record as a line of a zone file."""
        if self.rdtype == "TXT":
            strings = txt_strings(self.value)
            # DKIM always in parentheses: the lines 'mailserver dkim list' prints
            alone = len(strings) == 1 and self.kind != "DKIM"
            data = strings[0] if alone else "( " + " ".join(strings) + " )"
        elif self.rdtype in ("MX", "SRV"):
            *numbers, target = self.value.split()
            data = " ".join([*numbers, _absolute(target)])
        else:
            data = self.value
        return f"{_absolute(self.name)} IN {self.rdtype} {data}"

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "type": self.rdtype,
            "value": self.value,
            "kind": self.kind,
            "comment": self.comment,
            "zone": self.zone_line(),
        }


@dataclass(frozen=True)
class Verdict:
    """How one wanted record compares with DNS: ``ok``, ``missing``, ``wrong`` (with what was
    found) or ``failed`` (the look-up itself failed; ``found`` holds why)."""

    record: Record
    state: str
    found: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def line(self) -> str:
        what = f"{self.record.kind} {self.record.name} {self.record.rdtype}"
        if self.state == "wrong":
            return f"{what}: wrong: found {self.found}, want {_shown(self.record)}"
        if self.state == "failed":
            return f"{what}: failed: {self.found}"
        return f"{what}: {self.state}" + (f" ({self.note})" if self.note else "")

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.record.name,
            "type": self.record.rdtype,
            "kind": self.record.kind,
            "state": self.state,
            "found": self.found,
            "want": self.record.value,
            "note": self.note,
        }


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _shown(record: Record) -> str:
    if record.kind == "DKIM":
        return f'"{_short_key(record.value)}"'
    return f'"{record.value}"' if record.rdtype == "TXT" else record.value


def txt_strings(text: str) -> list[str]:
    """``text`` as quoted zone-file strings of at most 255 bytes each (RFC 1035 §3.3.14)."""
    data = text.encode("utf-8")
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return ['"' + _escape_txt(chunk) + '"' for chunk in chunks]


def _escape_txt(chunk: bytes) -> str:
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):  # " and \
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")  # RFC 1035 §5.1 \DDD
    return "".join(out)


# -- building ---------------------------------------------------------------------------------


def service_port(endpoints: Sequence[str], standard: int) -> int | None:
    """The port clients reach for a service listening on ``endpoints``: that of the first
    TCP/TLS endpoint not bound to a loopback address; ``standard`` when every endpoint is
    local-only or of another kind (behind a proxy or systemd socket, the public port is
    assumed standard); None when the list is empty (not offered)."""
    if not endpoints:
        return None
    for description in endpoints:
        parts = re.split(r"(?<!\\):", description)
        if parts[0].lower() not in ("tcp", "tcp6", "ssl"):
            continue
        positional = [p for p in parts[1:] if "=" not in p]
        keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        port_text = keywords.get("port") or (positional[0] if positional else "")
        interface = keywords.get("interface", "").replace("\\:", ":")
        if not port_text.isdigit() or _is_loopback(interface):
            continue
        return int(port_text)
    return standard


def _is_loopback(interface: str) -> bool:
    if interface.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_from_config(
    config: Config, domain: str, keys: Iterable[DKIMKey] = (), **options: Any
) -> Settings:
    """:class:`Settings` for ``domain`` from the config ([server] hostname and public
    addresses, the listeners' ports) and ``keys`` (every selector's: old ones stay published
    until the mail signed with them has been read); ``options`` set the other fields."""
    ports = {
        service.label: service_port(
            getattr(getattr(config, service.section), service.key), service.port
        )
        for service in SERVICES
    }
    return Settings(
        domain=domain.lower().rstrip("."),
        mx_host=config.server.hostname.lower().rstrip("."),
        ipv4=tuple(config.server.public_ipv4),
        ipv6=tuple(str(ipaddress.ip_address(a)) for a in config.server.public_ipv6),
        dkim=tuple(keys),
        ports=ports,
        **options,
    )


def mta_sts_policy(settings: Settings) -> str:
    """The policy file for ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (RFC 8461 §3.2),
    CRLF-separated."""
    lines = [
        "version: STSv1",
        f"mode: {settings.mta_sts_mode}",
        f"mx: {settings.mx_host}",
        f"max_age: {settings.mta_sts_max_age}",
    ]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(policy: str) -> str:
    """The ``id=`` for ``policy``: 20 hex digits of its SHA-256, so it changes exactly when the
    policy does (RFC 8461 §3.1: 1-32 letters and digits)."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:20]


def wanted_records(settings: Settings, psl: PublicSuffixList | None = None) -> list[Record]:
    """Every record ``settings.domain`` should publish, in printing order (``psl``: the Public
    Suffix List, loaded when not given, to tell whether the DMARC reports go elsewhere)."""
    domain, host = settings.domain, settings.mx_host
    records = [
        Record(domain, "MX", f"10 {host}", "MX", f"mail for {domain} is delivered to {host}"),
        Record(domain, "TXT", spf_text(settings), "SPF",
               "SPF (RFC 7208): only the MX host and the listed addresses send its mail"),
    ]
    for rdtype, addresses in (("A", settings.ipv4), ("AAAA", settings.ipv6)):
        for address in addresses:
            records.append(Record(
                host, rdtype, address, "host", f"the MX host's address (in the zone of {host})"
            ))
    for key in settings.dkim:
        state = "signing now" if key.selector == settings.dkim_active else "not signing"
        records.append(Record(
            key.dns_name, "TXT", key.dns_record(), "DKIM",
            f"DKIM (RFC 6376) selector {key.selector} ({state}): {key.algorithm} public key",
        ))
    records.append(Record(
        f"_dmarc.{domain}", "TXT", dmarc_text(settings), "DMARC",
        f"DMARC (RFC 7489): aggregate reports to {settings.dmarc_address} (a mailbox or alias)",
    ))
    rua_domain = settings.dmarc_address.rpartition("@")[2].lower()
    psl = psl or PublicSuffixList()
    if organizational_domain(rua_domain, psl) != organizational_domain(domain, psl):
        records.append(Record(  # RFC 7489 §7.1: the report receiver agrees
            f"{domain}._report._dmarc.{rua_domain}", "TXT", "v=DMARC1", "DMARC-rua",
            f"{rua_domain} accepts {domain}'s DMARC reports (RFC 7489 §7.1; in its zone)",
        ))
    policy = mta_sts_policy(settings)
    records.append(Record(
        f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts_id(policy)}", "MTA-STS",
        f"MTA-STS (RFC 8461), with the policy file below at https://mta-sts.{domain}/",
    ))
    records.append(Record(
        f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua=mailto:{settings.tlsrpt_address}",
        "TLSRPT", f"TLS reporting (RFC 8460) to {settings.tlsrpt_address}",
    ))
    for service in SERVICES:
        port = settings.ports.get(service.label, service.port)
        value = "0 0 0 ." if port is None else f"0 1 {port} {host}"
        mode = "implicit TLS" if service.implicit_tls else "STARTTLS"
        offered = "not offered" if port is None else f"{mode} on port {port}"
        records.append(Record(
            f"{service.label}.{domain}", "SRV", value, "SRV",
            f"client autoconfiguration (RFC 6186): {service.label.split('.')[0][1:]} "
            f"{offered}",
        ))
    return records


def spf_text(settings: Settings) -> str:
    terms = ["v=spf1", "mx"]
    terms += [f"ip4:{a}" for a in settings.ipv4]
    terms += [f"ip6:{a}" for a in settings.ipv6]
    return " ".join([*terms, "-all"])


def dmarc_text(settings: Settings) -> str:
    return (
        f"v=DMARC1; p={settings.dmarc_policy}; rua=mailto:{settings.dmarc_address}; "
        "adkim=s; aspf=s"
    )


def autoconfig_xml(settings: Settings) -> str:
    """Thunderbird's autoconfig file for ``https://autoconfig.DOMAIN/mail/config-v1.1.xml``:
    the offered services, implicit TLS first (RFC 8314 §4.1)."""
    kinds = {"_imaps._tcp": ("incomingServer", "imap", "SSL"),
             "_imap._tcp": ("incomingServer", "imap", "STARTTLS"),
             "_pop3s._tcp": ("incomingServer", "pop3", "SSL"),
             "_pop3._tcp": ("incomingServer", "pop3", "STARTTLS"),
             "_submissions._tcp": ("outgoingServer", "smtp", "SSL"),
             "_submission._tcp": ("outgoingServer", "smtp", "STARTTLS")}
    domain = escape(settings.domain)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        f"  <emailProvider id={quoteattr(settings.domain)}>",
        f"    <domain>{domain}</domain>",
        f"    <displayName>{domain}</displayName>",
    ]
    for label, (element, kind, socket) in kinds.items():
        port = settings.ports.get(label, next(s.port for s in SERVICES if s.label == label))
        if port is None:
            continue
        lines += [
            f'    <{element} type="{kind}">',
            f"      <hostname>{escape(settings.mx_host)}</hostname>",
            f"      <port>{port}</port>",
            f"      <socketType>{socket}</socketType>",
            "      <username>%EMAILADDRESS%</username>",
            "      <authentication>password-cleartext</authentication>",
            f"    </{element}>",
        ]
    lines += ["  </emailProvider>", "</clientConfig>"]
    return "\n".join(lines) + "\n"


# -- judging ----------------------------------------------------------------------------------


def judge(record: Record, values: Sequence[Any], exists: bool = True) -> Verdict:
    """Compare ``record`` with the values DNS holds for its name and type (as
    :class:`mailserver.dns.Records` gives them: TXT joined, MX ``(preference, host)``)."""
    judges = {
        "MX": _judge_mx, "SPF": _judge_spf, "host": _judge_address, "DKIM": _judge_dkim,
        "DMARC": _judge_dmarc, "DMARC-rua": _judge_rua, "MTA-STS": _judge_sts,
        "TLSRPT": _judge_tlsrpt, "SRV": _judge_srv,
    }
    return judges[record.kind](record, list(values) if exists else [])


def _quoted(values: Iterable[str]) -> str:
    return " + ".join(f'"{v}"' for v in values)


def _judge_mx(record: Record, values: list[Any]) -> Verdict:
    if not values:
        return Verdict(record, "missing")
    want = record.value.split()[1].lower()
    found = sorted((int(p), str(h).lower().rstrip(".")) for p, h in values)
    best = found[0][0]
    if any(host == want and pref == best for pref, host in found):
        return Verdict(record, "ok")
    return Verdict(record, "wrong", ", ".join(f"{p} {h}" for p, h in found))


def _judge_address(record: Record, values: list[Any]) -> Verdict:
    if not values:
        return Verdict(record, "missing")
    want = ipaddress.ip_address(record.value)
    found = [ipaddress.ip_address(str(v)) for v in values]
    if want in found:
        return Verdict(record, "ok")
    return Verdict(record, "wrong", ", ".join(str(a) for a in found))


def _of_kind(values: list[Any], version: str) -> list[str]:
    """The TXT values that are records of ``version`` (``v=spf1``, ``v=DMARC1``...)."""
    prefix = re.compile(rf"\s*v\s*=\s*{re.escape(version)}\s*(;|\s|$)", re.IGNORECASE)
    return [str(v) for v in values if prefix.match(str(v))]


def _spf_terms(text: str) -> list[str]:
    """The terms after ``v=spf1``, lowercased, with the default ``+`` qualifier dropped."""
    return [t[1:] if t.startswith("+") else t for t in text.lower().split()[1:]]


def _judge_spf(record: Record, values: list[Any]) -> Verdict:
    found = _of_kind(values, "spf1")
    if not found:
        return Verdict(record, "missing")
    if len(found) > 1:  # RFC 7208 §4.5: more than one record is a permerror
        return Verdict(record, "wrong", f"{len(found)} SPF records (a permerror) {_quoted(found)}")
    terms = _spf_terms(found[0])
    want = _spf_terms(record.value)
    all_term = [t for t in terms if t.lstrip("+-~?") == "all"]
    missing = [t for t in want if t not in terms]
    if missing or all_term != [want[-1]]:
        return Verdict(record, "wrong", _quoted(found))
    extra = [t for t in terms if t not in want]
    return Verdict(record, "ok", note=f"also allows {' '.join(extra)}" if extra else "")


def _tags(text: str) -> dict[str, str]:
    """``tag=value; ...`` (RFC 6376 §3.2, RFC 7489 §6.4): tag names lowercased, values with
    surrounding whitespace removed."""
    tags = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _mailtos(value: str) -> set[str]:
    """The addresses of a ``rua`` list (``mailto:a@b!10m, ...``), lowercased."""
    found = set()
    for uri in value.split(","):
        uri = uri.strip()
        if uri.lower().startswith("mailto:"):
            found.add(uri[7:].split("!")[0].strip().lower())
    return found


def _judge_dkim(record: Record, values: list[Any]) -> Verdict:
    keyed = [str(v) for v in values if "p=" in str(v).replace(" ", "")]
    if not keyed:
        return Verdict(record, "missing")
    want = _tags(record.value)
    for text in keyed:
        tags = _tags(text)
        key = re.sub(r"\s", "", tags.get("p", ""))
        if tags.get("k", "rsa").lower() == want["k"] and key == want["p"]:
            return Verdict(record, "ok")
    return Verdict(record, "wrong", _quoted(_short_key(v) for v in keyed))


def _short_key(text: str) -> str:
    """A DKIM record with its key shortened to its first 8 and last 12 characters (RSA keys
    share their first ones, the SubjectPublicKeyInfo header), for a readable line."""

    def shorten(match: re.Match[str]) -> str:
        key = re.sub(r"\s", "", match.group(1))
        return "p=" + (key if len(key) <= 24 else f"{key[:8]}...{key[-12:]}")

    return re.sub(r"p=([A-Za-z0-9+/=\s]+)", shorten, text)


def _single(
    record: Record, values: list[Any], version: str
) -> tuple[dict[str, str] | None, Verdict | None]:
    """The tags of the one record of ``version``, or the verdict when there is not one."""
    found = _of_kind(values, version)
    if not found:
        return None, Verdict(record, "missing")
    if len(found) > 1:
        return None, Verdict(record, "wrong", f"{len(found)} records {_quoted(found)}")
    return _tags(found[0]), None


def _judge_dmarc(record: Record, values: list[Any]) -> Verdict:
    tags, verdict = _single(record, values, "DMARC1")
    if tags is None:
        assert verdict is not None
        return verdict
    want = _tags(record.value)
    defaults = {"adkim": "r", "aspf": "r"}  # RFC 7489 §6.3
    same = all(
        tags.get(name, defaults.get(name, "")).lower() == want[name].lower()
        for name in ("p", "adkim", "aspf")
    )
    if same and _mailtos(want["rua"]) <= _mailtos(tags.get("rua", "")):
        return Verdict(record, "ok")
    return Verdict(record, "wrong", _quoted(_of_kind(values, "DMARC1")))


def _judge_rua(record: Record, values: list[Any]) -> Verdict:
    _, verdict = _single(record, values, "DMARC1")
    return verdict or Verdict(record, "ok")


def _judge_sts(record: Record, values: list[Any]) -> Verdict:
    tags, verdict = _single(record, values, "STSv1")
    if tags is None:
        assert verdict is not None
        return verdict
    if tags.get("id") == _tags(record.value)["id"]:
        return Verdict(record, "ok")
    return Verdict(record, "wrong", _quoted(_of_kind(values, "STSv1")))


def _judge_tlsrpt(record: Record, values: list[Any]) -> Verdict:
    tags, verdict = _single(record, values, "TLSRPTv1")
    if tags is None:
        assert verdict is not None
        return verdict
    if _mailtos(_tags(record.value)["rua"]) <= _mailtos(tags.get("rua", "")):
        return Verdict(record, "ok")
    return Verdict(record, "wrong", _quoted(_of_kind(values, "TLSRPTv1")))


def _judge_srv(record: Record, values: list[Any]) -> Verdict:
    if not values:
        return Verdict(record, "missing")
    want = _srv(record.value)
    found = [_srv(str(v)) for v in values]
    if any(f is not None and f[2:] == want[2:] for f in found if want is not None):
        return Verdict(record, "ok")
    return Verdict(record, "wrong", ", ".join(str(v) for v in values))


def _srv(text: str) -> tuple[int, int, int, str] | None:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    target = parts[3].lower().rstrip(".") or "."
    return int(parts[0]), int(parts[1]), int(parts[2]), target
