"""The remote courier: deliver one queued message to one domain's mail hosts over SMTP.

Order of hosts is :func:`mailserver.spool.mx.find_routes` (RFC 5321 §5.1). For each address:
connect, read the greeting, EHLO, STARTTLS when offered (``tls="may"``, RFC 3207; a failed
handshake is retried once in plain text, as opportunistic TLS allows) or required
(``tls="verify"``: the certificate must match the MX host name, else the next host), then one
pipelined transaction. What moves on to the next host (RFC 5321 §4.5.4.1, §5.1): no
connection, a 4xx/5xx greeting, a failed EHLO/HELO, a 4xx to MAIL, a lost connection or a
protocol error. Replies to RCPT and to the end of data are final for this attempt:
2xx delivered, 5xx failed, 4xx deferred.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet import ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.dns import DNSTemporaryError, Resolver
from mailserver.smtp.client import ProtocolError, ServerReply, SMTPClient, send_mail
from mailserver.spool.mtasts import MTASTS
from mailserver.spool.mx import NoRoute, Route, find_routes
from mailserver.types import QueuedRecipient, QueueEntry, RecipientState

__all__ = ["Outcome", "RemoteCourier"]

log = Logger(namespace="mailserver.spool.remote")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt for one recipient."""

    state: RecipientState
    reply: str  # what the remote said, or why we could not ask
    status: str  # RFC 3463 code
    remote_mta: str = ""


def _status(reply: ServerReply) -> str:
    if reply.enhanced:
        return reply.enhanced
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}[reply.code // 100]


def _outcome(reply: ServerReply, host: str) -> Outcome:
    if reply.positive:
        state = RecipientState.DELIVERED
    elif reply.temporary:
        state = RecipientState.DEFERRED
    else:
        state = RecipientState.FAILED
    return Outcome(state, str(reply), _status(reply), host)


class _NextHost(Exception):
    """This host cannot take the message now; try the next one."""


class RemoteCourier:
    """Delivers over SMTP. ``port`` is 25 in production; tests point it elsewhere."""

    def __init__(
        self,
        reactor: Any,
        resolver: Resolver,
        hostname: str,
        *,
        port: int = 25,
        tls: str = "may",
        own_names: Sequence[str] = (),
        connect_timeout: float = 30.0,
        timeouts: dict[str, float] | None = None,
        rng: random.Random | None = None,
        bind_address: str | None = None,
        mta_sts: MTASTS | None = None,
        verified_tls: Callable[[str], Any] = ssl.optionsForClientTLS,
    ) -> None:
        if tls not in ("none", "may", "verify"):
            raise ValueError(f"tls must be none, may or verify, not {tls!r}")
        self.reactor = reactor
        self.resolver = resolver
        self.hostname = hostname
        self.port = port
        self.tls = tls
        self.own_names = tuple(own_names) or (hostname,)
        self.connect_timeout = connect_timeout
        self.timeouts = timeouts
        self.rng = rng or random.Random()
        self.bind_address = bind_address
        self.mta_sts = mta_sts
        self.verified_tls = verified_tls

    @inlineCallbacks
    def deliver(
        self,
        entry: QueueEntry,
        domain: str,
        recipients: Sequence[QueuedRecipient],
        open_message: Callable[[], BinaryIO],
    ) -> Any:
        """Deferred[dict[address, Outcome]] for ``recipients`` (all in ``domain``)."""
        try:
            routes = yield find_routes(
                self.resolver, domain, own_names=self.own_names, rng=self.rng
            )
        except NoRoute as error:
            return self._all(recipients, RecipientState.FAILED, error.text, error.enhanced)
        except DNSTemporaryError as error:
            return self._all(recipients, RecipientState.DEFERRED, f"DNS: {error}", "4.4.3")
        tls = self.tls
        if self.mta_sts is not None:
            policy = yield self.mta_sts.policy(domain)
            if policy is not None and policy.mode == "enforce":
                # RFC 8461 §4.1, §5: only matching MX hosts, only with verified TLS
                routes = [route for route in routes if policy.allows(route.host)]
                tls = "verify"
                if not routes:
                    return self._all(
                        recipients, RecipientState.DEFERRED,
                        f"MTA-STS policy of {domain}: no MX host matches", "4.7.5",
                    )
        message = yield _read_in_thread(self.reactor, open_message)
        last = "no mail host answered"
        tries = {"may": (True, False), "verify": (True,), "none": (False,)}[tls]
        for route in routes:
            for address in route.addresses:
                for use_tls in tries:
                    try:
                        result = yield self._attempt(
                            route, address, entry, recipients, message, use_tls, tls
                        )
                        return result
                    except _NextHost as why:
                        last = f"{route.host}[{address}]: {why}"
                        log.info("{queue_id}: {why}", queue_id=entry.queue_id, why=last)
                        if "TLS" not in str(why):
                            break  # the plain-text retry is only for a failed handshake
        status = "4.7.5" if tls == "verify" else "4.4.1"
        return self._all(recipients, RecipientState.DEFERRED, last, status)

    @staticmethod
    def _all(
        recipients: Sequence[QueuedRecipient], state: RecipientState, reply: str, status: str
    ) -> dict[str, Outcome]:
        return {r.address: Outcome(state, reply, status) for r in recipients}

    def _tls_options(self, host: str, tls: str) -> Any:
        if tls == "verify":
            return self.verified_tls(host)
        return ssl.CertificateOptions(verify=False)

    @inlineCallbacks
    def _attempt(
        self,
        route: Route,
        address: str,
        entry: QueueEntry,
        recipients: Sequence[QueuedRecipient],
        message: bytes,
        use_tls: bool,
        tls: str,
    ) -> Any:
        client = SMTPClient(self.reactor, self.timeouts)
        endpoint = HostnameEndpoint(
            self.reactor,
            address.encode(),
            self.port,
            timeout=self.connect_timeout,
            bindAddress=(self.bind_address, 0) if self.bind_address else None,
        )
        try:
            yield connectProtocol(endpoint, client)
        except Exception as error:
            raise _NextHost(f"cannot connect: {error}") from None
        try:
            greeting = yield client.greeting
            if greeting.code != 220:
                raise _NextHost(f"greeting: {greeting}")
            hello = yield client.ehlo(self.hostname)
            if not hello.positive:
                raise _NextHost(f"EHLO: {hello}")
            if use_tls:
                if not client.supports("STARTTLS"):
                    if tls == "verify":
                        raise _NextHost("STARTTLS not offered; TLS is required")
                else:
                    reply = yield client.starttls(self._tls_options(route.host, tls))
                    if reply.code != 220 and tls == "verify":
                        raise _NextHost(f"STARTTLS: {reply}")
                    if reply.code == 220:
                        try:
                            hello = yield client.ehlo(self.hostname)
                        except ProtocolError as error:
                            raise _NextHost(f"TLS handshake failed: {error}") from None
                        if not hello.positive:
                            raise _NextHost(f"EHLO after TLS: {hello}")
            if entry.params.get("SMTPUTF8") is not None and not client.supports("SMTPUTF8"):
                # RFC 6531 §3.2: a message that needs SMTPUTF8 cannot go to a server without it
                return self._all(
                    recipients, RecipientState.FAILED,
                    f"{route.host} does not support SMTPUTF8", "5.6.7",
                )
            if entry.params.get("BODY") == "8BITMIME" and not client.supports("8BITMIME"):
                # RFC 6152 §3: no 8-bit content to a 7-bit server; we do not downconvert
                return self._all(
                    recipients, RecipientState.FAILED,
                    f"{route.host} does not support 8BITMIME", "5.6.3",
                )
            result = yield send_mail(
                client,
                entry.sender,
                [(r.address, dict(r.params)) for r in recipients],
                message,
                dict(entry.params),
            )
        except ProtocolError as error:
            client.transport.abortConnection()
            raise _NextHost(str(error)) from None
        if result.mail is not None and result.mail.temporary:
            client.transport.abortConnection()
            raise _NextHost(f"MAIL: {result.mail}")
        yield client.quit()
        outcomes = {}
        for r in recipients:
            reply = result.reply_for(r.address)
            if reply is None:
                outcomes[r.address] = Outcome(
                    RecipientState.DEFERRED, "no reply to the message", "4.4.2", route.host
                )
            else:
                outcomes[r.address] = _outcome(reply, route.host)
        return outcomes


def _read_in_thread(reactor: Any, open_message: Callable[[], BinaryIO]) -> Any:
    """Deferred[bytes]: the whole message, read in a worker thread."""

    def read() -> bytes:
        with open_message() as f:
            return f.read()

    return deferToThreadPool(reactor, reactor.getThreadPool(), read)
