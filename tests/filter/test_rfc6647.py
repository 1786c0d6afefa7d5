"""RFC 6647 (greylisting) rows of rfc-conformance/requirements/rfc6647.tsv that
tests/filter/test_greylist.py does not already prove: every element of the tuple counts, the
temporary refusal is a 4xx given per recipient at RCPT through a real SMTP server (smtplib),
the retry is delivered, and an allow-listed (trusted) sender is never greylisted. The
greylist's clock is a task.Clock; the server runs on the real reactor on 127.0.0.1."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.filter.greylist import GreylistCheck, GreylistSettings
from mailserver.filter.pipeline import FilteringTarget
from mailserver.interfaces import ICheck, ICheckSession
from mailserver.message.address import parse_address
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import ACCEPT, Action, Envelope, Peer, Verdict
from tests.stored import contents

MESSAGE = b"From: bob@example.net\r\nSubject: hi\r\nMessage-ID: <g1@example.net>\r\n\r\nhello\r\n"


@pytest.fixture
def clock() -> task.Clock:
    c = task.Clock()
    c.advance(1_700_000_000)
    return c


async def attempt(check: GreylistCheck, client: str, sender: str, rcpt: str) -> Verdict:
    """One RCPT of a new connection; greylisting only ever answers ACCEPT or a 4xx."""
    session = check.session(Peer(client))
    result = session.recipient(Envelope(parse_address(sender), helo="mx.sender.example"),
                               parse_address(rcpt))
    verdict = await result if isinstance(result, Deferred) else result
    assert verdict.action in (Action.ACCEPT, Action.TEMPFAIL)
    if verdict.action is Action.TEMPFAIL:
        assert 400 <= verdict.code < 500 and verdict.enhanced.startswith("4.")
    return verdict


@pytest_twisted.ensureDeferred
async def test_every_element_of_the_tuple_counts(storage, clock) -> None:
    """Once (client network, sender, recipient) has passed, changing any one of the three
    makes a new tuple that is greylisted; another host of the same /24 is the same client."""
    check = GreylistCheck(storage.db, clock, GreylistSettings(auto_allow=0))
    first = ("192.0.2.10", "news@sender.example", "alice@example.org")
    assert (await attempt(check, *first)).action is Action.TEMPFAIL
    clock.advance(60)
    assert (await attempt(check, *first)).action is Action.ACCEPT
    assert (await attempt(check, "192.0.2.200", *first[1:])).action is Action.ACCEPT
    for changed in (
        ("198.51.100.10", "news@sender.example", "alice@example.org"),
        ("192.0.2.10", "other@sender.example", "alice@example.org"),
        ("192.0.2.10", "news@sender.example", "bob@example.org"),
    ):
        assert (await attempt(check, *changed)).action is Action.TEMPFAIL, changed


# -- through a real SMTP server --------------------------------------------------------------


@implementer(ICheck)
class AllowListed:
    """Stands in for the allow lists: the sender is trusted at MAIL."""

    name = "lists"
    honours_allow_list = False

    def session(self, peer: Peer) -> AllowListedSession:
        return AllowListedSession()


@implementer(ICheckSession)
class AllowListedSession:
    def connect(self) -> Verdict:
        return ACCEPT

    def helo(self, name: str) -> Verdict:
        return ACCEPT

    def sender(self, envelope: Envelope) -> Verdict:
        return Verdict(trusted=True, rule="ALLOW_LIST", score=-1.0)

    def recipient(self, envelope: Envelope, address: Any) -> Verdict:
        return ACCEPT

    def body(self, envelope: Envelope, recipients: Any, message: bytes) -> Verdict:
        return ACCEPT


@pytest.fixture
def serve(storage: Any) -> Iterator[Callable[..., int]]:
    """start(*checks) -> port of our SMTP server on 127.0.0.1 with ``checks`` in its filter
    pipeline, in front of the MX policy and the maildir store (users alice and bob)."""
    wait = pytest_twisted.blockon
    wait(storage.directory.add_domain("example.org"))
    for user in ("alice", "bob"):
        wait(storage.directory.add_user(f"{user}@example.org", "pw"))
        wait(storage.store.create_account(f"{user}@example.org"))
    ports: list[Any] = []
    local = LocalDeliveryTarget(storage.store, storage.directory)

    def start(*checks: ICheck) -> int:
        def avatar() -> FilteringTarget:
            mx = MXTarget(local, storage.directory, "postmaster@example.org")
            return FilteringTarget(mx, checks, reactor)

        portal = Portal(MailRealm(avatar), [AllowAnonymousAccess()])
        factory = SMTPFactory(portal, SMTPPolicy(hostname="mx.test"), None, reactor=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return int(port.getHost().port)

    yield start
    for port in ports:
        wait(port.stopListening())


def send(port: int, rcpts: list[str]) -> dict[str, Any]:
    """One message through smtplib; what RCPT and DATA answered."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.net")
        client.mail("bob@example.net")
        answers: dict[str, Any] = {"rcpt": [client.rcpt(r) for r in rcpts]}
        if any(code == 250 for code, _ in answers["rcpt"]):
            answers["data"] = client.data(MESSAGE)
        return answers


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return deferToThread(function, *args)


def inbox(storage: Any, user: str) -> list[bytes]:
    return contents(storage.store.account(f"{user}@example.org").folder("INBOX"))


@pytest_twisted.ensureDeferred
async def test_greylisted_at_rcpt_with_450_then_the_retry_is_delivered(
    storage: Any, clock: task.Clock, serve: Any
) -> None:
    """A new tuple hears 450 4.2.0 at RCPT (nothing is stored), an early retry the seconds
    left, the retry after the delay 250 and its message is delivered; in a transaction with a
    known and a new recipient only the new one is refused, temporarily."""
    port = serve(GreylistCheck(storage.db, clock))
    answers = await in_thread(send, port, ["alice@example.org"])
    assert answers == {"rcpt": [(450, b"4.2.0 Greylisted, try again in 60 seconds")]}
    clock.advance(30)
    answers = await in_thread(send, port, ["alice@example.org"])
    assert answers["rcpt"] == [(450, b"4.2.0 Greylisted, try again in 30 seconds")]
    assert inbox(storage, "alice") == []
    clock.advance(30)
    answers = await in_thread(send, port, ["alice@example.org"])
    assert answers["rcpt"][0][0] == 250 and answers["data"][0] == 250
    assert len(inbox(storage, "alice")) == 1

    answers = await in_thread(send, port, ["alice@example.org", "bob@example.org"])
    assert answers["rcpt"][0][0] == 250
    assert answers["rcpt"][1] == (450, b"4.2.0 Greylisted, try again in 60 seconds")
    assert answers["data"][0] == 250
    assert len(inbox(storage, "alice")) == 2 and inbox(storage, "bob") == []


@pytest_twisted.ensureDeferred
async def test_an_allow_listed_sender_is_never_greylisted(storage, clock, serve) -> None:
    """A sender the allow lists trust is not asked about at all: accepted on the first try,
    and no greylist record is written."""
    port = serve(AllowListed(), GreylistCheck(storage.db, clock))
    answers = await in_thread(send, port, ["alice@example.org"])
    assert answers["rcpt"][0][0] == 250 and answers["data"][0] == 250
    with storage.db.read() as txn:
        assert list(txn.prefix(b"greylist", b"")) == []
