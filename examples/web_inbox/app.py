"""A twisted.web app that receives mail for one address through mailserver's SMTP factory and
shows it on a page.

The app brings its own pieces and takes only the public API from mailserver: a delivery
target (:class:`InboxTarget`, an ``IDeliveryTarget`` keeping messages in a list), a realm
handing that target to anonymous SMTP sessions (so the avatar decides who may receive mail:
anything but the one address is refused), and ``SMTPFactory`` + ``SMTPPolicy``.

Run it: ``python examples/web_inbox/app.py inbox@example.org``, send mail to
127.0.0.1:2526 and open http://127.0.0.1:8026/.
"""

from __future__ import annotations

import argparse
import html
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any, BinaryIO

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from mailserver.errors import MailError, NoSuchUser
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.smtp import SMTPFactory, SMTPPolicy
from mailserver.types import Address, Envelope


@dataclass(frozen=True)
class Received:
    """One message as the page shows it."""

    sender: str
    subject: str
    text: str


class Inbox:
    """The app's own storage: the messages received for ``address``, newest last."""

    def __init__(self, address: str) -> None:
        self.address = address.lower()
        self.messages: list[Received] = []

    def add(self, sender: str, data: bytes) -> None:
        parsed = BytesParser(policy=default).parse(io.BytesIO(data))
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        self.messages.append(Received(sender, str(parsed["Subject"] or ""), text))


@implementer(IDeliveryTarget)
class InboxTarget:
    """Accepts mail for the inbox's one address."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def start(self, envelope: Envelope) -> InboxDelivery:
        return InboxDelivery(self.inbox, envelope)


@implementer(IDelivery)
class InboxDelivery:
    """One SMTP transaction: nothing is shown until commit; abort forgets it."""

    def __init__(self, inbox: Inbox, envelope: Envelope) -> None:
        self.inbox = inbox
        self.envelope = envelope
        self.accepted = False
        self.data: bytes | None = None

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        if str(address).lower() != self.inbox.address:
            return fail(NoSuchUser(detail=str(address)))  # 550 5.1.1: only one address here
        self.accepted = True
        return succeed(None)

    def body(self, source: BinaryIO) -> Deferred[None]:
        if not self.accepted:
            return fail(MailError("no valid recipients"))
        self.data = source.read()
        return succeed(None)

    def commit(self) -> Deferred[None]:
        if self.data is None:
            return fail(MailError("no message to commit"))
        sender = "" if self.envelope.sender is None else str(self.envelope.sender)
        self.inbox.add(sender, self.data)  # in memory: "durable" for as long as the app runs
        self.data = None
        return succeed(None)

    def abort(self) -> Deferred[None]:
        self.data = None
        return succeed(None)


@implementer(IRealm)
class InboxRealm:
    """Every SMTP session (anonymous, as on port 25) gets the inbox's delivery target."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IDeliveryTarget in interfaces:
            return IDeliveryTarget, InboxTarget(self.inbox), lambda: None
        raise NotImplementedError("this realm only hands out delivery targets")


class InboxPage(Resource):
    """GET / : the received messages, newest first, every value HTML-escaped."""

    isLeaf = True

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self.inbox = inbox

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        items = "".join(
            f"<li><b>{html.escape(m.subject)}</b> from {html.escape(m.sender or '<>')}"
            f"<pre>{html.escape(m.text)}</pre></li>"
            for m in reversed(self.inbox.messages)
        )
        page = (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=10>"
            f"<title>Mail for {html.escape(self.inbox.address)}</title>"
            f"<h1>Mail for {html.escape(self.inbox.address)}</h1>"
            f"<p>{len(self.inbox.messages)} message(s)</p><ul>{items}</ul>"
        )
        return page.encode("utf-8")


def build(address: str, hostname: str = "localhost") -> tuple[Inbox, SMTPFactory, Site]:
    """The inbox, its SMTP factory (no TLS: a local demo) and its web site."""
    inbox = Inbox(address)
    portal = Portal(InboxRealm(inbox), [AllowAnonymousAccess()])
    smtp = SMTPFactory(portal, SMTPPolicy(hostname=hostname, max_message_size=1 << 20), None)
    return inbox, smtp, Site(InboxPage(inbox))


ENDPOINT = "a Twisted endpoint string (default: %(default)s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show the mail for one address on a web page.")
    parser.add_argument("address", help="the one address that receives mail")
    parser.add_argument("--smtp", default="tcp:2526:interface=127.0.0.1", help=ENDPOINT)
    parser.add_argument("--http", default="tcp:8026:interface=127.0.0.1", help=ENDPOINT)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    _, smtp, site = build(args.address)
    serverFromString(reactor, args.smtp).listen(smtp)
    serverFromString(reactor, args.http).listen(site)
    print(f"SMTP on {args.smtp}, the page on {args.http}")
    reactor.run()


if __name__ == "__main__":
    main()
