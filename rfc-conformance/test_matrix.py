"""Tests for matrix.py: the real tree is consistent, and the checker finds each kind of defect."""

from pathlib import Path

import pytest
from matrix import CONFORMANCE_DIR, check, load, main, render_markdown

HEADER = "id\tsection\tlevel\tsummary\tstatus\ttests\n"

GOOD_TEST_FILE = """\
import unittest


class StoreContract:
    def test_inherited(self):
        pass


class TestMemory(StoreContract, unittest.TestCase):
    def test_own(self):
        pass


def test_plain():
    pass
"""

IMPORTED_MIXIN_FILE = """\
from tests.mixins import Contract
from tests import mixins


class TestImported(Contract):
    pass


class TestModuleAttribute(mixins.Contract):
    pass
"""

DIALOG = """\
# protocol: smtp
# requirements: 5321-4.1.1.1-a
s~ 220 .*
c: QUIT
s: 221 bye
close
"""


def make_tree(tmp_path: Path, rows: str, dialogs: dict[str, str] | None = None) -> Path:
    """Build a checkout in tmp_path with one table (header + `rows`), a test file and dialogs."""
    conformance = tmp_path / "rfc-conformance"
    (conformance / "requirements").mkdir(parents=True)
    (conformance / "requirements" / "rfc5321.tsv").write_text("# comment\n" + HEADER + rows)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(GOOD_TEST_FILE)
    for name, text in (dialogs or {}).items():
        path = conformance / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return conformance


def row(
    row_id="5321-4.1.1.1-a",
    section="4.1.1.1",
    level="MUST",
    summary="Greet",
    status="pass",
    tests="tests/test_x.py::test_plain",
) -> str:
    """Return one tab-separated table line."""
    return "\t".join([row_id, section, level, summary, status, tests]) + "\n"


def messages(conformance: Path) -> list[str]:
    """Return the problems of the tree as strings."""
    return [str(problem) for problem in check(conformance)]


def test_real_tree_is_consistent():
    """Every table row, cited test and dialog in rfc-conformance/ cross-references correctly."""
    problems = check(CONFORMANCE_DIR)
    if problems:
        pytest.fail("conformance matrix problems:\n" + "\n".join(map(str, problems)), False)


def test_consistent_synthetic_tree_has_no_problems(tmp_path):
    """A tree whose rows cite existing functions, methods (inherited too) and dialogs is clean."""
    tests = (
        "tests/test_x.py::test_plain tests/test_x.py::TestMemory::test_own "
        "tests/test_x.py::TestMemory::test_inherited[param-1] dialogs/smtp/quit.dialog"
    )
    conformance = make_tree(
        tmp_path,
        row(tests=tests)
        + row("5321-4.1.1.2-a", "4.1.1.2", "SHOULD NOT", status="todo", tests="")
        + row("5321-4.1.1.3-a", "4.1.1.3", "MAY", status="deviation: we are strict", tests=""),
        {"dialogs/smtp/quit.dialog": DIALOG},
    )
    assert messages(conformance) == []


def test_method_inherited_from_imported_mixin_is_found(tmp_path):
    """A method defined on a base class imported from another checkout module counts as present."""
    conformance = make_tree(
        tmp_path,
        row(
            tests="tests/test_imp.py::TestImported::test_contract "
            "tests/test_imp.py::TestModuleAttribute::test_contract"
        ),
    )
    (tmp_path / "tests" / "mixins.py").write_text(
        "class Contract:\n    def test_contract(self):\n        pass\n"
    )
    (tmp_path / "tests" / "test_imp.py").write_text(IMPORTED_MIXIN_FILE)
    assert messages(conformance) == []


@pytest.mark.parametrize(
    ("tests", "expected"),
    [
        ("tests/test_x.py::test_missing", "no function test_missing in tests/test_x.py"),
        ("tests/test_x.py::TestMemory::test_missing", "no method test_missing in class TestMemory"),
        ("tests/test_x.py::TestOther::test_own", "no class TestOther in tests/test_x.py"),
        ("tests/test_gone.py::test_plain", "no file tests/test_gone.py"),
        ("tests/test_x.py::StoreContract", "must name a test function"),
    ],
)
def test_row_citing_missing_test_is_reported(tmp_path, tests, expected):
    """A row citing a test that does not exist is reported at the row's file and line."""
    conformance = make_tree(tmp_path, row(tests=tests))
    found = messages(conformance)
    assert len(found) == 1
    assert found[0].startswith("rfc-conformance/requirements/rfc5321.tsv:3: 5321-4.1.1.1-a cites")
    assert expected in found[0]


def test_row_citing_missing_dialog_is_reported(tmp_path):
    """A row citing a dialog file that does not exist is reported."""
    conformance = make_tree(tmp_path, row(tests="dialogs/smtp/none.dialog"))
    assert messages(conformance) == [
        "rfc-conformance/requirements/rfc5321.tsv:3: 5321-4.1.1.1-a cites missing dialog "
        "dialogs/smtp/none.dialog"
    ]


def test_dialog_naming_unknown_id_is_reported(tmp_path):
    """A dialog whose requirements line names an id found in no table is reported."""
    dialog = DIALOG.replace("5321-4.1.1.1-a", "5321-4.1.1.1-a 5321-9.9-z")
    conformance = make_tree(
        tmp_path, row(tests="dialogs/smtp/quit.dialog"), {"dialogs/smtp/quit.dialog": dialog}
    )
    assert messages(conformance) == [
        "rfc-conformance/dialogs/smtp/quit.dialog:2: names unknown requirement 5321-9.9-z"
    ]


def test_dialog_not_cited_by_its_row_is_reported(tmp_path):
    """A dialog naming a row that does not cite it back is reported."""
    conformance = make_tree(tmp_path, row(), {"dialogs/smtp/quit.dialog": DIALOG})
    found = messages(conformance)
    assert len(found) == 1
    assert "quit.dialog:2: names 5321-4.1.1.1-a, but that row" in found[0]


def test_row_citing_dialog_that_does_not_name_it_is_reported(tmp_path):
    """A row citing a dialog whose requirements line omits the row's id is reported."""
    dialog = DIALOG.replace("5321-4.1.1.1-a", "5321-4.1.1.2-a")
    conformance = make_tree(
        tmp_path,
        row(tests="dialogs/smtp/quit.dialog")
        + row("5321-4.1.1.2-a", "4.1.1.2", tests="dialogs/smtp/quit.dialog"),
        {"dialogs/smtp/quit.dialog": dialog},
    )
    found = messages(conformance)
    assert len(found) == 1
    assert "rfc5321.tsv:3: 5321-4.1.1.1-a cites dialogs/smtp/quit.dialog, whose" in found[0]


def test_dialog_without_requirements_or_in_wrong_directory_is_reported(tmp_path):
    """A dialog naming no requirement, or under another protocol's directory, is reported."""
    dialog = DIALOG.replace("# requirements: 5321-4.1.1.1-a\n", "")
    conformance = make_tree(tmp_path, row(), {"dialogs/imap/quit.dialog": dialog})
    assert messages(conformance) == [
        "rfc-conformance/dialogs/imap/quit.dialog:1: protocol smtp does not match directory imap/",
        "rfc-conformance/dialogs/imap/quit.dialog: dialog names no requirement "
        "('# requirements: <ids>')",
    ]


def test_unparsable_dialog_is_reported_with_line(tmp_path):
    """A dialog with a syntax error is reported at its file and line."""
    conformance = make_tree(tmp_path, row(), {"dialogs/smtp/bad.dialog": DIALOG + "x: what\n"})
    found = messages(conformance)
    assert found == ["rfc-conformance/dialogs/smtp/bad.dialog:7: no step may follow 'close'"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("5321-4.1.1.1-a\t4.1.1.1\tMUST\tGreet\n", "expected 6 tab-separated columns"),
        (
            "5321-4.1.1.1-a 4.1.1.1 MUST Greet pass tests/test_x.py::test_plain\n",
            "expected 6 tab-separated columns",
        ),
        (row(level="MUSTN'T"), 'unknown level "MUSTN\'T"'),
        (row(status="passed"), "unknown status 'passed'"),
        (row(status="deviation", tests=""), "a deviation needs a reason"),
        (row(tests=""), "has status pass but cites no test"),
        (row(tests="test_plain"), "unrecognised test reference 'test_plain'"),
        (row(row_id="4.1.1.1-a"), "is not like 5321-4.5.3.1.4-a"),
        (row(row_id="5322-4.1.1.1-a"), "does not start with 5321-"),
        (row(section="4.1.1.2"), "does not carry its section '4.1.1.2'"),
    ],
)
def test_malformed_row_is_reported_with_file_and_line(tmp_path, line, expected):
    """A row breaking the table format is reported with the table's file name and line number."""
    conformance = make_tree(tmp_path, "\n# a comment and a blank line above\n" + line)
    found = messages(conformance)
    assert len(found) == 1, found
    assert found[0].startswith("rfc-conformance/requirements/rfc5321.tsv:5: ")
    assert expected in found[0]


def test_wrong_header_is_reported(tmp_path):
    """A table whose header line is not the six column names is reported at that line."""
    conformance = make_tree(tmp_path, "")
    table = conformance / "requirements" / "rfc5321.tsv"
    table.write_text("id\tsection\tlevel\tsummary\tstatus\n" + row())
    assert messages(conformance) == [
        "rfc-conformance/requirements/rfc5321.tsv:1: header must be "
        "id <TAB> section <TAB> level <TAB> summary <TAB> status <TAB> tests"
    ]


def test_duplicate_id_across_tables_is_reported(tmp_path):
    """An id used in two tables is reported at the second use, naming the first."""
    conformance = make_tree(tmp_path, row())
    (conformance / "requirements" / "rfc6409.tsv").write_text(
        HEADER + row("5321-4.1.1.1-a", summary="Again")
    )
    found = messages(conformance)
    assert (
        "rfc-conformance/requirements/rfc6409.tsv:2: duplicate id 5321-4.1.1.1-a "
        "(first at rfc-conformance/requirements/rfc5321.tsv:3)"
    ) in found


def test_markdown_report_counts_statuses_per_rfc(tmp_path):
    """The Markdown report has one count line per RFC and lists each row with its tests."""
    conformance = make_tree(
        tmp_path,
        row()
        + row("5321-4.1.1.2-a", "4.1.1.2", status="todo", tests="")
        + row("5321-4.1.1.3-a", "4.1.1.3", summary="a | b", status="deviation: strict", tests=""),
    )
    report = render_markdown(load(conformance))
    assert "| RFC 5321 | 1 | 1 | 0 | 1 | 3 |" in report
    assert "| 5321-4.1.1.3-a | 4.1.1.3 | MUST | deviation: strict | a \\| b |  |" in report
    assert "`tests/test_x.py::test_plain`" in report
    assert "## Problems" not in report


def test_cli_exit_status_reflects_problems(tmp_path, capsys):
    """The CLI prints OK and returns 0 on a clean tree, else lists problems and returns 1."""
    clean = make_tree(tmp_path / "a", row())
    assert main(["--root", str(clean)]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 requirements in 1 tables")
    broken = make_tree(tmp_path / "b", row(tests="tests/test_x.py::test_missing"))
    assert main(["--root", str(broken), "--markdown"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("# RFC conformance matrix")
    assert "test_missing" in captured.err
