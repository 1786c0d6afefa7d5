"""Whatever a client sends, in whatever pieces, the server answers with protocol replies and
never with an internal error: random command lines (known keywords with random arguments,
and random bytes) fed to a session in the AUTHORIZATION and in the TRANSACTION state, over an
in-memory transport. Message files are read synchronously here (``in_thread`` runs the call
at once), so every reply is there when ``dataReceived`` returns."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from mailserver.auth.realm import MailRealm
from mailserver.pop3 import maildrop
from mailserver.pop3.factory import POP3Factory, POP3Policy
from mailserver.pop3.server import State
from mailserver.testing import MemoryStore

KEYWORDS = [
    "USER", "PASS", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
    "CAPA", "AUTH", "UTF8", "APOP", "STLS", "XTND",
]  # fmt: skip
ARGUMENTS = st.sampled_from(["", "0", "1", "2", "3", "-1", "99999999999", "x", "PLAIN", "=",
                             "*", "AGFAYgBj", "1 0", "1 5", "2 -3", "a b c"])  # fmt: skip

command_line = st.one_of(
    st.builds(lambda k, a: f"{k} {a}".rstrip().encode() + b"\r\n", st.sampled_from(KEYWORDS),
              ARGUMENTS),
    st.binary(max_size=40).map(lambda b: b + b"\r\n"),
    st.binary(max_size=40),
)  # fmt: skip


def session(state: State) -> tuple[object, StringTransport]:
    store = MemoryStore()
    store.create_account("alice@example.org")
    inbox = store.account("alice@example.org").folder("INBOX")
    for body in (b"Subject: a\r\n\r\n.one\r\n", b"Subject: b\r\n\r\ntwo\r\n"):
        inbox.append(io.BytesIO(body))
    portal = Portal(
        MailRealm(None, imap_account=store.account),
        [InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.org": b"secret"})],
    )
    factory = POP3Factory(portal, POP3Policy(auth_needs_tls=False, max_errors=10_000), None,
                          reactor=Clock())  # fmt: skip
    server = factory.buildProtocol(None)
    server.in_thread = lambda function, *args: maybeDeferred(function, *args)
    transport = StringTransport()
    server.makeConnection(transport)
    if state is State.TRANSACTION:
        server.user = "alice@example.org"
        server.maildrop = maildrop.load(inbox)
        server.state = State.TRANSACTION
    return server, transport


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([State.AUTHORIZATION, State.TRANSACTION]),
    st.lists(command_line, max_size=12),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5),
)
def test_random_input_gets_protocol_replies(state, lines, sizes):
    server, transport = session(state)
    failures = []
    observer = lambda event: failures.append(event) if "log_failure" in event else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        data = b"".join(lines)
        position, turn = 0, 0
        while position < len(data):
            size = sizes[turn % len(sizes)]
            server.dataReceived(data[position : position + size])
            position, turn = position + size, turn + 1
    finally:
        globalLogPublisher.removeObserver(observer)
    assert failures == []
    output = transport.value()
    assert output.startswith(b"+OK ")
    assert b"Internal server error" not in output
    assert output.endswith(b"\r\n")
