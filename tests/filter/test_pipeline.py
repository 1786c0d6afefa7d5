"""The filter pipeline through real sockets: smtplib against the SMTP server whose avatar is a
FilteringTarget in front of the MX policy and the real maildir store.

The checks here are scripted: each answers a phase with a fixed verdict and records that it
was asked. They stand in for the real checks (tested on their own) because what is tested is
the pipeline's contract: when each phase runs, how verdicts merge, what the client hears and
where the message lands.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.filter.outcome import (
    FilterPolicy,
    add_headers,
    decide,
    status_headers,
    strip_own_headers,
)
from mailserver.filter.pipeline import FilteringTarget
from mailserver.interfaces import ICheck, ICheckSession, IFilterSession, ISessionFilter
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import ACCEPT, Action, Peer, SpamVerdict, Verdict
from tests.stored import contents

PHASES = ("connect", "helo", "sender", "recipient", "body")


@implementer(ICheck)
@dataclass
class Scripted:
    """A check answering each phase from ``script`` (phase -> Verdict or a function of the
    phase's arguments returning one); ``asked`` lists the phases it was asked."""

    name: str
    script: dict[str, Any] = field(default_factory=dict)
    honours_allow_list: bool = True
    asked: list[str] = field(default_factory=list)

    def session(self, peer: Peer) -> ScriptedSession:
        return ScriptedSession(self)


@implementer(ICheckSession)
class ScriptedSession:
    def __init__(self, check: Scripted) -> None:
        self.check = check

    def _answer(self, phase: str, *args: Any) -> Any:
        self.check.asked.append(phase)
        answer = self.check.script.get(phase, ACCEPT)
        if isinstance(answer, Exception):
            raise answer
        return answer(*args) if callable(answer) else answer

    def connect(self) -> Any:
        return self._answer("connect")

    def helo(self, name: str) -> Any:
        return self._answer("helo", name)

    def sender(self, envelope: Any) -> Any:
        return self._answer("sender", envelope)

    def recipient(self, envelope: Any, address: Any) -> Any:
        return self._answer("recipient", envelope, address)

    def body(self, envelope: Any, recipients: Any, message: bytes) -> Any:
        return self._answer("body", envelope, recipients, message)


@dataclass
class Server:
    port: int
    storage: Any
    recorded: list[dict[str, Any]]

    def folder(self, name: str, user: str = "alice") -> list[bytes]:
        return contents(self.storage.store.account(f"{user}@example.org").folder(name))

    def infos(self, name: str, user: str = "alice") -> list[Any]:
        folder = self.storage.store.account(f"{user}@example.org").folder(name)
        return [m.info for m in folder.messages(folder.uids())]


@pytest.fixture
def serve(storage) -> Any:
    wait = pytest_twisted.blockon
    wait(storage.directory.add_domain("example.org"))
    for user in ("alice", "bob"):
        wait(storage.directory.add_user(f"{user}@example.org", "pw"))
        wait(storage.store.create_account(f"{user}@example.org"))
    ports: list[Any] = []

    def start(*checks: Scripted, policy: FilterPolicy | None = None) -> Server:
        recorded: list[dict[str, Any]] = []
        local = LocalDeliveryTarget(storage.store, storage.directory)

        def avatar() -> FilteringTarget:
            mx = MXTarget(local, storage.directory, "postmaster@example.org")
            return FilteringTarget(mx, checks, reactor, policy, record=recorded.append)

        portal = Portal(MailRealm(avatar), [AllowAnonymousAccess()])
        factory = SMTPFactory(portal, SMTPPolicy(hostname="mx.test"), None, reactor=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return Server(port.getHost().port, storage, recorded)

    yield start
    for port in ports:
        wait(port.stopListening())


MESSAGE = b"From: bob@example.net\r\nSubject: hi\r\nMessage-ID: <m1@example.net>\r\n\r\nhello\r\n"


def send(port: int, rcpts: list[str], data: bytes = MESSAGE) -> dict[str, Any]:
    """One message through smtplib; what each step answered."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.net")
        client.mail("bob@example.net")
        answers: dict[str, Any] = {"rcpt": [client.rcpt(r) for r in rcpts]}
        if any(code == 250 for code, _ in answers["rcpt"]):
            answers["data"] = client.data(data)
        return answers


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return deferToThread(function, *args)


def test_provides_the_contracts(storage) -> None:
    target = FilteringTarget(
        LocalDeliveryTarget(storage.store, storage.directory), [], reactor
    )
    assert ISessionFilter.providedBy(target)
    assert IFilterSession.providedBy(target.open(Peer("127.0.0.1")))


@pytest_twisted.ensureDeferred
async def test_a_clean_message_passes_every_phase_with_a_status_header(serve) -> None:
    check = Scripted("scripted")
    server = serve(check)
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"][0] == 250
    assert check.asked == list(PHASES)
    [stored] = server.folder("INBOX")
    assert b"X-Spam-Status: No, score=0.0 required=5.0 tests=none" in stored


@pytest_twisted.ensureDeferred
async def test_tempfail_at_connect_closes_with_421(serve) -> None:
    check = Scripted("rate", {"connect": Verdict(Action.TEMPFAIL, text="Too many connections")})
    server = serve(check)

    def connect() -> tuple[int, bytes]:
        client = smtplib.SMTP(timeout=10)
        return client.connect("127.0.0.1", server.port)

    code, text = await in_thread(connect)
    assert (code, text) == (421, b"4.7.0 mx.test Too many connections")


@pytest_twisted.ensureDeferred
async def test_reject_at_connect_is_given_at_every_rcpt(serve) -> None:
    blocked = Verdict(Action.REJECT, code=554, enhanced="5.7.1", text="Client blocked")
    server = serve(Scripted("dnsbl", {"connect": blocked}))
    answers = await in_thread(send, server.port, ["alice@example.org", "bob@example.org"])
    assert answers["rcpt"] == [(550, b"5.7.1 Client blocked")] * 2  # RFC 5321 §4.3.2
    assert server.folder("INBOX") == []


@pytest_twisted.ensureDeferred
async def test_a_refused_recipient_is_never_delivered(serve) -> None:
    def only_alice(envelope: Any, address: Any) -> Verdict:
        if address.local == "bob":
            return Verdict(Action.TEMPFAIL, code=450, enhanced="4.2.0", text="Greylisted")
        return ACCEPT

    server = serve(Scripted("greylist", {"recipient": only_alice}))
    answers = await in_thread(send, server.port, ["alice@example.org", "bob@example.org"])
    assert answers["rcpt"][1] == (450, b"4.2.0 Greylisted")
    assert answers["data"][0] == 250
    assert len(server.folder("INBOX", "alice")) == 1
    assert server.folder("INBOX", "bob") == []


@pytest_twisted.ensureDeferred
async def test_points_over_the_threshold_go_to_junk_with_the_verdict(serve) -> None:
    spam = SpamVerdict(0.99, True, ("token 'viagra'",), "bayes+logreg")
    body = Verdict(score=4.0, rule="BAYES_99", reason="p=0.99", spam=spam)
    server = serve(
        Scripted("signals", {"connect": Verdict(score=1.5, rule="RDNS_NONE")}),
        Scripted("spam", {"body": body}),
    )
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"][0] == 250
    assert server.folder("INBOX") == []
    [stored] = server.folder("Junk")
    assert b"X-Spam-Status: Yes, score=5.5 required=5.0" in stored
    assert b"BAYES_99(+4.0)" in stored and b"RDNS_NONE(+1.5)" in stored
    assert b"X-Spam-Flag: YES" in stored
    [info] = server.infos("Junk")
    assert info.spam == spam
    [entry] = server.recorded
    assert entry["message_id"] == "<m1@example.net>"
    assert entry["action"] == "quarantine" and entry["score"] == 5.5
    assert entry["recipients"] == ["alice@example.org"]


@pytest_twisted.ensureDeferred
async def test_a_virus_refuses_the_message_after_data(serve) -> None:
    virus = Verdict(
        Action.REJECT, rule="VIRUS", code=554, enhanced="5.7.1",
        text="Message rejected: virus found (Test.EICAR)",
    )
    server = serve(Scripted("virus", {"body": virus}, honours_allow_list=False))
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"] == (554, b"5.7.1 Message rejected: virus found (Test.EICAR)")
    assert server.folder("INBOX") == [] and server.folder("Junk") == []


@pytest_twisted.ensureDeferred
async def test_an_allow_listed_sender_skips_the_checks_that_honour_it(serve) -> None:
    lists = Scripted(
        "lists", {"sender": Verdict(trusted=True, rule="ALLOW_LIST", score=-1.0)},
        honours_allow_list=False,
    )
    spam = Scripted("spam", {"connect": Verdict(score=9.0, rule="DNSBL"),
                             "body": Verdict(score=9.0, rule="BAYES_99")})
    virus = Scripted("virus", honours_allow_list=False)
    server = serve(lists, spam, virus)
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"][0] == 250
    assert "body" not in spam.asked and "recipient" not in spam.asked
    assert virus.asked[-1] == "body"
    [stored] = server.folder("INBOX")
    assert b"score=-1.0" in stored and b"trusted=yes" in stored


@pytest_twisted.ensureDeferred
async def test_one_recipients_allow_list_covers_that_recipient_only(serve) -> None:
    def alice_trusts(envelope: Any, address: Any) -> Verdict:
        return Verdict(trusted=True, rule="ALLOW_LIST", score=-100) if address.local == "alice" \
            else ACCEPT

    lists = Scripted("lists", {"recipient": alice_trusts}, honours_allow_list=False)
    grey = Scripted("greylist", {"recipient": Verdict(Action.TEMPFAIL, code=450, text="Grey")})
    spam = Scripted("spam", {"body": Verdict(score=6.0, rule="BAYES_99")})
    server = serve(lists, grey, spam)
    answers = await in_thread(send, server.port, ["alice@example.org", "bob@example.org"])
    assert answers["rcpt"][0][0] == 250 and answers["rcpt"][1][0] == 450
    assert "body" not in spam.asked  # the one accepted recipient trusts the sender
    [stored] = server.folder("INBOX", "alice")
    assert b"trusted=yes" in stored and b"BAYES_99" not in stored

    spam.asked.clear()
    both = Scripted("lists", {"recipient": alice_trusts}, honours_allow_list=False)
    server = serve(both, Scripted("spam", {"body": Verdict(score=6.0, rule="BAYES_99")}))
    answers = await in_thread(send, server.port, ["alice@example.org", "bob@example.org"])
    assert answers["data"][0] == 250
    [junk] = server.folder("Junk", "bob")  # bob never trusted the sender: points count
    assert b"BAYES_99(+6.0)" in junk and b"trusted=yes" not in junk


@pytest_twisted.ensureDeferred
async def test_a_broken_check_counts_as_accept(serve) -> None:
    server = serve(Scripted("broken", {phase: RuntimeError("boom") for phase in PHASES}))
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"][0] == 250
    assert len(server.folder("INBOX")) == 1


@pytest_twisted.ensureDeferred
async def test_forged_status_headers_from_outside_are_removed(serve) -> None:
    server = serve(Scripted("scripted"))
    forged = (
        b"X-Spam-Status: No, score=-100\r\n\tfolded=yes\r\nX-Virus-Scanned: clean\r\n" + MESSAGE
    )
    await in_thread(send, server.port, ["alice@example.org"], forged)
    [stored] = server.folder("INBOX")
    assert b"score=-100" not in stored and b"folded=yes" not in stored
    assert b"X-Virus-Scanned" not in stored
    assert stored.count(b"X-Spam-Status:") == 1


@pytest_twisted.ensureDeferred
async def test_score_over_the_reject_threshold_is_refused(serve) -> None:
    server = serve(
        Scripted("spam", {"body": Verdict(score=12.0, rule="BAYES_99")}),
        policy=FilterPolicy(quarantine_score=5.0, reject_score=10.0),
    )
    answers = await in_thread(send, server.port, ["alice@example.org"])
    assert answers["data"] == (550, b"5.7.1 Message rejected as spam")


def test_decide_keeps_the_strongest_action() -> None:
    honours = {"a": True, "b": True}
    verdicts = [
        Verdict(Action.QUARANTINE, check="a"),
        Verdict(Action.TEMPFAIL, check="b", text="later"),
    ]
    outcome = decide(verdicts, honours, FilterPolicy())
    assert outcome.action is Action.TEMPFAIL
    assert outcome.refusal is not None and outcome.refusal.text == "later"
    trusted = decide(verdicts + [Verdict(check="c", trusted=True)], honours, FilterPolicy())
    assert trusted.action is Action.ACCEPT and trusted.trusted


def test_status_header_explains_each_rule() -> None:
    outcome = decide(
        [Verdict(score=2.5, rule="DNSBL_X", reason="listed"), Verdict(score=-0.5, rule="W")],
        {}, FilterPolicy(),
    )
    headers = dict(status_headers(outcome, FilterPolicy()))
    assert headers["X-Spam-Status"] == "No, score=2.0 required=5.0 tests=DNSBL_X(+2.5),W(-0.5)"
    assert headers["X-Spam-Report"] == "DNSBL_X: listed"


@pytest.mark.parametrize(
    "message",
    [b"A: b\r\n\r\nbody\r\n", b"A: b\n\nbody\n", b"A: b\r\n", b"\r\nbody only\r\n", b"A: b"],
)
def test_headers_go_at_the_end_of_the_header_block(message: bytes) -> None:
    out = add_headers(message, [("X-Spam-Status", "No")])
    head, _, body = out.partition(b"X-Spam-Status: No\r\n")
    assert body.endswith(message[len(head.rstrip(b"\r\n")) :].lstrip(b"\r\n")) or not body
    assert b"X-Spam-Status: No\r\n" in out


@given(st.binary(max_size=400))
def test_adding_headers_never_loses_the_body(message: bytes) -> None:
    out = add_headers(message, [("X-Spam-Status", "No")])
    for marker in (b"\r\n\r\n", b"\n\n"):
        at = message.find(marker)
        if at >= 0 and strip_own_headers(message[:at]) == message[:at]:
            assert out.endswith(message[at + len(marker) // 2 :])
