"""Every POP3 conformance dialog (rfc-conformance/dialogs/pop3/*.dialog) played against the
in-process server over a real loopback socket, as deployed: the STLS listener refuses logins
before TLS, and ``# tls: implicit`` dialogs go to the implicit-TLS listener.

Before each dialog alice's INBOX holds the two messages the dialogs expect (:data:`ONE` with
lines that need byte-stuffing, :data:`TWO`); where a rule is about what UPDATE did to the
store, ``AFTER`` checks the store once the dialog has passed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserver import config
from mailserver.pop3.factory import MaildropLocks, POP3Policy
from mailserver.testing import MemoryDirectory, MemoryStore
from tests.conformance import dialogs, load_runner
from tests.pop3.conftest import HOST, in_thread, make_factory, populate

DIALOGS = dialogs("pop3")

ONE = (
    b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: one\r\n\r\n"
    b".leading dot\r\n.\r\nlast line\r\n"
)
TWO = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: two\r\n\r\nSecond.\r\n"


runner = load_runner()


def _first_removed(inbox: Any) -> None:
    """RFC 1939 §6: UPDATE removed the message marked with DELE, and only that one."""
    uids = list(inbox.uids())
    assert len(uids) == 1
    with inbox.message(uids[0]).open() as source:
        assert source.read() == TWO


def _nothing_removed(inbox: Any) -> None:
    """RSET, or no QUIT from TRANSACTION: both messages are still there."""
    assert len(list(inbox.uids())) == 2


AFTER: dict[str, Callable[[Any], None]] = {
    "update.dialog": _first_removed,
    "transaction.dialog": _nothing_removed,
}


@pytest.fixture
def listeners(tls_options):
    """(store, STLS port, implicit-TLS port) over one MemoryStore, sharing the locks."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    populate(store, directory)
    policy = POP3Policy(hostname="pop.test", auth_mechanisms=("PLAIN", "LOGIN"))
    locks = MaildropLocks()
    plain = make_factory(store, directory, policy, tls_options, locks=locks)
    implicit_policy = replace(policy, implicit_tls=True, offer_starttls=False)
    implicit = make_factory(store, directory, implicit_policy, tls_options, locks=locks)
    port = reactor.listenTCP(0, plain, interface=HOST)
    tls_port = reactor.listenTCP(
        0, TLSMemoryBIOFactory(tls_options, False, implicit), interface=HOST
    )
    yield store, port.getHost().port, tls_port.getHost().port
    pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(tls_port.stopListening())


def test_every_check_names_a_dialog():
    """A renamed dialog must not silently lose its store check."""
    assert set(AFTER) <= {path.name for path in DIALOGS}


@pytest.mark.parametrize("path", DIALOGS, ids=[path.name for path in DIALOGS])
async def test_dialog(listeners, path):
    """The dialog passes against our server (and the store holds what it should)."""
    store, port, tls_port = listeners
    inbox = store.account("alice@example.org").folder("INBOX")
    for data in (ONE, TWO):
        await inbox.append(io.BytesIO(data))
    dialog = runner.parse_dialog(path)
    target = tls_port if dialog.tls == "implicit" else port
    result = await in_thread(runner.play, dialog, HOST, target)
    assert result.passed, result.summary()
    check = AFTER.get(path.name)
    if check is not None:
        check(inbox)


def test_policy_defaults_meet_rfc_minimums():
    """What the dialogs cannot show: the shipped autologout timer is at least 10 minutes
    (RFC 1939 §3), and logins need TLS by default (RFC 2595 §2.2)."""
    for policy in (POP3Policy(), config.load(None).pop3):
        assert policy.timeout >= 600
    assert POP3Policy().auth_needs_tls
