"""The client matrix report (tests/clients/matrix.py): rows come from test outcomes only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients import matrix
from tests.clients.matrix import Outcome


def test_a_row_per_client_and_feature_in_table_order():
    """Each (client, feature) a test names is one row, ordered as CLIENTS then FEATURES,
    whatever order the tests ran in."""
    outcomes = [
        Outcome("t.py::k9", "passed", names=("K-9", "idle", "fetch")),
        Outcome("t.py::swaks", "passed", names=("swaks", "send")),
    ]
    assert [(row.client, row.feature) for row in matrix.rows(outcomes)] == [
        ("swaks", "send"), ("K-9", "fetch"), ("K-9", "idle")]


@pytest.mark.parametrize(("kinds", "result"), [
    (("passed", "passed"), "pass"),
    (("passed", "skipped"), "pass"),
    (("passed", "failed"), "fail"),
    (("skipped", "xfailed"), "fail"),
    (("skipped", "skipped"), "skipped"),
])
def test_a_row_fails_when_any_of_its_tests_failed(kinds, result):
    """fail if any test failed or xfailed, pass if one passed and none failed, else
    skipped."""
    outcomes = [Outcome(f"t.py::t{i}", kind, names=("curl", "fetch"))
                for i, kind in enumerate(kinds)]
    [row] = matrix.rows(outcomes)
    assert row.result == result


def test_unknown_names_are_refused():
    """A typo in a marker cannot invent a client or a feature."""
    with pytest.raises(ValueError, match="unknown client 'Thunderbrid'"):
        matrix.validate(("Thunderbrid", "send"))
    with pytest.raises(ValueError, match="unknown feature 'sending'"):
        matrix.validate(("swaks", "sending"))
    with pytest.raises(ValueError, match="needs a client and at least one feature"):
        matrix.validate(("swaks",))


def test_markdown_shows_results_tests_and_skip_reasons():
    """The Markdown counts the rows, names each row's tests with their outcome and lists the
    reasons of skipped rows."""
    outcomes = [
        Outcome("tests/clients/x.py::test_a", "passed", names=("msmtp", "send", "auth")),
        Outcome("tests/clients/x.py::test_b", "failed", "failed in call", ("msmtp", "auth")),
        Outcome("tests/clients/x.py::test_c", "skipped", "mpop is not installed",
                ("mpop", "uidl")),
    ]
    text = matrix.render(outcomes)
    assert "2 clients, 3 rows: 1 pass, 1 fail, 1 skipped" in text
    assert ("| msmtp (SMTP submission client) | send | **pass** | `test_a` |") in text
    assert ("| msmtp (SMTP submission client) | auth | **fail** | `test_a`, "
            "`test_b` (failed) |") in text
    assert "| mpop (POP3 retriever) | uidl | **skipped** | `test_c` (skipped) |" in text
    assert "- mpop is not installed" in text
    # the overview grid: a column per feature named, a line per client
    assert "| client | send | auth | uidl |" in text
    assert "| msmtp | pass | **FAIL** |  |" in text
    assert "| mpop |  |  | skip |" in text


def test_script_renders_saved_results(tmp_path, capsys):
    """`python -m tests.clients.matrix results.json` renders what the plugin saved; a missing
    or foreign file is a clear error with exit status 1."""
    outcomes = [Outcome("t.py::test_x", "passed", names=("poplib", "fetch"))]
    path = matrix.write(outcomes, tmp_path)
    assert path.read_text() == matrix.render(outcomes)
    assert matrix.main([str(tmp_path / "results.json")]) == 0
    assert "| Python poplib | fetch | **pass** |" in capsys.readouterr().out
    assert matrix.main([str(tmp_path / "absent.json")]) == 1
    assert "no results at" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{"nodeid": "x"}]))
    assert matrix.main([str(tmp_path / "bad.json")]) == 1
    assert "not a client-matrix results file" in capsys.readouterr().err


SAMPLE = """
import pytest

@pytest.mark.client_matrix("swaks", "send", "auth")
def test_sends():
    pass

@pytest.mark.client_matrix("swaks", "auth")
def test_wrong_password():
    assert 1 == 2

@pytest.mark.client_matrix("mpop", "uidl")
def test_mpop():
    pytest.skip("mpop is not installed (Debian package mpop)")

@pytest.mark.client_matrix("K-9", "idle")
@pytest.mark.xfail(reason="push not there yet", strict=True)
def test_push():
    assert False

def test_unmarked():
    pass
"""


def test_plugin_writes_the_outcomes_of_a_real_run(tmp_path):
    """A pytest run (in a subprocess, with only this plugin) of marked tests that pass, fail,
    skip and xfail writes build/clients/ under its root: rows with exactly those results;
    an unmarked test makes no row."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    checkout = Path(__file__).resolve().parents[2]
    environment = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.clients.matrix", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # test_wrong_password failed
    assert "client matrix: " in done.stdout, done.stdout
    results = {(item["nodeid"].split("::")[1], tuple(item["names"])): item["outcome"]
               for item in json.loads((tmp_path / "build/clients/results.json").read_text())}
    assert results == {
        ("test_sends", ("swaks", "send", "auth")): "passed",
        ("test_wrong_password", ("swaks", "auth")): "failed",
        ("test_mpop", ("mpop", "uidl")): "skipped",
        ("test_push", ("K-9", "idle")): "xfailed",
    }
    text = (tmp_path / "build/clients/matrix.md").read_text()
    assert "3 clients, 4 rows: 1 pass, 2 fail, 1 skipped" in text, text
    assert "| swaks (SMTP test tool) | send | **pass** | `test_sends` |" in text
    assert "- mpop is not installed (Debian package mpop)" in text
