"""Differential test: the POP3 conformance dialogs against our server and a private Dovecot.

Both servers hold the same maildrop (alice's two messages of tests/pop3/test_dialogs.py, one
with lines that need byte-stuffing) and refuse plain-text logins before TLS. Every
``rfc-conformance/dialogs/pop3/*.dialog`` whose ``# peers:`` header allows Dovecot is played
against both with the runner tracing which step read each line; the responses are normalised
(``rfc-conformance/differential.py``: free text after +OK/-ERR, UIDL ids and the CAPA list are
the server's) and compared step by step. Each remaining difference must be an allowed
variation recorded in ``rfc-conformance/variations.tsv`` with the RFC text that allows it, and
each recorded one must still occur. Skips when Dovecot's POP3 server is not installed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conformance import CONFORMANCE
from tests.peers.dovecot import DovecotInstance, DovecotUnavailable, unavailable_reason
from tests.pop3.conftest import HOST, in_thread
from tests.pop3.test_dialogs import DIALOGS, ONE, TWO, listeners, runner

__all__ = ["listeners"]  # the fixture, re-used from tests/pop3/test_dialogs.py

if str(CONFORMANCE) not in sys.path:
    sys.path.insert(0, str(CONFORMANCE))  # rfc-conformance/ is a directory, not a package
import differential

USER = "alice@example.org"
PLAYED = [path for path in DIALOGS if runner.parse_dialog(path).plays_against("dovecot")]


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotInstance]:
    """One private Dovecot with POP3 (STARTTLS and implicit TLS) for the module."""
    reason = unavailable_reason(pop3=True)
    if reason:
        pytest.skip(reason)
    try:
        instance = DovecotInstance(
            users={USER: "secret", "bob@example.org": "secret"},
            tls=True,
            pop3=True,
            settings={"disable_plaintext_auth": "yes"},
        )
        instance.start()
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


def _reset(dovecot: DovecotInstance) -> None:
    """alice's maildrop holds exactly ONE and TWO again."""
    maildir = dovecot.maildir(USER)
    for sub in ("cur", "new"):
        for stale in (maildir / sub).iterdir():
            stale.unlink()
    for data in (ONE, TWO):
        dovecot.add_message(USER, data)


def test_variations_file_is_consistent() -> None:
    """variations.tsv parses, and each row names an expectation step of an existing dialog
    and quotes the RFC text that allows the variation."""
    _, problems = differential.load_variations()
    assert problems == []


@pytest.mark.parametrize("path", PLAYED, ids=[path.name for path in PLAYED])
@pytest_twisted.ensureDeferred
async def test_same_dialog_same_answers(
    listeners: tuple[Any, int, int], dovecot: DovecotInstance, path: Path
) -> None:
    """Both servers answer the dialog alike, up to the allowed variations recorded in
    variations.tsv (and every variation recorded for it still occurs)."""
    store, port, tls_port = listeners
    inbox = store.account(USER).folder("INBOX")
    for data in (ONE, TWO):
        await inbox.append(io.BytesIO(data))
    await in_thread(_reset, dovecot)
    dialog = differential.parse_dialog(path)
    implicit = dialog.tls == "implicit"
    ours = (HOST, tls_port if implicit else port)
    theirs = (dovecot.host, dovecot.pop3s_port if implicit else dovecot.pop3_port)
    name = path.relative_to(CONFORMANCE).as_posix()
    result, found = await in_thread(differential.compare, dialog, name, ours, theirs)
    assert result.passed, result.summary()
    variations, _ = differential.load_variations()
    unexplained, stale = differential.judge(found, variations, name)
    assert not unexplained and not stale, differential.report(unexplained, stale)
