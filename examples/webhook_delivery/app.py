"""Mail to a webhook: an app plugging its own delivery target into mailserver's SMTP server.

:class:`WebhookTarget` is an ``IDeliveryTarget`` whose transaction POSTs each message as JSON
to a URL (with treq) and commits only when the webhook answered 2xx, so the SMTP client gets
its ``250`` only after the webhook has the message. A webhook that fails or cannot be reached
gets the client a ``451 4.4.1`` and the client's own retries do the rest.

Run it: ``python examples/webhook_delivery/app.py example.org http://127.0.0.1:8000/mail``;
SMTP listens on 127.0.0.1:2527.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import treq
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.errors import MailError, RelayDenied
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.smtp import SMTPFactory, SMTPPolicy
from mailserver.types import Address, Envelope


class WebhookUnavailable(MailError):
    """The webhook refused the message or could not be reached: try again later."""

    code = 451
    enhanced = "4.4.1"
    text = "Delivery to the webhook failed, try again later"


@implementer(IDeliveryTarget)
class WebhookTarget:
    """Mail for ``domain`` is POSTed to ``url``; other recipients are refused (no relaying).

    The JSON body: ``{"from": "...", "to": [...], "message": "<base64 of the bytes>"}``.
    """

    def __init__(self, url: str, domain: str, reactor: Any = None, timeout: float = 30.0):
        self.url = url
        self.domain = domain.lower()
        self.reactor = reactor
        self.timeout = timeout

    def start(self, envelope: Envelope) -> WebhookDelivery:
        return WebhookDelivery(self, envelope)


@implementer(IDelivery)
class WebhookDelivery:
    def __init__(self, target: WebhookTarget, envelope: Envelope) -> None:
        self.target = target
        self.envelope = envelope
        self.recipients: list[str] = []
        self.data: bytes | None = None

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        if address.domain.lower() != self.target.domain:
            return fail(RelayDenied(detail=str(address)))  # 550 5.7.1
        self.recipients.append(str(address))
        return succeed(None)

    def body(self, source: BinaryIO) -> Deferred[None]:
        if not self.recipients:
            return fail(MailError("no valid recipients"))
        self.data = source.read()
        return succeed(None)

    def commit(self) -> Deferred[None]:
        """POST the message; fire only after a 2xx answer (the webhook has it), else fail
        with WebhookUnavailable (451: the client keeps the message and retries)."""
        if self.data is None:
            return fail(MailError("no message to commit"))
        payload = {
            "from": "" if self.envelope.sender is None else str(self.envelope.sender),
            "to": self.recipients,
            "message": base64.b64encode(self.data).decode("ascii"),
        }
        self.data = None
        target = self.target
        posting = treq.post(
            target.url, json=payload, timeout=target.timeout, reactor=target.reactor
        )

        def answered(response: Any) -> Deferred[None]:
            reading: Deferred[Any] = treq.content(response)  # read it all: frees the connection

            def check(_: bytes) -> None:
                if not 200 <= response.code < 300:
                    raise WebhookUnavailable(detail=f"{target.url} answered {response.code}")

            return reading.addCallback(check)

        def unreachable(failure: Failure) -> Failure:
            if failure.check(MailError):
                return failure
            return Failure(WebhookUnavailable(detail=f"{target.url}: {failure.value}"))

        return posting.addCallback(answered).addErrback(unreachable)

    def abort(self) -> Deferred[None]:
        self.data = None
        return succeed(None)


@implementer(IRealm)
class WebhookRealm:
    """Anonymous SMTP sessions get the webhook target."""

    def __init__(self, target: WebhookTarget) -> None:
        self.target = target

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IDeliveryTarget in interfaces:
            return IDeliveryTarget, self.target, lambda: None
        raise NotImplementedError("this realm only hands out delivery targets")


def build(url: str, domain: str, reactor: Any = None, hostname: str = "localhost") -> SMTPFactory:
    """The SMTP factory delivering mail for ``domain`` to the webhook at ``url``."""
    portal = Portal(WebhookRealm(WebhookTarget(url, domain, reactor)), [AllowAnonymousAccess()])
    return SMTPFactory(portal, SMTPPolicy(hostname=hostname), None, reactor=reactor)


ENDPOINT = "a Twisted endpoint string (default: %(default)s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deliver the mail of one domain to a webhook.")
    parser.add_argument("domain", help="the domain whose mail goes to the webhook")
    parser.add_argument("url", help="the webhook's URL")
    parser.add_argument("--smtp", default="tcp:2527:interface=127.0.0.1", help=ENDPOINT)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    serverFromString(reactor, args.smtp).listen(build(args.url, args.domain, reactor))
    print(f"SMTP on {args.smtp}: mail for {args.domain} goes to {args.url}")
    reactor.run()


if __name__ == "__main__":
    main()
