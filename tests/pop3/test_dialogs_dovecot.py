"""The POP3 conformance dialogs played against a private Dovecot (tests/peers/dovecot.py), the
reference the dialogs' README asks for: our expectations must describe what the RFCs
require, not what our code happens to do. Dovecot gets the same user, password and two
messages as our server in tests/pop3/test_dialogs.py, and plain-text logins only after TLS
(``disable_plaintext_auth = yes``, as our listeners).

Where Dovecot differs and the RFCs allow both, :data:`DIFFERENT` says how; that dialog must
then fail against Dovecot in exactly that way (so a change on either side is noticed).
Skips when Dovecot's POP3 server is not installed (Debian dovecot-pop3d).
"""

from __future__ import annotations

import pytest

from tests.peers.dovecot import DovecotInstance, DovecotUnavailable, unavailable_reason
from tests.pop3.test_dialogs import DIALOGS, ONE, TWO, runner

USER = "alice@example.org"

#: dialog -> (how Dovecot differs, a text its failure reason contains)
DIFFERENT = {
    "stls-pipelined-injection.dialog": (
        "Dovecot drops the connection when plain text follows STLS in the same packet,"
        " where we discard it and go on: both keep injected commands from running",
        "TLS handshake failed",
    ),
}


@pytest.fixture(scope="module")
def dovecot():
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
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    with instance:
        yield instance


def test_every_difference_names_a_dialog():
    assert set(DIFFERENT) <= {path.name for path in DIALOGS}


@pytest.mark.parametrize("path", DIALOGS, ids=[path.name for path in DIALOGS])
def test_dialog_against_dovecot(dovecot, path):
    """The dialog passes against Dovecot too (or differs only as :data:`DIFFERENT` says)."""
    maildir = dovecot.maildir(USER)
    for sub in ("cur", "new"):
        for stale in (maildir / sub).iterdir():
            stale.unlink()
    for data in (ONE, TWO):
        dovecot.add_message(USER, data)
    dialog = runner.parse_dialog(path)
    port = dovecot.pop3s_port if dialog.tls == "implicit" else dovecot.pop3_port
    result = runner.play(dialog, dovecot.host, port)
    difference = DIFFERENT.get(path.name)
    if difference is None:
        assert result.passed, result.summary()
    else:
        assert not result.passed and difference[1] in result.reason, result.summary()
