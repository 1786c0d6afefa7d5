"""\\Recent is per server, not per listener (RFC 3501 §2.3.2): with the STARTTLS and the
implicit-TLS listeners sharing one :class:`RecentClaims`, a message that a read-write SELECT
on one listener reported as recent is not recent again on the other. (Found with offlineimap
on port 143 and imaplib on port 993 against the real server, issue 6.)"""

from __future__ import annotations

import pytest_twisted
from twisted.cred.portal import Portal
from twisted.internet import reactor

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory, RecentClaims
from tests.imap.conftest import POLICY, IMAPServerFixture, in_thread, message


def test_a_read_write_claim_is_seen_once_and_read_only_looks_do_not_claim():
    claims = RecentClaims()
    key = ("alice@example.org", "INBOX", 7)
    assert claims.recent(key, [1, 2], claim=False) == set()  # first look after a start
    assert claims.recent(key, [1, 2, 3], claim=False) == {3}  # EXAMINE: no claim
    assert claims.count(key, [1, 2, 3]) == 1
    assert claims.recent(key, [1, 2, 3], claim=True) == {3}  # SELECT claims it
    assert claims.recent(key, [1, 2, 3], claim=True) == set()
    assert claims.count(key, [1, 2, 3]) == 0


@pytest_twisted.ensureDeferred
async def test_two_listeners_sharing_claims_report_a_message_recent_once(memory_imap):
    first = memory_imap
    realm = MailRealm(lambda: None, imap_account=first.store.account)  # type: ignore[arg-type, return-value]
    portal = Portal(realm, [PasswordChecker(first.directory)])
    factory = IMAPFactory(portal, POLICY, reactor=reactor, recent=first.factory.recent)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    second = IMAPServerFixture(factory, port.getHost().port, first.store, first.directory)
    try:
        def look_on_second() -> None:
            client = second.imaplib()
            client.select("INBOX", readonly=True)
            client.logout()

        await in_thread(look_on_second)  # the first look: nothing is recent
        await first.deliver(message("new"))

        def select_on_first() -> list[bytes]:
            client = first.imaplib()
            client.select("INBOX")
            recent = client.response("RECENT")[1]
            client.logout()
            return recent

        def examine_on_second() -> tuple[list[bytes], bytes]:
            client = second.imaplib()
            client.select("INBOX", readonly=True)
            recent = client.response("RECENT")[1]
            _typ, data = client.fetch("1", "(FLAGS)")
            client.logout()
            return recent, data[0]

        assert await in_thread(select_on_first) == [b"1"]
        recent, flags = await in_thread(examine_on_second)
        assert recent == [b"0"]
        assert flags == b"1 (FLAGS ())"
    finally:
        await port.stopListening()
