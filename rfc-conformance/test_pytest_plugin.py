"""Tests for pytest_plugin.py: a `pass` row fails the run when a cited test does not pass.

The end-to-end tests run pytest in a subprocess on a small synthetic checkout (a table, a
dialog and a test file) whose conftest registers the plugin the way tests/conftest.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from matrix import load
from pytest_plugin import DIALOG_TESTS, cited_tests, dialog_test, mode_from_environment

PLUGIN = Path(__file__).resolve().parent / "pytest_plugin.py"
HEADER = "id\tsection\tlevel\tsummary\tstatus\ttests\n"

TESTS = """\
import pytest


def test_ok():
    pass


def test_broken():
    assert 1 == 2


def test_absent_program():
    pytest.skip("frobd is not installed")


@pytest.mark.xfail(reason="known bug")
def test_expected_to_fail():
    assert False


@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1


def test_uncited_failure():
    assert False
"""

OTHER_TESTS = """\
def test_fine():
    pass
"""

DIALOG_TEST = """\
import pytest


@pytest.mark.parametrize("name", ["greet.dialog"])
def test_dialog(name):
    assert name != "greet.dialog", "the dialog failed"
"""

CONFTEST = f"""\
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("rfc_conformance_pytest_plugin", {str(PLUGIN)!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)


def pytest_configure(config):
    module.register(config, Path(__file__).resolve().parent / "rfc-conformance")
"""

DIALOG = """\
# protocol: smtp
# requirements: 5321-4.2-a
s~ 220 .*
close
"""


def row(row_id: str, section: str, status: str, tests: str) -> str:
    return "\t".join([row_id, section, "MUST", "A rule", status, tests]) + "\n"


def make_checkout(tmp_path: Path, rows: str) -> Path:
    """A checkout with one table of `rows`, three test files and (when cited) greet.dialog."""
    conformance = tmp_path / "rfc-conformance"
    (conformance / "requirements").mkdir(parents=True)
    (conformance / "requirements" / "rfc5321.tsv").write_text(HEADER + rows)
    if "greet.dialog" in rows:
        (conformance / "dialogs" / "smtp").mkdir(parents=True)
        (conformance / "dialogs" / "smtp" / "greet.dialog").write_text(DIALOG)
    (tmp_path / "tests" / "smtp").mkdir(parents=True)
    (tmp_path / "tests" / "test_a.py").write_text(TESTS)
    (tmp_path / "tests" / "test_b.py").write_text(OTHER_TESTS)
    (tmp_path / "tests" / "smtp" / "test_dialogs.py").write_text(DIALOG_TEST)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    assert load(conformance).problems == []
    return tmp_path


def run_pytest(checkout: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess at `checkout` with `environ` on top of a CI-free environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MAILSERVER_CONFORMANCE")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins are not needed here
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_passing_cited_tests_leave_the_run_green(tmp_path):
    """Rows citing only passing tests (a parametrised one by its passing id) add nothing."""
    checkout = make_checkout(
        tmp_path,
        row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_ok tests/test_a.py::test_param[1]"),
    )
    result = run_pytest(checkout, "tests/test_a.py::test_ok", "tests/test_a.py::test_param")
    assert result.returncode == 1  # test_param[2] fails: pytest's own verdict
    assert "rfc-conformance: " not in result.stdout
    result = run_pytest(checkout, "tests/test_a.py::test_ok", "tests/test_a.py::test_param[1]")
    assert result.returncode == 0, result.stdout
    assert "rfc-conformance: " not in result.stdout


def test_failing_cited_test_is_listed_with_its_rows(tmp_path):
    """A cited test that fails is listed with every pass row citing it; a row that is not
    `pass` (todo, deviation) citing a failing test is not listed."""
    checkout = make_checkout(
        tmp_path,
        row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_broken")
        + row("5321-4.1-b", "4.1", "pass", "tests/test_a.py::test_broken tests/test_a.py::test_ok")
        + row("5321-4.3-a", "4.3", "todo", "tests/test_a.py::test_uncited_failure"),
    )
    result = run_pytest(checkout, "tests/test_a.py")
    assert result.returncode == 1
    out = result.stdout
    assert "'pass' rows whose tests did not pass" in out
    assert (
        "tests/test_a.py::test_broken: failed (call failed); cited by 5321-4.1-a, 5321-4.1-b"
    ) in out
    assert "test_uncited_failure: failed" not in out


def test_xfail_cited_test_fails_the_run(tmp_path):
    """A pass row cannot rest on a test marked xfail, though pytest counts it as no failure."""
    checkout = make_checkout(
        tmp_path, row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_expected_to_fail")
    )
    result = run_pytest(checkout, "tests/test_a.py::test_expected_to_fail")
    assert result.returncode == 1
    assert "test_expected_to_fail: xfail (marked xfail: known bug); cited by 5321-4.1-a" in (
        result.stdout
    )


def test_unparametrised_citation_covers_every_parametrisation(tmp_path):
    """A node id cited without [param] fails when any of its parametrisations fails."""
    checkout = make_checkout(
        tmp_path, row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_param")
    )
    result = run_pytest(checkout, "tests/test_a.py::test_param")
    assert result.returncode == 1
    assert "tests/test_a.py::test_param: failed (tests/test_a.py::test_param[2]: call failed)" in (
        result.stdout
    )


def test_skipped_cited_test_is_reported_locally_and_fails_under_ci(tmp_path):
    """Outside CI a skipped cited test is listed as not proven and the run passes; with CI set
    (or MAILSERVER_CONFORMANCE=strict) the same run fails; MAILSERVER_CONFORMANCE wins over CI."""
    checkout = make_checkout(
        tmp_path, row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_absent_program")
    )
    target = "tests/test_a.py::test_absent_program"
    local = run_pytest(checkout, target)
    assert local.returncode == 0, local.stdout
    assert "cited tests skipped (not proven here)" in local.stdout
    assert "test_absent_program: skipped (frobd is not installed); cited by 5321-4.1-a" in (
        local.stdout
    )
    ci = run_pytest(checkout, target, CI="true")
    assert ci.returncode == 1
    assert "'pass' rows whose tests did not pass" in ci.stdout
    assert run_pytest(checkout, target, MAILSERVER_CONFORMANCE="strict").returncode == 1
    assert run_pytest(checkout, target, CI="true", MAILSERVER_CONFORMANCE="report").returncode == 0
    off = run_pytest(checkout, target, CI="1", MAILSERVER_CONFORMANCE="off")
    assert off.returncode == 0 and "rfc-conformance: " not in off.stdout


def test_partial_run_judges_only_the_tests_it_ran(tmp_path):
    """A run of other files, or one that deselects the failing cited test, does not fail
    because of cited tests it did not run."""
    checkout = make_checkout(
        tmp_path, row("5321-4.1-a", "4.1", "pass", "tests/test_a.py::test_broken")
    )
    assert run_pytest(checkout, "tests/test_b.py").returncode == 0
    result = run_pytest(
        checkout, "tests/test_a.py", "-k", "not broken and not uncited and not param"
    )
    assert result.returncode == 0, result.stdout


def test_cited_dialog_counts_through_the_test_that_plays_it(tmp_path):
    """A pass row citing a dialog fails when our server's dialog test for it fails."""
    checkout = make_checkout(
        tmp_path, row("5321-4.2-a", "4.2", "pass", "dialogs/smtp/greet.dialog")
    )
    result = run_pytest(checkout, "tests/smtp")
    assert result.returncode == 1
    assert (
        "tests/smtp/test_dialogs.py::test_dialog[greet.dialog]: failed (call failed); "
        "cited by 5321-4.2-a"
    ) in result.stdout


def test_cited_file_that_cannot_be_imported_fails_the_run(tmp_path):
    """A cited test whose file fails to import is reported (pytest counts it an error too)."""
    checkout = make_checkout(
        tmp_path, row("5321-4.1-a", "4.1", "pass", "tests/test_b.py::test_fine")
    )
    (checkout / "tests" / "test_b.py").write_text("import no_such_module_here\n" + OTHER_TESTS)
    result = run_pytest(checkout, "tests/test_b.py")
    assert result.returncode != 0
    assert "tests/test_b.py::test_fine: failed (failed to collect); cited by 5321-4.1-a" in (
        result.stdout
    )


def test_unknown_mode_is_a_usage_error(tmp_path):
    """A mistyped MAILSERVER_CONFORMANCE stops the run with a message naming the choices."""
    checkout = make_checkout(tmp_path, "")
    result = run_pytest(checkout, "tests/test_b.py", MAILSERVER_CONFORMANCE="loose")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "MAILSERVER_CONFORMANCE='loose' is not one of strict, report, off" in result.stderr


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, "report"),
        ({"CI": "true"}, "strict"),
        ({"CI": "1"}, "strict"),
        ({"CI": "false"}, "report"),
        ({"CI": ""}, "report"),
        ({"CI": "true", "MAILSERVER_CONFORMANCE": "Report"}, "report"),
        ({"MAILSERVER_CONFORMANCE": "strict"}, "strict"),
    ],
)
def test_mode_comes_from_the_environment(environ, mode):
    """CI makes skips fail; MAILSERVER_CONFORMANCE overrides either way."""
    assert mode_from_environment(environ) == mode


def test_real_matrix_dialogs_map_to_existing_dialog_tests():
    """Every dialog a pass row cites maps to our server's dialog test of its protocol, and
    those test files exist (so a dialog's outcome is judged)."""
    checkout = Path(__file__).resolve().parents[1]
    for template in DIALOG_TESTS.values():
        assert (checkout / template.split("::")[0]).is_file(), template
    cited = cited_tests(load())
    dialog_nodes = [node for node in cited if "::test_dialog[" in node]
    assert len(dialog_nodes) >= 100
    assert (
        dialog_test("dialogs/pop3/stls.dialog")
        == "tests/pop3/test_dialogs.py::test_dialog[stls.dialog]"
    )
    assert dialog_test("dialogs/lmtp/x.dialog") is None
