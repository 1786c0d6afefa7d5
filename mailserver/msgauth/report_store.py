"""Received DMARC aggregate reports in the index, and the tallies ``mailserver dmarc`` prints.

Design rules:

1. One entry per report in the ``dmarc_reports`` sub-db (:mod:`mailserver.db.schema`), keyed
   by the reported domain, the end of the report's range and a digest of (reporter, report
   id): a report delivered twice is recorded once, and a domain's reports over a time range
   are one cursor walk.
2. The value is a compact summary, not the XML: the metadata, the published policy and the
   rows merged by (source IP, disposition, aligned DKIM, aligned SPF, header From), at most
   :data:`MAX_ROWS` of the largest; the messages of the rows left out are kept as a count.
3. Writes go through the index's writer thread (:meth:`Database.write`); reads are snapshots.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.db import schema
from mailserver.msgauth.reports import AggregateReport

__all__ = ["MAX_ROWS", "ReportStore", "StoredReport", "Tally", "report_key", "tally"]

TABLE = b"dmarc_reports"
#: Rows kept per report; a report from a big sender may list thousands of source IPs.
MAX_ROWS = 2000
_U64 = struct.Struct(">Q")


def report_key(domain: str, date_end: int, org_name: str, report_id: str) -> bytes:
    """``domain NUL date_end (u64) digest`` (the first 16 bytes of SHA-256 of org NUL id)."""
    digest = hashlib.sha256(f"{org_name}\0{report_id}".encode()).digest()[:16]
    return domain.encode() + b"\0" + _U64.pack(date_end) + digest


@dataclass(frozen=True)
class StoredRow:
    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    header_from: str


@dataclass(frozen=True)
class StoredReport:
    """What the index keeps of one report."""

    domain: str
    org_name: str
    email: str
    report_id: str
    date_begin: int
    date_end: int
    policy: dict[str, Any]
    rows: tuple[StoredRow, ...]
    omitted_messages: int = 0
    received: float = 0.0
    via: str = ""

    @property
    def messages(self) -> int:
        return sum(row.count for row in self.rows) + self.omitted_messages


def _encode(report: AggregateReport, received: float, via: str) -> dict[str, Any]:
    merged: Counter[tuple[str, str, str, str, str]] = Counter()
    for record in report.records:
        merged[(record.source_ip, record.disposition, record.dkim, record.spf,
                record.header_from)] += record.count
    ordered = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    kept, left = ordered[:MAX_ROWS], ordered[MAX_ROWS:]
    meta, policy = report.metadata, report.policy
    return {
        "org": meta.org_name,
        "email": meta.email,
        "id": meta.report_id,
        "begin": meta.date_begin,
        "end": meta.date_end,
        "policy": {"p": policy.p, "sp": policy.sp, "pct": policy.pct,
                   "adkim": policy.adkim, "aspf": policy.aspf},
        "rows": [[ip, count, disp, dkim, spf, hfrom]
                 for (ip, disp, dkim, spf, hfrom), count in kept],
        "omitted": sum(count for _, count in left),
        "received": received,
        "via": via,
    }


def _decode(domain: str, value: dict[str, Any]) -> StoredReport:
    return StoredReport(
        domain=domain,
        org_name=value["org"],
        email=value.get("email", ""),
        report_id=value["id"],
        date_begin=value["begin"],
        date_end=value["end"],
        policy=value.get("policy", {}),
        rows=tuple(StoredRow(ip, count, disp, dkim, spf, hfrom)
                   for ip, count, disp, dkim, spf, hfrom in value["rows"]),
        omitted_messages=value.get("omitted", 0),
        received=value.get("received", 0.0),
        via=value.get("via", ""),
    )


class ReportStore:
    """The ``dmarc_reports`` sub-db of ``db`` (a :class:`mailserver.db.Database`)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def record(self, report: AggregateReport, *, received: float, via: str) -> Deferred[bool]:
        """Store ``report``'s summary; Deferred[True], or [False] when it was already there."""
        meta = report.metadata
        key = report_key(report.policy.domain, meta.date_end, meta.org_name, meta.report_id)
        value = schema.dump(_encode(report, received, via))

        def write(txn: Any) -> bool:
            if txn.get(TABLE, key) is not None:
                return False
            txn.put(TABLE, key, value)
            return True

        result: Deferred[bool] = self.db.write(write)
        return result

    def has(self, report: AggregateReport) -> bool:
        meta = report.metadata
        key = report_key(report.policy.domain, meta.date_end, meta.org_name, meta.report_id)
        with self.db.read() as txn:
            return txn.get(TABLE, key) is not None

    def reports(self, domain: str, since: int = 0) -> list[StoredReport]:
        """The reports on ``domain`` whose range ends at or after ``since``, oldest first."""
        prefix = domain.encode() + b"\0"
        with self.db.read() as txn:
            return [
                _decode(domain, schema.load(value))
                for _, value in txn.range(TABLE, prefix + _U64.pack(since), None, prefix=prefix)
            ]


@dataclass
class Tally:
    """Messages of a set of report rows: how many passed DMARC (either aligned identifier),
    aligned DKIM and aligned SPF, and what the reporters did with them."""

    reports: set[str] = field(default_factory=set)
    messages: int = 0
    dmarc_pass: int = 0
    dkim_pass: int = 0
    spf_pass: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)

    def add(self, report: StoredReport, row: StoredRow) -> None:
        self.reports.add(f"{report.org_name}\0{report.report_id}")
        self.messages += row.count
        self.dmarc_pass += row.count if "pass" in (row.dkim, row.spf) else 0
        self.dkim_pass += row.count if row.dkim == "pass" else 0
        self.spf_pass += row.count if row.spf == "pass" else 0
        self.dispositions[row.disposition] += row.count


OTHER = "(other sources)"


def tally(reports: Iterable[StoredReport]) -> tuple[Tally, dict[str, Tally], dict[str, Tally]]:
    """(everything, per reporter, per source IP); the messages of rows a report left out
    count under :data:`OTHER` with unknown outcome (as failures, disposition ``?``)."""
    total = Tally()
    by_reporter: dict[str, Tally] = {}
    by_ip: dict[str, Tally] = {}
    for report in reports:
        rows = list(report.rows)
        if report.omitted_messages:
            rows.append(StoredRow(OTHER, report.omitted_messages, "?", "?", "?", ""))
        for row in rows:
            for tally_ in (total, by_reporter.setdefault(report.org_name, Tally()),
                           by_ip.setdefault(row.source_ip, Tally())):
                tally_.add(report, row)
    return total, by_reporter, by_ip
