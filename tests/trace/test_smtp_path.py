"""The trace of real SMTP sessions: smtplib against our SMTP server (in-process on 127.0.0.1)
whose avatar is the filter pipeline in front of the MX policy and the maildir store, with the
trace service observing the global log publisher. What the session, the filter and the store
log becomes one path per message: an accepted message (session, verdict, mailbox), a message
the filter refused at the end of DATA (found by its Message-ID), and a recipient refused at
RCPT (found by the session id). The one check is scripted (it refuses bodies saying "buy
now"); the pipeline, the SMTP server and the store are the real ones."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.filter.pipeline import FilteringTarget
from mailserver.interfaces import ICheck, ICheckSession
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from mailserver.trace import TraceLog, TraceService
from mailserver.types import ACCEPT, Action, Peer, Verdict

CLEAN = (b"From: dave@elsewhere.test\r\nSubject: hello\r\n"
         b"Message-ID: <clean-1@elsewhere.test>\r\n\r\nHello bob.\r\n")
SPAM = (b"From: dave@elsewhere.test\r\nSubject: offer\r\n"
        b"Message-ID: <spam-1@elsewhere.test>\r\n\r\nBuy now!\r\n")


@implementer(ICheck)
class RefusesOffers:
    """Refuses at the end of DATA any message whose body says "buy now"."""

    name = "offers"
    honours_allow_list = True

    def session(self, peer: Peer) -> OffersSession:
        return OffersSession()


@implementer(ICheckSession)
class OffersSession:
    def connect(self) -> Verdict:
        return ACCEPT

    def helo(self, name: str) -> Verdict:
        return ACCEPT

    def sender(self, envelope: Any) -> Verdict:
        return ACCEPT

    def recipient(self, envelope: Any, address: Any) -> Verdict:
        return ACCEPT

    def body(self, envelope: Any, recipients: Any, message: bytes) -> Verdict:
        if b"buy now" in message.lower():
            return Verdict(Action.REJECT, score=10.0, rule="OFFER", reason="an offer",
                           text="No offers, thank you")
        return ACCEPT


@pytest.fixture
def world(storage):
    wait = pytest_twisted.blockon
    wait(storage.directory.add_domain("example.org"))
    wait(storage.directory.add_user("bob@example.org", "pw"))
    wait(storage.store.create_account("bob@example.org"))
    trace = TraceLog(storage.db, reactor, flush_interval=3600.0)
    service = TraceService(trace)
    service.startService()
    local = LocalDeliveryTarget(storage.store, storage.directory)

    def avatar() -> FilteringTarget:
        mx = MXTarget(local, storage.directory, "postmaster@example.org")
        return FilteringTarget(mx, [RefusesOffers()], reactor)

    portal = Portal(MailRealm(avatar), [AllowAnonymousAccess()])
    factory = SMTPFactory(portal, SMTPPolicy(hostname="mx.test"), None, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield trace, port.getHost().port
    wait(port.stopListening())
    wait(service.stopService())


def session(port: int) -> dict[str, Any]:
    """One connection: a clean message, an offer, and a recipient nobody has."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.elsewhere.test")
        clean = client.sendmail("dave@elsewhere.test", ["bob@example.org"], CLEAN)
        with pytest.raises(smtplib.SMTPDataError) as offer:
            client.sendmail("dave@elsewhere.test", ["bob@example.org"], SPAM)
        client.mail("dave@elsewhere.test")
        unknown = client.rcpt("nobody@example.org")
        client.rset()
    return {"clean": clean, "offer": offer.value.smtp_code, "unknown": unknown[0]}


@pytest_twisted.ensureDeferred
async def test_each_message_of_a_session_has_its_own_path(world):
    trace, port = world
    answers = await deferToThread(session, port)
    assert answers == {"clean": {}, "offer": 550, "unknown": 550}

    clean = trace.find(message_id="<clean-1@elsewhere.test>")["records"]
    assert [r["kind"] for r in clean] == ["verdict", "stored", "smtp"]
    verdict, stored, smtp = clean
    assert verdict["action"] == "accept" and verdict["queue_id"] == smtp["queue_id"]
    assert stored["places"][0][:2] == ["bob@example.org", "INBOX"]
    assert stored["helo"] == "client.elsewhere.test" and stored["client"] == "127.0.0.1"
    assert (smtp["result"], smtp["code"], smtp["phase"]) == ("accepted", "250", "data")
    assert smtp["recipients"] == ["bob@example.org"] and smtp["tls"] is False

    offer = trace.find(message_id="spam-1@elsewhere.test")["records"]
    assert [r["kind"] for r in offer] == ["verdict", "smtp"]
    verdict, smtp = offer
    assert (verdict["action"], verdict["rules"]) == ("reject", "OFFER(+10.0)")
    assert (smtp["result"], smtp["code"]) == ("rejected", "550")
    assert smtp["session"] == clean[2]["session"]
    # The session's own record of a message names it and the client's HELO, so a refusal
    # at the end of DATA is found by Message-ID even when no filter verdict names it.
    assert smtp["message_id"] == "<spam-1@elsewhere.test>"
    assert smtp["helo"] == clean[2]["helo"] == "client.elsewhere.test"

    refusals = [r for r in trace.find(queue_id=smtp["session"])["records"]
                if r["kind"] == "smtp" and r["phase"] == "rcpt"]
    [refused] = refusals
    assert (refused["result"], refused["code"]) == ("rejected", "550")
    assert "queue_id" not in refused  # no transaction id before a recipient is accepted
