"""Rate limits: connections, messages and recipients per client address, messages and
recipients per authenticated user.

Design rules:

1. Each limit is ``count`` events per ``window`` seconds, enforced as a generic cell rate
   (GCRA, a token bucket kept as one number per key: the "theoretical arrival time"): a
   client may use its whole ``count`` at once, then one more every ``window / count``
   seconds. A refused event does not use up the allowance, so a client that keeps trying
   gets exactly the limit's rate through, never less.
2. The clock is a parameter (``IReactorTime``): limits are tested with ``task.Clock``.
3. Memory is bounded: a key whose bucket is full again (idle for a window) is dropped on the
   next access of its limiter, and each limiter keeps at most ``max_entries`` keys (the least
   recently seen key is forgotten first, which lets that client through: fail open).
4. The state lives in this process's memory only: it is lost on restart and not shared
   between processes or machines behind a load balancer (each counts its own share).
5. Keys: an IPv4 client by its address, an IPv6 client by its /64 (``ipv6_prefix``): one
   host usually owns a whole /64, so per-address limits would be trivial to dodge.
   Authenticated senders are limited per user (``Envelope.authenticated_as``) instead of per
   address; ``exempt_networks`` (loopback by default) skip the address limits.
6. Replies: too many connections closes with ``421 4.7.0`` at connect; too many messages or
   recipients is ``450 4.7.1`` (given at RCPT by the pipeline). Allow-listed senders skip
   this check (``honours_allow_list``).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from mailserver.filter.addresses import IP, client_ip, in_networks, networks_of
from mailserver.filter.session import Abstaining
from mailserver.interfaces.filter import ICheck
from mailserver.types import ACCEPT, Action, Envelope, Peer, Verdict

__all__ = ["Limit", "RateLimitCheck", "RateLimitSession", "RateLimiter", "client_key"]

log = Logger(namespace="mailserver.filter.ratelimit")

#: Loopback clients (local tools, the web mail) are not limited per address by default.
LOOPBACK_NETWORKS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events per ``window`` seconds (a burst of ``count`` allowed)."""

    count: int
    window: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.window <= 0:
            raise ValueError(f"a rate limit needs count >= 1 and window > 0, not {self}")


class RateLimiter:
    """GCRA for one limit over many keys (rule 1), on ``clock`` (an ``IReactorTime``)."""

    def __init__(self, clock: Any, limit: Limit, max_entries: int = 100_000) -> None:
        self.clock = clock
        self.limit = limit
        self.max_entries = max_entries
        self._interval = limit.window / limit.count
        self._tolerance = limit.window - self._interval
        self._slack = limit.window * 1e-9  # float rounding in the sums below
        #: key -> theoretical arrival time, least recently used first.
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def take(self, key: str) -> float:
        """Use one event of ``key``'s allowance: 0.0 when allowed, else the seconds until
        the next event would be (the refused event is not counted)."""
        now = self.clock.seconds()
        self._evict(now)
        tat = max(self._tat.get(key, now), now)
        wait = tat - self._tolerance - now
        if wait > self._slack:
            return wait
        self._tat[key] = tat + self._interval
        self._tat.move_to_end(key)
        while len(self._tat) > self.max_entries:
            self._tat.popitem(last=False)
        return 0.0

    def _evict(self, now: float) -> None:
        """Drop idle keys (bucket full again) from the least recently used end."""
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[key]


def client_key(address: IP, ipv6_prefix: int = 64) -> str:
    """The key of a client address: the IPv4 address, or the IPv6 network of ``ipv6_prefix``."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


@implementer(ICheck)
class RateLimitCheck:
    """Per-address and per-user rate limits (rules 1-6). Each limit is a :class:`Limit` or
    None (not limited): ``connections``, ``messages`` (MAIL commands) and ``recipients``
    (RCPT commands) per client address; ``user_messages`` and ``user_recipients`` per
    authenticated user. The state is in this process's memory (rule 4)."""

    name = "ratelimit"
    honours_allow_list = True

    def __init__(
        self,
        clock: Any,
        *,
        connections: Limit | None = None,
        messages: Limit | None = None,
        recipients: Limit | None = None,
        user_messages: Limit | None = None,
        user_recipients: Limit | None = None,
        exempt_networks: Sequence[str] = LOOPBACK_NETWORKS,
        ipv6_prefix: int = 64,
        max_entries: int = 100_000,
    ) -> None:
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be 0-128, not {ipv6_prefix}")
        self.clock = clock
        self.ipv6_prefix = ipv6_prefix
        self._exempt = networks_of(exempt_networks)

        def limiter(limit: Limit | None) -> RateLimiter | None:
            return None if limit is None else RateLimiter(clock, limit, max_entries)

        self.connections = limiter(connections)
        self.messages = limiter(messages)
        self.recipients = limiter(recipients)
        self.user_messages = limiter(user_messages)
        self.user_recipients = limiter(user_recipients)

    def session(self, peer: Peer) -> RateLimitSession:
        return RateLimitSession(self, peer)

    def key_of(self, address: str) -> tuple[str, str] | None:
        """(key, shown address) of a client limited per address; None when exempt (or not
        an IP address: nothing to count it by)."""
        ip = client_ip(address)
        if ip is None or in_networks(ip, self._exempt):
            return None
        return client_key(ip, self.ipv6_prefix), str(ip)


def _over(limiter: RateLimiter | None, key: str) -> float:
    return 0.0 if limiter is None else limiter.take(key)


class RateLimitSession(Abstaining):
    """One connection's events, counted against the check's shared limiters."""

    def __init__(self, check: RateLimitCheck, peer: Peer) -> None:
        self._check = check
        self._peer = peer
        self._client = check.key_of(peer.address)

    def connect(self) -> Verdict:
        if self._client is None or self._peer.authenticated_as:
            return ACCEPT
        key, shown = self._client
        wait = _over(self._check.connections, key)
        if not wait:
            return ACCEPT
        return self._refuse("RATE_CONNECTIONS", wait, 421, "4.7.0",
                            f"Too many connections from [{shown}], try again later")

    def sender(self, envelope: Envelope) -> Verdict:
        check = self._check
        return self._count(envelope, check.user_messages, check.messages, "MESSAGES")

    def recipient(self, envelope: Envelope, address: Any) -> Verdict:
        check = self._check
        return self._count(envelope, check.user_recipients, check.recipients, "RECIPIENTS")

    def _count(
        self, envelope: Envelope, per_user: RateLimiter | None,
        per_client: RateLimiter | None, what: str,
    ) -> Verdict:
        """One MAIL or RCPT counted against the user's limit when authenticated, else the
        client address's: 450 4.7.1 (rule ``RATE_[USER_]<what>``) when over."""
        user = self._user(envelope)
        if user is not None:
            limiter, key, shown, rule = per_user, user, user, f"RATE_USER_{what}"
        elif self._client is not None:
            (key, address), limiter, rule = self._client, per_client, f"RATE_{what}"
            shown = f"[{address}]"
        else:
            return ACCEPT
        wait = _over(limiter, key)
        if not wait:
            return ACCEPT
        return self._refuse(rule, wait, 450, "4.7.1",
                            f"Too many {what.lower()} from {shown}, try again later")

    def _user(self, envelope: Envelope) -> str | None:
        user = envelope.authenticated_as or self._peer.authenticated_as
        return user.lower() if user else None

    def _refuse(self, rule: str, wait: float, code: int, enhanced: str, text: str) -> Verdict:
        reason = f"{text.split(',')[0]} (next allowed in {wait:.0f}s)"
        log.info("rate limit {rule} for {peer}: {reason}", rule=rule, peer=self._peer.address,
                 reason=reason)
        return Verdict(Action.TEMPFAIL, self._check.name, rule, 0.0, reason, code, enhanced, text)
