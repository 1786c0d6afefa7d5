"""``mailserver dmarc summary|list|import``: the DMARC aggregate reports received for our
domains (RFC 7489 §7.2).

Reports mailed to ``[msgauth] report_address`` (``dmarc-reports@DOMAIN``, the ``rua`` of
``mailserver dns``) on port 25 are recorded by the server as they arrive
(:mod:`mailserver.msgauth.report_target`). ``import ADDRESS`` records those already in an
account's INBOX (e.g. received before the server recorded reports, or into another mailbox);
a report already recorded is left alone, so it can run any number of times. Progress goes
to stderr, the outcome to stdout.

``summary DOMAIN`` prints the totals, then one row per reporter and per source IP: messages,
how many passed DMARC (an aligned DKIM or SPF pass), aligned DKIM and SPF passes, and what
the reporters did with the messages (their disposition). ``list DOMAIN`` prints one line per
report. Domain admins may read their own domains' reports; ``import`` is for admins and is
audited.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import (
    CommandError,
    address,
    domain_name,
    require_domain,
    run_with_storage,
    say_note,
)
from mailserver.config import Config
from mailserver.msgauth.report_store import ReportStore, StoredReport, Tally, tally
from mailserver.msgauth.report_target import served_domain
from mailserver.msgauth.reports import NoReport, ReportError, find_report
from mailserver.store.maildir_store import MaildirStore

__all__ = ["import_reports", "list_reports", "register", "summary"]

DAY = 86400
#: Messages larger than this are not read by ``import`` (report mails are small).
MAX_MESSAGE = 64 * 1024 * 1024
#: ``import`` says how far it got after this many messages.
PROGRESS_EVERY = 200


def register(subparsers: Any) -> None:
    """Add the ``dmarc`` noun and its verbs."""
    parser = subparsers.add_parser(
        "dmarc",
        help="DMARC aggregate reports received for our domains",
        description="DMARC aggregate reports (RFC 7489 section 7.2) other mail servers sent "
        "about our domains: a summary, a list, or importing those already in a mailbox.",
    )
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)
    for name, handler, text in (
        ("summary", summary, "totals per reporter and per source IP"),
        ("list", list_reports, "one line per report, newest first"),
    ):
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument("domain", metavar="DOMAIN")
        verb.add_argument("--days", type=_days, default=None, metavar="N",
                          help="only reports whose range ends in the last N days")
        if name == "summary":
            verb.add_argument("--top", type=_count, default=20, metavar="N",
                              help="source IPs shown, most messages first (0 = all; default 20)")
        add_config_option(verb)
        verb.set_defaults(handler=handler)
    importing = verbs.add_parser(
        "import", help="record the reports in an account's INBOX",
        description="Record the reports found in ADDRESS's INBOX that are not recorded yet "
        "(reports for domains not served here are skipped).")
    importing.add_argument("address", metavar="ADDRESS")
    add_config_option(importing)
    importing.set_defaults(handler=import_reports)


def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of days, 1 or more")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give a number, 0 or more")
    return int(text)


def _since(days: int | None) -> int:
    return 0 if days is None else max(0, int(time.time()) - days * DAY)


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def _percent(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.0f}%)" if whole else "0"


def _dispositions(t: Tally) -> str:
    return " ".join(f"{name}={count}" for name, count in sorted(
        t.dispositions.items(), key=lambda item: (-item[1], item[0])))


def _table(title: str, rows: Iterable[tuple[str, Tally]]) -> list[str]:
    header = (title, "reports", "messages", "dmarc pass", "dkim pass", "spf pass", "dispositions")
    lines = [(name, str(len(t.reports)), str(t.messages), _percent(t.dmarc_pass, t.messages),
              _percent(t.dkim_pass, t.messages), _percent(t.spf_pass, t.messages),
              _dispositions(t)) for name, t in rows]
    widths = [max(len(row[i]) for row in (header, *lines)) for i in range(len(header))]

    def format_row(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:-1], widths[1:-1], strict=True)]
        return "  ".join([*cells, row[-1]]).rstrip()

    return [format_row(header), *(format_row(row) for row in lines)]


def _read(args: argparse.Namespace, directory: LmdbDirectory, store: MaildirStore
          ) -> tuple[str, list[StoredReport]]:
    domain = domain_name(args.domain)
    require_domain(directory, domain)
    return domain, ReportStore(store.db).reports(domain, _since(args.days))


def _where(config: Config, domain: str) -> str:
    """Where reports are recorded from, and how to make that address exist."""
    local = config.msgauth.report_address
    if not local:
        return "[msgauth] report_address is off: use 'mailserver dmarc import ADDRESS'"
    return (f"reports mailed to {local}@{domain} (the rua of 'mailserver dns {domain}') are "
            f"recorded; it needs a mailbox or an alias: mailserver alias add {local}@{domain} "
            f"you@{domain}")


def _period(days: int | None) -> str:
    return "all reports" if days is None else f"the last {days} day(s)"


def summary(args: argparse.Namespace) -> int:
    """Totals, then per reporter and per source IP."""

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        domain, reports = _read(args, directory, store)
        if not reports:
            period = _period(args.days)
            say_note(f"no DMARC reports for {domain} ({period}); {_where(config, domain)}")
            return 0
        total, by_reporter, by_ip = tally(reports)
        first = min(r.date_begin for r in reports)
        last = max(r.date_end for r in reports)
        print(f"DMARC reports for {domain}, {_period(args.days)}: {len(reports)} report(s) "
              f"covering {_day(first)} .. {_day(last)} (UTC)")
        n = total.messages
        print(f"{n} message(s): DMARC pass {_percent(total.dmarc_pass, n)}, aligned DKIM pass "
              f"{_percent(total.dkim_pass, n)}, aligned SPF pass {_percent(total.spf_pass, n)}; "
              f"{_dispositions(total)}")
        print()
        reporters = sorted(by_reporter.items(), key=lambda item: (-item[1].messages, item[0]))
        for line in _table("reporter", reporters):
            print(line)
        print()
        sources = sorted(by_ip.items(), key=lambda item: (-item[1].messages, item[0]))
        shown = sources if args.top == 0 else sources[: args.top]
        for line in _table("source ip", shown):
            print(line)
        if len(shown) < len(sources):
            rest = sum(t.messages for _, t in sources[len(shown):])
            print(f"... {len(sources) - len(shown)} more source IP(s) with {rest} message(s) "
                  "(--top 0 shows all)")
        return 0

    return run_with_storage(args, work)


def list_reports(args: argparse.Namespace) -> int:
    """One line per report, newest first."""

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        domain, reports = _read(args, directory, store)
        if not reports:
            say_note(f"no DMARC reports for {domain} ({_period(args.days)})")
            return 0
        header = ("range end (UTC)", "days", "reporter", "report id", "messages", "dmarc pass",
                  "p", "via")
        rows = []
        for report in reversed(reports):
            total, _, _ = tally([report])
            days = max(1, round((report.date_end - report.date_begin + 1) / DAY))
            rows.append((_date(report.date_end), str(days), report.org_name, report.report_id,
                         str(total.messages), _percent(total.dmarc_pass, total.messages),
                         str(report.policy.get("p", "")), report.via))
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                  .rstrip())
        return 0

    return run_with_storage(args, work)


def import_reports(args: argparse.Namespace) -> int:
    """Record the reports in ADDRESS's INBOX that are not recorded yet."""
    account = address(args.address)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if not store.has_account(account):
            raise CommandError(f"no mailbox for {account}; check the address "
                               "(mailserver user list DOMAIN)")
        reports = ReportStore(store.db)
        inbox = store.account(account).folder("INBOX")
        uids = list(inbox.uids())
        counts = dict.fromkeys(("recorded", "already", "none", "unusable", "foreign", "big"), 0)
        for number, message in enumerate(inbox.messages(uids, meta=False), 1):
            if number % PROGRESS_EVERY == 0:
                print(f"[{number}/{len(uids)}] {account}: {counts['recorded']} recorded so far",
                      file=sys.stderr, flush=True)
            if message.info.size > MAX_MESSAGE:
                counts["big"] += 1
                continue
            with message.open() as source:
                data = source.read()
            try:
                report = find_report(data)
            except NoReport:
                counts["none"] += 1
                continue
            except ReportError as error:
                counts["unusable"] += 1
                print(f"uid {message.info.uid}: not recorded: {error.reason}", file=sys.stderr)
                continue
            if not served_domain(report.policy.domain, directory.has_domain):
                counts["foreign"] += 1
                print(f"uid {message.info.uid}: a report for {report.policy.domain}, "
                      "not a domain served here", file=sys.stderr)
                continue
            if reports.has(report):
                counts["already"] += 1
                continue
            new = await reports.record(report, received=message.info.internaldate,
                                       via="import")
            counts["recorded" if new else "already"] += 1
        print(f"{account}: {len(uids)} message(s) read; {counts['recorded']} report(s) recorded, "
              f"{counts['already']} already recorded, {counts['none']} without a report, "
              f"{counts['unusable']} unusable, {counts['foreign']} for domains not served here, "
              f"{counts['big']} too large")
        return 0

    return run_with_storage(args, work)
