"""The client matrix: which real mail clients work with the server, feature by feature, as the
test run found it (issue 11).

A test names the client and the features it proves with a marker::

    @pytest.mark.client_matrix("msmtp", "send", "starttls", "auth")
    def test_msmtp_submits_over_starttls(mail_server): ...

This module is a pytest plugin (``tests/clients/conftest.py`` registers it; elsewhere
``pytest -p tests.clients.matrix``) and a script:

- during a run it records the outcome of every marked test (passed, failed, skipped with its
  reason, xfailed) for each ``(client, feature)`` the marker names;
- at the end it writes ``build/clients/results.json`` (the raw outcomes) and
  ``build/clients/matrix.md``: one row per client and feature, in the order of
  :data:`CLIENTS` and :data:`FEATURES`, with the tests behind each row;
- ``python -m tests.clients.matrix [results.json] [--out matrix.md]`` renders the Markdown
  again from a saved results file.

Guarantees: a row exists only for a ``(client, feature)`` some test of the run named, and its
result is computed from those tests' outcomes alone (``fail`` if any failed or errored,
``pass`` if none failed and at least one passed, ``skipped`` with the reasons if all
skipped). Nothing in the table is written by hand. Unknown client or feature names fail the
test at collection, so a typo cannot invent a row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

MARKER = "client_matrix"
#: Key of the marker's names in a test report's ``user_properties``.
PROPERTY = "client_matrix"
#: Where the run's results go, relative to the pytest root directory.
OUTPUT = Path("build") / "clients"

#: Every client the matrix knows, in table order, with what it is.
CLIENTS: dict[str, str] = {
    "swaks": "swaks (SMTP test tool)",
    "msmtp": "msmtp (SMTP submission client)",
    "Postfix": "Postfix (relay into us; our spool out to it)",
    "smtplib": "Python smtplib",
    "imaplib": "Python imaplib",
    "poplib": "Python poplib",
    "curl": "curl (SMTP, IMAP, POP3)",
    "mbsync": "mbsync / isync (IMAP sync)",
    "offlineimap": "offlineimap3 (IMAP sync)",
    "getmail6": "getmail6 (POP3 retriever)",
    "fetchmail": "fetchmail (POP3 retriever)",
    "mpop": "mpop (POP3 retriever)",
    "mutt": "mutt in batch mode",
    "Thunderbird": "Thunderbird (replayed session)",
    "Apple Mail/iOS": "Apple Mail / iOS Mail (replayed session)",
    "Outlook": "Outlook (replayed session)",
    "K-9": "K-9 Mail / Thunderbird for Android (replayed session)",
}

#: Every feature a row may name, in column order, with what passing it means.
FEATURES: dict[str, str] = {
    "send": "a message submitted or relayed is stored for the local recipient",
    "relay": "mail passes between us and another MTA",
    "pipelining": "commands sent without waiting are answered in order",
    "starttls": "the plain port upgrades to TLS",
    "implicit tls": "TLS from the first byte (465/993/995)",
    "auth": "the client logs in (and a wrong password is refused)",
    "id": "the ID exchange a client uses to identify itself",
    "list": "folders are listed with their attributes",
    "fetch": "messages are read or retrieved intact",
    "append": "a message uploaded by the client is stored",
    "idle": "the client is told of new mail while idling",
    "flags sync": "flag changes reach the other side",
    "move": "messages move between folders",
    "delete": "deleted messages are gone on the server",
    "uidl": "POP3 unique ids let a client fetch only new mail",
    "errors": "protocol errors are clear and the session goes on",
}

RESULT_ORDER = ("fail", "pass", "skipped")


@dataclass
class Outcome:
    """What one test's run said: ``passed``, ``failed``, ``skipped`` or ``xfailed``."""

    nodeid: str
    outcome: str = "passed"
    reason: str = ""
    names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "outcome": self.outcome, "reason": self.reason,
                "names": list(self.names)}


@dataclass
class Row:
    """One client and feature with the tests that name them."""

    client: str
    feature: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def result(self) -> str:
        """``fail`` if any test failed (xfail counts as a failure), ``pass`` if none failed and
        one passed, else ``skipped``."""
        kinds = {outcome.outcome for outcome in self.outcomes}
        if kinds & {"failed", "xfailed"}:
            return "fail"
        if "passed" in kinds:
            return "pass"
        return "skipped"


def validate(names: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """``(client, features)`` of a marker's arguments; ValueError naming the bad one."""
    if len(names) < 2:
        raise ValueError(f"@pytest.mark.{MARKER}(client, feature, ...) needs a client and "
                         f"at least one feature, got {list(names)}")
    client, *features = names
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r} in @pytest.mark.{MARKER}; known: "
                         f"{', '.join(CLIENTS)} (add it to CLIENTS in tests/clients/matrix.py)")
    for feature in features:
        if feature not in FEATURES:
            raise ValueError(f"unknown feature {feature!r} in @pytest.mark.{MARKER}; known: "
                             f"{', '.join(FEATURES)} (add it to FEATURES in "
                             "tests/clients/matrix.py)")
    return client, tuple(features)


def rows(outcomes: Iterable[Outcome]) -> list[Row]:
    """The matrix rows the outcomes make, in :data:`CLIENTS` then :data:`FEATURES` order."""
    table: dict[tuple[str, str], Row] = {}
    for outcome in outcomes:
        client, features = validate(outcome.names)
        for feature in features:
            row = table.setdefault((client, feature), Row(client, feature))
            row.outcomes.append(outcome)
    client_order, feature_order = list(CLIENTS), list(FEATURES)
    return sorted(table.values(), key=lambda row: (client_order.index(row.client),
                                                   feature_order.index(row.feature)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _evidence(row: Row) -> str:
    parts = []
    for outcome in row.outcomes:
        name = outcome.nodeid.split("::", 1)[-1]
        mark = {"passed": "", "failed": " (failed)", "xfailed": " (xfail)",
                "skipped": " (skipped)"}[outcome.outcome]
        parts.append(f"`{name}`{mark}")
    return ", ".join(parts)


#: How the overview grid shows a row's result.
SYMBOLS = {"pass": "pass", "fail": "**FAIL**", "skipped": "skip"}


def overview(table: Sequence[Row]) -> list[str]:
    """A grid of the same rows: one line per client, one column per feature any row names
    (an empty cell: no test of that client proves that feature)."""
    features = [name for name in FEATURES if any(row.feature == name for row in table)]
    clients = sorted({row.client for row in table}, key=list(CLIENTS).index)
    cells = {(row.client, row.feature): SYMBOLS[row.result] for row in table}
    lines = ["| client | " + " | ".join(features) + " |",
             "|---" * (len(features) + 1) + "|"]
    for client in clients:
        lines.append(f"| {_cell(client)} | "
                     + " | ".join(cells.get((client, name), "") for name in features) + " |")
    return lines


def render(outcomes: Sequence[Outcome], when: str = "") -> str:
    """The Markdown report: counts, then one row per client and feature, then the reasons of
    the skipped rows."""
    table = rows(outcomes)
    counts = {result: sum(row.result == result for row in table) for result in RESULT_ORDER}
    clients = sorted({row.client for row in table}, key=list(CLIENTS).index)
    lines = [
        "# Client matrix",
        "",
        f"Generated by `tests/clients/matrix.py` from the outcomes of the pytest run{when}: "
        f"{len(clients)} clients, {len(table)} rows: {counts['pass']} pass, "
        f"{counts['fail']} fail, {counts['skipped']} skipped (a client program missing "
        "here). Each row is proven by the tests named in it.",
        "",
        *overview(table),
        "",
        "## Rows",
        "",
        "| client | feature | result | tests |",
        "|---|---|---|---|",
    ]
    for row in table:
        lines.append(f"| {_cell(CLIENTS[row.client])} | {row.feature} | **{row.result}** | "
                     f"{_cell(_evidence(row))} |")
    reasons = sorted({outcome.reason for row in table if row.result == "skipped"
                      for outcome in row.outcomes if outcome.reason})
    if reasons:
        lines += ["", "## Skipped", ""] + [f"- {_cell(reason)}" for reason in reasons]
    lines += ["", "## Features", ""]
    lines += [f"- **{name}**: {meaning}" for name, meaning in FEATURES.items()]
    return "\n".join(lines) + "\n"


def write(outcomes: Sequence[Outcome], directory: Path, when: str = "") -> Path:
    """Write ``results.json`` and ``matrix.md`` into ``directory``; the Markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(
        json.dumps([outcome.to_json() for outcome in outcomes], indent=1) + "\n")
    path = directory / "matrix.md"
    path.write_text(render(outcomes, when))
    return path


def load(path: Path) -> list[Outcome]:
    """The outcomes saved in a ``results.json``."""
    return [Outcome(item["nodeid"], item["outcome"], item["reason"], tuple(item["names"]))
            for item in json.loads(path.read_text())]


# --- the pytest plugin --------------------------------------------------------------------------


class MatrixPlugin:
    """Collects the outcomes of marked tests and writes the report at the end of the run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.outcomes: dict[str, Outcome] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marks = list(item.iter_markers(MARKER))
            for mark in marks:
                validate(mark.args)  # a ValueError here names the typo at collection
                item.user_properties.append((PROPERTY, list(mark.args)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        names = [tuple(str(name) for name in value)  # value: the marker's argument list
                 for key, value in report.user_properties
                 if key == PROPERTY and isinstance(value, list)]
        if not names:
            return
        for each in names:
            key = f"{report.nodeid}|{','.join(each)}"
            outcome = self.outcomes.setdefault(key, Outcome(report.nodeid, names=each))
            if outcome.outcome == "failed":
                continue
            if hasattr(report, "wasxfail"):
                outcome.outcome, outcome.reason = "xfailed", str(report.wasxfail)
            elif report.failed:
                outcome.outcome, outcome.reason = "failed", f"failed in {report.when}"
            elif report.skipped:
                outcome.outcome = "skipped"
                longrepr = report.longrepr
                reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
                outcome.reason = reason.removeprefix("Skipped: ")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.outcomes or hasattr(self.config, "workerinput"):
            return
        when = datetime.now(UTC).strftime(" of %Y-%m-%d %H:%M UTC")
        self.path = write(list(self.outcomes.values()), self.config.rootpath / OUTPUT, when)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        path = getattr(self, "path", None)
        if path is not None:
            table = rows(self.outcomes.values())
            failing = sum(row.result == "fail" for row in table)
            terminalreporter.write_line(
                f"client matrix: {path} ({len(table)} rows, {failing} failing)")


def register(config: pytest.Config) -> None:
    """Declare the marker and install the plugin once per run."""
    config.addinivalue_line(
        "markers", f"{MARKER}(client, *features): a client-matrix row this test proves "
                   "(tests/clients/matrix.py)")
    if not config.pluginmanager.has_plugin("client_matrix"):
        config.pluginmanager.register(MatrixPlugin(config), "client_matrix")


def pytest_configure(config: pytest.Config) -> None:
    """``pytest -p tests.clients.matrix``: the plugin without tests/clients' conftest."""
    register(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the client matrix from saved results.")
    parser.add_argument("results", nargs="?", type=Path, default=OUTPUT / "results.json")
    parser.add_argument("--out", type=Path, help="the Markdown file (default: stdout)")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"no results at {args.results}: run pytest tests/clients first", file=sys.stderr)
        return 1
    try:
        text = render(load(args.results))
    except (ValueError, KeyError, json.JSONDecodeError) as error:
        print(f"{args.results} is not a client-matrix results file: {error}", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
