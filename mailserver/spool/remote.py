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
from functools import partial
from typing import Any, BinaryIO

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.dns import DNSTemporaryError, Resolver
from mailserver.smtp.client import ProtocolError, ServerReply, SMTPClient, send_mail
from mailserver.spool.mtasts import MTASTS
from mailserver.spool.mx import NoRoute, Route, find_routes
from mailserver.tls import client_options
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
    #: The next hop took the DSN request (it offers DSN): success notices are its job now.
    dsn_passed: bool = False


def _status(reply: ServerReply) -> str:
    if reply.enhanced:
        return reply.enhanced
    return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}[reply.code // 100]


def _outcome(reply: ServerReply, host: str, dsn_passed: bool = False) -> Outcome:
    if reply.positive:
        state = RecipientState.DELIVERED
    elif reply.temporary:
        state = RecipientState.DEFERRED
    else:
        state = RecipientState.FAILED
    return Outcome(state, str(reply), _status(reply), host, dsn_passed)


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
        verified_tls: Callable[[str], Any] | None = None,
        idle_timeout: float = 5.0,
        max_reuse: int = 100,
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
        #: Client TLS options for a verified connection to a host (tests give their own CA).
        self.verified_tls = verified_tls or partial(client_options, verify=True)
        self.idle_timeout = idle_timeout
        self.max_reuse = max_reuse
        #: Parked connections: (address, TLS mode) -> [(client, expiry timer, uses)].
        self._idle: dict[tuple[str, str], list[tuple[SMTPClient, Any, int]]] = {}

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
        return client_options(host, verify=False)

    # -- connections -------------------------------------------------------------------

    @inlineCallbacks
    def _connect(self, route: Route, address: str, use_tls: bool, tls: str) -> Any:
        """A greeted, EHLO'd (and, as asked, TLS) connection; _NextHost when it fails."""
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
                yield self._starttls(client, route, tls)
        except _NextHost:
            client.transport.abortConnection()
            raise
        except ProtocolError as error:
            client.transport.abortConnection()
            raise _NextHost(str(error)) from None
        return client

    @inlineCallbacks
    def _starttls(self, client: SMTPClient, route: Route, tls: str) -> Any:
        if not client.supports("STARTTLS"):
            if tls == "verify":
                raise _NextHost("STARTTLS not offered; TLS is required")
            return
        reply = yield client.starttls(self._tls_options(route.host, tls))
        if reply.code != 220:
            if tls == "verify":
                raise _NextHost(f"STARTTLS: {reply}")
            return
        try:
            hello = yield client.ehlo(self.hostname)
        except ProtocolError as error:
            raise _NextHost(f"TLS handshake failed: {error}") from None
        if not hello.positive:
            raise _NextHost(f"EHLO after TLS: {hello}")

    def _take_idle(self, address: str, tls: str) -> SMTPClient | None:
        """A parked connection to ``address`` made under the same TLS mode, if any."""
        parked = self._idle.get((address, tls))
        while parked:
            client, timer, uses = parked.pop()
            if timer.active():
                timer.cancel()
            if client.usable:
                client.uses = uses
                return client
        return None

    def _park(self, address: str, tls: str, client: SMTPClient) -> None:
        """Keep ``client`` for the next message to the same host (RFC 5321 §5.1 allows
        several transactions per connection); QUIT it after ``idle_timeout``."""
        uses = getattr(client, "uses", 0) + 1
        if uses >= self.max_reuse or not client.usable:
            client.quit()
            return
        key = (address, tls)

        def expire() -> None:
            entries = self._idle.get(key, [])
            for index, (parked, _timer, _uses) in enumerate(entries):
                if parked is client:
                    del entries[index]
                    break
            client.quit()

        timer = self.reactor.callLater(self.idle_timeout, expire)
        self._idle.setdefault(key, []).append((client, timer, uses))

    def close(self) -> None:
        """QUIT every parked connection (the scheduler calls this on shutdown)."""
        for parked in self._idle.values():
            for client, timer, _uses in parked:
                if timer.active():
                    timer.cancel()
                client.quit()
        self._idle.clear()

    # -- one attempt -------------------------------------------------------------------

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
        reused = self._take_idle(address, tls) if use_tls or tls == "none" else None
        if reused is not None:
            try:
                outcomes = yield self._transact(reused, route, entry, recipients, message)
            except _NextHost:
                pass  # the parked connection went stale: open a fresh one
            else:
                self._park(address, tls, reused)
                return outcomes
        client = yield self._connect(route, address, use_tls, tls)
        outcomes = yield self._transact(client, route, entry, recipients, message)
        self._park(address, tls, client)
        return outcomes

    @inlineCallbacks
    def _transact(
        self,
        client: SMTPClient,
        route: Route,
        entry: QueueEntry,
        recipients: Sequence[QueuedRecipient],
        message: bytes,
    ) -> Any:
        """One transaction on ``client``: Deferred[dict[address, Outcome]]."""
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
        limit = client.extensions.get("SIZE", "")
        if limit.isdigit() and 0 < int(limit) < len(message):
            # RFC 1870 §5: do not send a message larger than the server's declared maximum
            return self._all(
                recipients, RecipientState.FAILED,
                f"{route.host} accepts at most {limit} octets; the message has {len(message)}",
                "5.3.4",
            )
        try:
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
        outcomes = {}
        for r in recipients:
            reply = result.reply_for(r.address)
            if reply is None:
                outcomes[r.address] = Outcome(
                    RecipientState.DEFERRED, "no reply to the message", "4.4.2", route.host
                )
            else:
                outcomes[r.address] = _outcome(reply, route.host, client.supports("DSN"))
        return outcomes


def _read_in_thread(reactor: Any, open_message: Callable[[], BinaryIO]) -> Any:
    """Deferred[bytes]: the whole message, read in a worker thread."""

    def read() -> bytes:
        with open_message() as f:
            return f.read()

    return deferToThreadPool(reactor, reactor.getThreadPool(), read)
