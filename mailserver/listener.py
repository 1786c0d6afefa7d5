"""ListenerFactory: what the SMTP, IMAP and POP3 factories share: the portal, policy, TLS
options and reactor they are built from, and the count of open connections, in all and per
client address, that a policy's ``max_connections`` and ``max_connections_per_ip`` cap; and
:func:`accepted`, the set-up of each new connection that their protocols share.

Design rules:
- No global state: each listener's factory counts its own connections.
- A protocol asks :meth:`ListenerFactory.admit` once when its connection is made and, only if
  it was admitted, calls :meth:`ListenerFactory.release` once when the connection is lost;
  what a refused client is told stays with the protocol.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from mailserver.observe.events import CONNECTION

__all__ = ["ListenerFactory", "accepted"]

log = Logger(namespace="mailserver.listener")


def accepted(transport: Any) -> str:
    """Set up a new connection the same way for every protocol: no Nagle delay (replies are
    small and the client waits for each), where the transport has it; the client's address
    (its host, or the whole address when it has none)."""
    peer = transport.getPeer()
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass
    return getattr(peer, "host", str(peer))


class ListenerFactory(Factory):
    """A listener's factory over a portal, a policy (with ``max_connections`` and
    ``max_connections_per_ip``) and TLS options; it counts open connections."""

    def __init__(
        self, portal: Portal, policy: Any, tls: Any = None, reactor: IReactorTime | None = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        self.portal = portal
        self.policy = policy
        self.tls = tls
        self.reactor = reactor
        self.connections = 0
        self.per_ip: Counter[str] = Counter()
        self.shutting_down = False
        self.noisy = False
        #: The config key of the listener (e.g. ``smtp.listen``) that labels its events, and
        #: whether its sessions log each command and reply (``[log] trace``); set by wiring.
        self.listener = ""
        self.trace = False

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``, or False (and count nothing) when the
        listener or that client already has as many as the policy allows."""
        if (
            self.connections >= self.policy.max_connections
            or self.per_ip[peer] >= self.policy.max_connections_per_ip
        ):
            self._event(peer, "refused")
            return False
        self.connections += 1
        self.per_ip[peer] += 1
        self._event(peer, "open")
        return True

    def release(self, peer: str) -> None:
        """Uncount a connection :meth:`admit` counted."""
        self.connections -= 1
        self.per_ip[peer] -= 1
        if self.per_ip[peer] <= 0:
            del self.per_ip[peer]
        self._event(peer, "closed")

    def _event(self, peer: str, state: str) -> None:
        """A ``connection`` event (see :mod:`mailserver.observe.events`), at debug level."""
        log.debug(
            "{listener} connection from {peer} {state}",
            mail_event=CONNECTION, listener=self.listener, peer=peer, state=state,
        )
