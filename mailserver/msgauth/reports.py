"""DMARC aggregate reports (RFC 7489 §7.2, schema in Appendix C): find one in a message and
parse it into frozen values.

Design rules:

1. Pure and synchronous: bytes in, an :class:`AggregateReport` out, or :class:`ReportError`
   with the reason (never another exception). Callers run it in a worker thread.
2. Every input is hostile until parsed, so every size is bounded before it is read: the
   decompressed XML (:data:`MAX_XML`, however it was compressed), the members of a zip
   (:data:`MAX_ZIP_MEMBERS`), the element depth and count, each field's length and the
   number of records. Records are parsed one by one as the XML streams past, so a big report
   never becomes one big tree in memory.
3. The XML parser is expat driven by hand into an ``ElementTree``: a document with a DOCTYPE
   is refused before any entity can be declared (no billion laughs, no external entities);
   reports never need a DTD. Namespace prefixes are ignored (reports with the draft
   ``dmarc-2.0`` namespace parse the same).
4. The report is found in a MIME message with the stdlib ``email`` package (RFC 7489 §7.2.1.1):
   the first part that is gzip, zip or XML by content type, file name or magic bytes.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import ipaddress
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.parsers import expat

__all__ = [
    "MAX_XML",
    "MAX_ZIP_MEMBERS",
    "AggregateReport",
    "AuthDKIM",
    "AuthSPF",
    "NoReport",
    "PolicyPublished",
    "ReportError",
    "ReportMetadata",
    "ReportRecord",
    "decompress",
    "find_report",
    "parse_report",
]

#: The decompressed XML of one report may be this large (RFC 7489 §7.2.1.1 leaves the size to
#: the receiver; big senders' daily reports are a few hundred kilobytes).
MAX_XML = 20 * 1024 * 1024
#: A zip may hold this many members (a report zip holds one XML file).
MAX_ZIP_MEMBERS = 8
MAX_DEPTH = 12
MAX_ELEMENTS = 2_000_000
MAX_RECORDS = 50_000
#: Longest text of one field, in characters.
MAX_FIELD = 1024
MAX_COUNT = 2**31 - 1

_GZIP_TYPES = ("application/gzip", "application/x-gzip", "application/gzip-compressed")
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/x-zip")
_XML_TYPES = ("text/xml", "application/xml")
_EXTENSIONS = (".xml.gz", ".gz", ".zip", ".xml")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ReportError(ValueError):
    """The input is not a usable aggregate report; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoReport(ReportError):
    """The message holds no part that could be a report (not gzip, zip or XML)."""


@dataclass(frozen=True)
class ReportMetadata:
    """``report_metadata``: who reports, the report's id and the time range covered (seconds
    since the epoch, UTC)."""

    org_name: str
    email: str
    report_id: str
    date_begin: int
    date_end: int
    extra_contact_info: str = ""
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyPublished:
    """``policy_published``: the DMARC record the reporter found (defaults filled in)."""

    domain: str
    adkim: str = "r"
    aspf: str = "r"
    p: str = "none"
    sp: str = "none"
    pct: int = 100
    fo: str = ""


@dataclass(frozen=True)
class AuthDKIM:
    """One ``auth_results/dkim``: a signature's domain, selector and raw result."""

    domain: str
    result: str
    selector: str = ""


@dataclass(frozen=True)
class AuthSPF:
    """One ``auth_results/spf``: the checked domain, its scope (mfrom/helo) and raw result."""

    domain: str
    result: str
    scope: str = ""


@dataclass(frozen=True)
class ReportRecord:
    """One ``record``: ``count`` messages from ``source_ip`` with the same outcome.
    ``dkim`` and ``spf`` are the policy-evaluated (aligned) results, ``pass`` or ``fail``."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    header_from: str
    envelope_from: str = ""
    envelope_to: str = ""
    reasons: tuple[str, ...] = ()
    auth_dkim: tuple[AuthDKIM, ...] = ()
    auth_spf: tuple[AuthSPF, ...] = ()

    @property
    def dmarc_pass(self) -> bool:
        """DMARC passes when either aligned identifier passed (§4.2)."""
        return self.dkim == "pass" or self.spf == "pass"


@dataclass(frozen=True)
class AggregateReport:
    metadata: ReportMetadata
    policy: PolicyPublished
    records: tuple[ReportRecord, ...]
    version: str = ""

    @property
    def messages(self) -> int:
        return sum(record.count for record in self.records)


# -- finding and unpacking ------------------------------------------------------------------


def find_report(message: bytes) -> AggregateReport:
    """The report carried by ``message`` (a whole RFC 5322 message). NoReport when no part
    looks like one; ReportError when the first part that does is unusable."""
    try:
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    except Exception as error:  # the email package is lenient; this is for the unforeseen
        raise ReportError(f"unreadable message: {error}") from None
    for part in parsed.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type().lower()
        filename = (_filename(part) or "").lower()
        if not _candidate(content_type, filename):
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:
            payload = None
        if not isinstance(payload, bytes) or not payload:
            raise ReportError(f"the {content_type} part is empty or not decodable")
        return parse_report(decompress(payload, content_type, filename))
    raise NoReport("no gzip, zip or XML part in the message")


def _filename(part: Any) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return name if isinstance(name, str) else None


def _candidate(content_type: str, filename: str) -> bool:
    if content_type in _GZIP_TYPES + _ZIP_TYPES + _XML_TYPES:
        return True
    return filename.endswith(_EXTENSIONS)


def decompress(data: bytes, content_type: str = "", filename: str = "") -> bytes:
    """The XML of an attachment: gunzipped, unzipped or as it is, judged by the magic bytes
    first (reporters mislabel), then the type and name. At most :data:`MAX_XML` bytes come
    out; more is a ReportError, read no further than the limit."""
    if data[:2] == b"\x1f\x8b":
        return _gunzip(data)
    if data[:4] == b"PK\x03\x04":
        return _unzip(data)
    if content_type in _GZIP_TYPES or filename.endswith(".gz"):
        raise ReportError("a gzip attachment without the gzip magic bytes")
    if content_type in _ZIP_TYPES or filename.endswith(".zip"):
        raise ReportError("a zip attachment without the zip magic bytes")
    if len(data) > MAX_XML:
        raise ReportError(f"the XML is larger than {MAX_XML} bytes")
    return data


def _gunzip(data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as source:
            xml = source.read(MAX_XML + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise ReportError(f"broken gzip data: {error}") from None
    if len(xml) > MAX_XML:
        raise ReportError(f"the gzip data decompresses to more than {MAX_XML} bytes")
    return xml


def _unzip(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise ReportError(f"a zip with {len(members)} members (at most {MAX_ZIP_MEMBERS})")
            xml_members = [m for m in members if m.filename.lower().endswith(".xml")]
            chosen = (xml_members or members)[:1]
            if not chosen:
                raise ReportError("an empty zip")
            with archive.open(chosen[0]) as source:
                xml = source.read(MAX_XML + 1)
    except ReportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error,
            RuntimeError, NotImplementedError, ValueError) as error:
        raise ReportError(f"broken zip data: {error}") from None
    if len(xml) > MAX_XML:
        raise ReportError(f"the zip member decompresses to more than {MAX_XML} bytes")
    return xml


# -- XML ------------------------------------------------------------------------------------


class _Refused(Exception):
    pass


def _local(name: str) -> str:
    """The tag without a namespace prefix (``dmarc:feedback`` -> ``feedback``)."""
    return name.rpartition(":")[2] if ":" in name else name


def parse_xml(
    data: bytes,
    on_child: Callable[[ElementTree.Element], bool] | None = None,
) -> ElementTree.Element:
    """The element tree of ``data`` with design rule 3's limits; ReportError otherwise.

    ``on_child`` sees each child of the root when it is complete; when it returns True the
    child is dropped from the tree (so a report's records are parsed one at a time, and a big
    report never sits in memory as a whole tree)."""
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = [0]
    elements = [0]
    roots: list[ElementTree.Element] = []

    def refuse_doctype(*_: Any) -> None:
        raise _Refused("a DOCTYPE (DTDs and entity declarations are not accepted)")

    def refuse_entity(*_: Any) -> None:
        raise _Refused("an entity declaration")

    def start(name: str, _attrs: Any) -> None:
        depth[0] += 1
        elements[0] += 1
        if depth[0] > MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}")
        if elements[0] > MAX_ELEMENTS:
            raise _Refused(f"more than {MAX_ELEMENTS} elements")
        element = builder.start(_local(name), {})
        if depth[0] == 1:
            roots.append(element)

    def end(name: str) -> None:
        depth[0] -= 1
        element = builder.end(_local(name))
        if depth[0] == 1 and on_child is not None and on_child(element):
            roots[0].remove(element)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        root = builder.close()
    except ReportError:
        raise
    except _Refused as error:
        raise ReportError(f"refused XML: {error}") from None
    except expat.ExpatError as error:
        raise ReportError(f"not well-formed XML: {error}") from None
    except (ValueError, LookupError, AssertionError, RecursionError) as error:
        raise ReportError(f"unreadable XML: {error}") from None
    return root


def parse_report(data: bytes) -> AggregateReport:
    """The report in ``data`` (the XML document of Appendix C); ReportError naming the missing
    or bad field otherwise. Records are parsed as each one ends (see :func:`parse_xml`)."""
    records: list[ReportRecord] = []

    def on_child(element: ElementTree.Element) -> bool:
        if element.tag != "record":
            return False
        if len(records) >= MAX_RECORDS:
            raise ReportError(f"more than {MAX_RECORDS} records")
        records.append(_record(element, len(records) + 1))
        return True

    root = parse_xml(data, on_child)
    if root.tag != "feedback":
        raise ReportError(f"the root element is <{root.tag}>, not <feedback>")
    meta = _child(root, "report_metadata")
    dates = _child(meta, "date_range", "report_metadata")
    begin = _int(dates, "begin", "report_metadata/date_range", 0, 2**40)
    end = _int(dates, "end", "report_metadata/date_range", 0, 2**40)
    if end < begin:
        raise ReportError("report_metadata/date_range: end is before begin")
    metadata = ReportMetadata(
        org_name=_text(meta, "org_name", "report_metadata"),
        email=_text(meta, "email", "report_metadata", required=False),
        report_id=_text(meta, "report_id", "report_metadata"),
        date_begin=begin,
        date_end=end,
        extra_contact_info=_text(meta, "extra_contact_info", "report_metadata", required=False),
        errors=tuple(_clean(e.text, "report_metadata/error") for e in meta.findall("error")),
    )
    policy_element = _child(root, "policy_published")
    domain = _domain(_text(policy_element, "domain", "policy_published"), "policy_published")
    p = _text(policy_element, "p", "policy_published").lower()
    policy = PolicyPublished(
        domain=domain,
        adkim=_text(policy_element, "adkim", "policy_published", required=False).lower() or "r",
        aspf=_text(policy_element, "aspf", "policy_published", required=False).lower() or "r",
        p=p,
        sp=_text(policy_element, "sp", "policy_published", required=False).lower() or p,
        pct=_int(policy_element, "pct", "policy_published", 0, 100, default=100),
        fo=_text(policy_element, "fo", "policy_published", required=False),
    )
    if not records:
        raise ReportError("no <record> in the report")
    version = _text(root, "version", "feedback", required=False)
    return AggregateReport(metadata, policy, tuple(records), version)


def _record(element: ElementTree.Element, number: int) -> ReportRecord:
    where = f"record {number}"
    row = _child(element, "row", where)
    source_ip = _text(row, "source_ip", f"{where}/row")
    try:
        source_ip = str(ipaddress.ip_address(source_ip))
    except ValueError:
        raise ReportError(f"{where}/row/source_ip: {source_ip[:60]!r} is no IP address") from None
    evaluated = _child(row, "policy_evaluated", f"{where}/row")
    at = f"{where}/row/policy_evaluated"
    reasons = tuple(
        _text(reason, "type", f"{at}/reason").lower() for reason in evaluated.findall("reason")
    )
    identifiers = _child(element, "identifiers", where)
    results = element.find("auth_results")
    auth_dkim: list[AuthDKIM] = []
    auth_spf: list[AuthSPF] = []
    if results is not None:
        for dkim in results.findall("dkim"):
            auth_dkim.append(AuthDKIM(
                domain=_text(dkim, "domain", f"{where}/auth_results/dkim").lower(),
                result=_text(dkim, "result", f"{where}/auth_results/dkim").lower(),
                selector=_text(dkim, "selector", f"{where}/auth_results/dkim", required=False),
            ))
        for spf in results.findall("spf"):
            auth_spf.append(AuthSPF(
                domain=_text(spf, "domain", f"{where}/auth_results/spf").lower(),
                result=_text(spf, "result", f"{where}/auth_results/spf").lower(),
                scope=_text(spf, "scope", f"{where}/auth_results/spf", required=False).lower(),
            ))
    return ReportRecord(
        source_ip=source_ip,
        count=_int(row, "count", f"{where}/row", 0, MAX_COUNT),
        disposition=_text(evaluated, "disposition", at).lower(),
        dkim=_text(evaluated, "dkim", at).lower(),
        spf=_text(evaluated, "spf", at).lower(),
        header_from=_text(identifiers, "header_from", f"{where}/identifiers").lower(),
        envelope_from=_text(identifiers, "envelope_from", f"{where}/identifiers",
                            required=False).lower(),
        envelope_to=_text(identifiers, "envelope_to", f"{where}/identifiers",
                          required=False).lower(),
        reasons=reasons,
        auth_dkim=tuple(auth_dkim),
        auth_spf=tuple(auth_spf),
    )


def _child(parent: ElementTree.Element, tag: str, where: str = "feedback") -> ElementTree.Element:
    found = parent.find(tag)
    if found is None:
        raise ReportError(f"{where}: <{tag}> is missing")
    return found


def _clean(text: str | None, where: str) -> str:
    value = (text or "").strip()
    if len(value) > MAX_FIELD:
        raise ReportError(f"{where}: longer than {MAX_FIELD} characters")
    if _CONTROL.search(value):
        raise ReportError(f"{where}: control characters")
    return value


def _text(parent: ElementTree.Element, tag: str, where: str, *, required: bool = True) -> str:
    found = parent.find(tag)
    value = _clean(found.text if found is not None else None, f"{where}/{tag}")
    if required and not value:
        raise ReportError(f"{where}: <{tag}> is missing or empty")
    return value


def _int(
    parent: ElementTree.Element, tag: str, where: str, low: int, high: int,
    default: int | None = None,
) -> int:
    text = _text(parent, tag, where, required=default is None)
    if not text and default is not None:
        return default
    if not text.isascii() or not text.isdigit():
        raise ReportError(f"{where}/{tag}: {text[:40]!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ReportError(f"{where}/{tag}: {value} is out of range ({low}..{high})")
    return value


def _domain(text: str, where: str) -> str:
    value = text.lower().rstrip(".")
    if not value or len(value) > 253 or any(c.isspace() or c in "\0/@" for c in value):
        raise ReportError(f"{where}/domain: {text[:60]!r} is not a domain name")
    return value
