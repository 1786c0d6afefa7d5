"""pytest plugin: a `pass` row of the conformance matrix fails the run when a test it cites fails.

`test_matrix.py` proves that every test a row cites exists. This plugin proves the other half
of the promise: while pytest runs, it records the outcome of every test cited by a row whose
status is `pass`, and at the end of the session it lists, per cited test, the rows that depend
on it, and makes the run fail (exit status 1) when

- a cited test failed (in setup, call or teardown), or its file failed to import;
- a cited test is marked xfail (a `pass` row cannot rest on a test expected to fail);
- a cited test skipped, in strict mode (below).

Only tests that were part of the run count: `pytest tests/smtp` judges the rows citing SMTP
tests and says nothing about the others, and a test deselected with `-k` or never reached
after `-x` is not judged either. A cited dialog (`dialogs/smtp/x.dialog`) counts through the
test that plays it against our server, `tests/smtp/test_dialogs.py::test_dialog[x.dialog]`
(see :data:`DIALOG_TESTS`). A cited node id without a `[param]` suffix stands for every
parametrisation of that test.

Skips. A cited test that skips because something on the machine is missing (Dovecot, Postfix,
the shared corpus, ...) proves nothing. On a developer's machine that is normal, so the skip
is listed in the summary and does not fail the run (mode `report`). In CI the Debian programs
are installed by `scripts/install-debian-deps`, so a skip there means the proof did not run:
the run fails (mode `strict`). The mode comes from the environment:

- `MAILSERVER_CONFORMANCE=strict|report|off` when set;
- otherwise `strict` when `CI` is set to anything but ``""``, ``0``, ``false`` or ``no`` (every
  common CI service sets `CI=true`), else `report`.

`off` disables the plugin. It is loaded by `tests/conftest.py` (`register`), so it runs
whenever the suite's conftest does; it does nothing on pytest-xdist workers (the controller
receives their reports).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from matrix import CONFORMANCE_DIR, Matrix, Row, load  # noqa: E402  (rfc-conformance/ is not a package)

PLUGIN_NAME = "rfc-conformance-outcomes"
MODES = ("strict", "report", "off")

DIALOG_TESTS = {
    "smtp": "tests/smtp/test_dialogs.py::test_dialog[{name}]",
    "imap": "tests/imap/test_dialogs.py::test_dialog[{name}]",
    "pop3": "tests/pop3/test_dialogs.py::test_dialog[{name}]",
}
"""The test that plays a cited dialog against our server, by protocol (`{name}`: file name)."""

_PARAM = re.compile(r"\[.*\]$")
_FALSE = ("", "0", "false", "no")


def mode_from_environment(environ: dict[str, str] | None = None) -> str:
    """Return the mode: MAILSERVER_CONFORMANCE if set, else strict under CI, else report.

    Raise ValueError (shown by pytest as a usage error) for an unknown MAILSERVER_CONFORMANCE.
    """
    environ = dict(os.environ if environ is None else environ)
    chosen = environ.get("MAILSERVER_CONFORMANCE")
    if chosen is not None:
        chosen = chosen.strip().lower()
        if chosen not in MODES:
            raise ValueError(
                f"MAILSERVER_CONFORMANCE={environ['MAILSERVER_CONFORMANCE']!r} is not one of "
                f"{', '.join(MODES)}: unset it, or pick one (strict fails the run on a skipped "
                "cited test, report lists it)"
            )
        return chosen
    return "strict" if environ.get("CI", "").strip().lower() not in _FALSE else "report"


def cited_tests(matrix: Matrix) -> dict[str, list[Row]]:
    """Map each pytest node id cited by a `pass` row (dialogs translated through
    :data:`DIALOG_TESTS`) to the rows citing it, in table order."""
    cited: dict[str, list[Row]] = {}
    for row in matrix.rows:
        if row.status != "pass":
            continue
        for ref in row.tests:
            node = dialog_test(ref) if ref.startswith("dialogs/") else ref
            if node is not None:
                cited.setdefault(node, []).append(row)
    return cited


def dialog_test(ref: str) -> str | None:
    """Return the node id of the test playing dialog `ref` against our server, or None."""
    parts = ref.split("/")
    if len(parts) != 3 or parts[1] not in DIALOG_TESTS:
        return None
    return DIALOG_TESTS[parts[1]].format(name=parts[2])


@dataclass(frozen=True)
class Verdict:
    """What happened to one cited test: `outcome` is failed, xfail or skipped; `detail` says
    which node ids and why (the skip reason, the failing phase)."""

    node: str
    outcome: str
    detail: str
    rows: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.node}: {self.outcome} ({self.detail}); cited by {', '.join(self.rows)}"


@dataclass
class Outcomes:
    """Outcomes of the run's tests by node id, and the judgement of the cited ones.

    `record` takes every test report; `judge` compares them with the cited node ids. A node
    id's outcome is the worst of its phases: failed > xfail > skipped > passed.
    """

    prefix: str = ""
    results: dict[str, tuple[str, str]] = field(default_factory=dict)
    broken_files: dict[str, str] = field(default_factory=dict)

    _RANK = {"passed": 0, "skipped": 1, "xfail": 2, "failed": 3}

    def record(self, report: pytest.TestReport) -> None:
        """Note one phase's report of one test."""
        if report.passed:
            outcome, detail = "passed", ""
        elif report.failed:
            outcome, detail = "failed", f"{report.when} failed"
        elif hasattr(report, "wasxfail"):
            outcome, detail = "xfail", f"marked xfail: {report.wasxfail or 'no reason given'}"
        else:
            outcome, detail = "skipped", _skip_reason(report)
        node = self._local(report.nodeid)
        previous = self.results.get(node)
        if previous is None or self._RANK[outcome] > self._RANK[previous[0]]:
            self.results[node] = (outcome, detail)

    def record_collection(self, report: pytest.CollectReport) -> None:
        """Note a file that failed to collect (import error, syntax error)."""
        if report.failed:
            self.broken_files[self._local(report.nodeid).split("::")[0]] = "failed to collect"

    def _local(self, nodeid: str) -> str:
        """The node id relative to the checkout (pytest's is relative to its rootdir)."""
        return (
            nodeid[len(self.prefix) :] if self.prefix and nodeid.startswith(self.prefix) else nodeid
        )

    def judge(
        self, cited: dict[str, list[Row]], strict: bool
    ) -> tuple[list[Verdict], list[Verdict]]:
        """Return (problems, notes): cited tests that failed, are xfail, or (when `strict`)
        skipped are problems; skips outside strict mode are notes. Cited tests that did not
        run are neither."""
        by_base: dict[str, list[str]] = {}
        for node in self.results:
            by_base.setdefault(_PARAM.sub("", node), []).append(node)
        problems: list[Verdict] = []
        notes: list[Verdict] = []
        for ref, rows in cited.items():
            ids = tuple(row.id for row in rows)
            file_part = ref.split("::")[0]
            if file_part in self.broken_files:
                problems.append(Verdict(ref, "failed", self.broken_files[file_part], ids))
                continue
            nodes = [ref] if ref in self.results else by_base.get(ref, []) if "[" not in ref else []
            if not nodes:
                continue
            worst = max((self.results[node] + (node,) for node in nodes), key=self._rank)
            outcome, detail, node = worst
            if outcome == "passed":
                continue
            where = f"{node}: {detail}" if node != ref else detail
            verdict = Verdict(ref, outcome, where, ids)
            if outcome == "skipped" and not strict:
                notes.append(verdict)
            else:
                problems.append(verdict)
        return problems, notes

    def _rank(self, item: tuple[str, str, str]) -> int:
        return self._RANK[item[0]]


def _skip_reason(report: pytest.TestReport) -> str:
    """The reason text of a skip report."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class OutcomesPlugin:
    """The pytest hooks: record outcomes, judge at session end, report in the summary."""

    def __init__(self, config: pytest.Config, mode: str, matrix: Matrix, checkout: Path) -> None:
        self.config = config
        self.mode = mode
        self.cited = cited_tests(matrix)
        prefix = ""
        try:
            relative = checkout.relative_to(Path(config.rootpath).resolve())
            prefix = "" if str(relative) == "." else relative.as_posix() + "/"
        except ValueError:
            pass
        self.outcomes = Outcomes(prefix)
        self.problems: list[Verdict] = []
        self.notes: list[Verdict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.outcomes.record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.outcomes.record_collection(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.problems, self.notes = self.outcomes.judge(self.cited, self.mode == "strict")
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.problems and not self.notes:
            return
        write = terminalreporter.write_line
        if self.problems:
            terminalreporter.section("rfc-conformance: 'pass' rows whose tests did not pass")
            for verdict in self.problems:
                write(str(verdict))
            write(
                "Fix the test or the code, or change the rows' status in "
                "rfc-conformance/requirements/ (todo, or deviation: <reason>)."
            )
        if self.notes:
            terminalreporter.section("rfc-conformance: cited tests skipped (not proven here)")
            for verdict in self.notes:
                write(str(verdict))
            write(
                "Not a failure outside CI (MAILSERVER_CONFORMANCE=report); under CI, or with "
                "MAILSERVER_CONFORMANCE=strict, these fail the run."
            )


def register(config: pytest.Config, conformance_dir: Path = CONFORMANCE_DIR) -> None:
    """Register the plugin on `config` once (called from tests/conftest.py's
    pytest_configure) for the tree in `conformance_dir`, whose parent is the checkout the
    cited node ids are relative to; do nothing on xdist workers or in mode `off`."""
    if config.pluginmanager.has_plugin(PLUGIN_NAME) or hasattr(config, "workerinput"):
        return
    try:
        mode = mode_from_environment()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    if mode == "off":
        return
    conformance_dir = Path(conformance_dir).resolve()
    plugin = OutcomesPlugin(config, mode, load(conformance_dir), conformance_dir.parent)
    config.pluginmanager.register(plugin, PLUGIN_NAME)
