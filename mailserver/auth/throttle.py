"""Brute-force protection: failure counters per IP and per account, growing delays, bans.

Design rules (for the protocols that call it):

- Call :meth:`Throttle.check` BEFORE looking at the credentials. Anything but ``ALLOW`` is
  refused without checking the password: a banned IP or account learns nothing, not even
  whether its guess was right. Reply the same way for every account (known or not), e.g.
  ``454 4.7.0 Too many failed attempts, try again later`` (SMTP) or ``NO [UNAVAILABLE]`` (IMAP).
- After a failed check, call :meth:`Throttle.failed`, then send the failure reply only when
  :meth:`Throttle.delay` fires (it uses ``clock.callLater``: the reactor is never blocked,
  brute force just slows down). After a good one, call :meth:`Throttle.succeeded`.
- Unknown accounts are counted exactly like known ones, and account names are canonical
  (stripped, lower-cased, cut to :data:`MAX_ACCOUNT_KEY` characters), so neither the
  decisions nor their timing tell an attacker which accounts exist.

Counting. Every failure adds one to three counters: the client IP's, the account's and the
(IP, account) pair's. IPv4 addresses count alone; IPv6 addresses count per /64 network
(:attr:`ThrottlePolicy.ipv6_prefix`), because one host usually owns a whole /64; an
IPv4-mapped IPv6 address counts as its IPv4 address. Counters leak: each forgets one failure
every :attr:`ThrottlePolicy.decay_seconds`, and an idle counter is dropped.

Delays. With ``n`` failures on a counter, the next attempt for it waits
``min(max_delay, base_delay * factor ** (n - 1))`` seconds after the last failure (1, 2, 4,
... 30 s by default). ``check`` returns ``WAIT`` while the IP's or the account's wait runs, so
parallel connections do not get around the delay.

Bans. When the IP's counter reaches ``ip_ban_after`` the IP is banned for ``ip_ban_seconds``;
when the account's counter (failures from all IPs) reaches ``account_ban_after`` the account
is banned for ``account_ban_seconds``. The account ban applies to EVERY IP, including the
owner's with the right password: letting a correct password through a ban would turn the
ban into an oracle that keeps the brute force going. This is the secure choice and it lets
an attacker lock an account out for a while; the account threshold is therefore higher than
the IP one. Counters are not reset by a ban, so a repeat offender is banned again sooner.

Success. :meth:`Throttle.succeeded` forgives the failures of that (IP, account) pair only: they
are removed from the pair's, the IP's and the account's counters. The IP's failures against
other accounts and other IPs' failures against the account stay, so logging in to an
account one owns does not launder a brute-force run.

Memory. Each of the three tables holds at most :attr:`ThrottlePolicy.max_keys` entries; the
least recently used entry is dropped first (``check`` of a key counts as a use, so a banned
client that keeps knocking stays remembered). Only failures create entries.

Not thread-safe: call every method from the reactor thread.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

if TYPE_CHECKING:
    from mailserver.config import SecurityConfig

__all__ = [
    "MAX_ACCOUNT_KEY",
    "REASON_ACCOUNT",
    "REASON_IP",
    "Decision",
    "Failures",
    "Throttle",
    "ThrottlePolicy",
    "Verdict",
    "account_key",
    "ip_key",
    "policy_from_config",
]

#: Account keys are cut to this many characters (longer names are not addresses anyway), so
#: an attacker cannot make the tables hold huge keys.
MAX_ACCOUNT_KEY = 320

#: :attr:`Decision.reason` values: which counter caused the wait or the ban.
REASON_IP = "ip"
REASON_ACCOUNT = "account"

#: Slack for float arithmetic when a decayed counter is rounded up to whole failures.
_EPSILON = 1e-9


@dataclass(frozen=True)
class ThrottlePolicy:
    """The knobs of a :class:`Throttle` (see the module docstring for the semantics)."""

    #: Seconds to wait after the first failure of a counter.
    base_delay: float = 1.0
    #: Each further failure multiplies the wait by this (>= 1).
    factor: float = 2.0
    #: The wait never exceeds this many seconds.
    max_delay: float = 30.0
    #: Failures from one IP (all accounts) that ban the IP.
    ip_ban_after: int = 10
    #: Seconds an IP ban lasts.
    ip_ban_seconds: float = 900.0
    #: Failures against one account (all IPs) that ban the account.
    account_ban_after: int = 20
    #: Seconds an account ban lasts.
    account_ban_seconds: float = 900.0
    #: Each counter forgets one failure every this many seconds.
    decay_seconds: float = 300.0
    #: Most entries kept per table (IPs, accounts, pairs); least recently used go first.
    max_keys: int = 100_000
    #: IPv6 addresses are counted per network of this prefix length.
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        problems = [
            (self.base_delay >= 0, "base_delay must be >= 0"),
            (self.factor >= 1, "factor must be >= 1"),
            (self.max_delay >= 0, "max_delay must be >= 0"),
            (self.ip_ban_after >= 1, "ip_ban_after must be >= 1"),
            (self.ip_ban_seconds > 0, "ip_ban_seconds must be > 0"),
            (self.account_ban_after >= 1, "account_ban_after must be >= 1"),
            (self.account_ban_seconds > 0, "account_ban_seconds must be > 0"),
            (self.decay_seconds > 0, "decay_seconds must be > 0"),
            (self.max_keys >= 1, "max_keys must be >= 1"),
            (0 <= self.ipv6_prefix <= 128, "ipv6_prefix must be in 0..128"),
        ]
        for ok, problem in problems:
            if not ok:
                raise ValueError(problem)

    def delay_for(self, failures: int) -> float:
        """The wait after ``failures`` failures: 0 for none, then growing, capped at max_delay.

        Never decreases as ``failures`` grows, and never exceeds :attr:`max_delay`.
        """
        if failures <= 0:
            return 0.0
        try:
            delay = self.base_delay * self.factor ** (failures - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, delay)


def policy_from_config(security: SecurityConfig) -> ThrottlePolicy:
    """The policy set by the ``[security] throttle_*`` keys."""
    return ThrottlePolicy(
        base_delay=security.throttle_base_delay,
        factor=security.throttle_factor,
        max_delay=security.throttle_max_delay,
        ip_ban_after=security.throttle_ip_ban_after,
        ip_ban_seconds=security.throttle_ip_ban_seconds,
        account_ban_after=security.throttle_account_ban_after,
        account_ban_seconds=security.throttle_account_ban_seconds,
        decay_seconds=security.throttle_decay_seconds,
        max_keys=security.throttle_max_tracked,
    )


class Verdict(enum.Enum):
    """What a protocol may do with the next authentication attempt."""

    #: Check the credentials.
    ALLOW = "allow"
    #: Refuse without checking; a delay is running (:attr:`Decision.retry_after` seconds).
    WAIT = "wait"
    #: Refuse without checking; a ban is running until :attr:`Decision.until`.
    BANNED = "banned"


@dataclass(frozen=True)
class Decision:
    """The answer of :meth:`Throttle.check` and :meth:`Throttle.failed`."""

    verdict: Verdict
    #: Seconds from now until an attempt would be considered again (0 when allowed).
    retry_after: float = 0.0
    #: The clock time (``clock.seconds()``) at which that is.
    until: float = 0.0
    #: :data:`REASON_IP` or :data:`REASON_ACCOUNT`; "" when allowed.
    reason: str = ""
    #: True only from :meth:`Throttle.failed` when that very failure started the ban
    #: (audit it once as BANNED).
    new_ban: bool = False

    @property
    def allowed(self) -> bool:
        """Whether the credentials may be checked now."""
        return self.verdict is Verdict.ALLOW


@dataclass(frozen=True)
class Failures:
    """Current (decayed, rounded up) failure counts for an IP, an account and the pair."""

    ip: int
    account: int
    pair: int


def ip_key(ip: str, ipv6_prefix: int = 64) -> str:
    """The counter key of client address ``ip``: the IPv4 address, the IPv6 /``ipv6_prefix``
    network (``2001:db8::/64``), the IPv4 address inside an IPv4-mapped IPv6 one. Brackets
    and a zone (``%eth0``) are ignored; anything else (a UNIX socket name) is its own key."""
    text = ip.strip().strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return ip.strip()[:MAX_ACCOUNT_KEY]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


def account_key(account: str) -> str:
    """The counter key of login name ``account``: stripped, lower-cased, cut to
    :data:`MAX_ACCOUNT_KEY` characters. Whether the account exists plays no part."""
    return account.strip().lower()[:MAX_ACCOUNT_KEY]


@dataclass
class _Counter:
    """One key's leaky failure counter, its running wait and its ban."""

    failures: float = 0.0
    #: Clock time at which ``failures`` was last brought up to date.
    stamp: float = 0.0
    #: No attempt is considered before this clock time.
    not_before: float = 0.0
    banned_until: float = 0.0

    def settle(self, now: float, decay_seconds: float) -> None:
        """Apply the decay since :attr:`stamp`."""
        if now > self.stamp:
            self.failures = max(0.0, self.failures - (now - self.stamp) / decay_seconds)
            self.stamp = now

    def count(self) -> int:
        """Failures as a whole number (a partly forgotten failure still counts)."""
        return max(0, math.ceil(self.failures - _EPSILON))

    def idle(self, now: float) -> bool:
        """Whether this counter no longer affects anything and can be dropped."""
        return self.count() == 0 and self.not_before <= now and self.banned_until <= now


class _Table:
    """Key -> counter, bounded: the least recently used key is dropped beyond ``limit``."""

    def __init__(self, limit: int, decay_seconds: float) -> None:
        self._entries: OrderedDict[object, _Counter] = OrderedDict()
        self._limit = limit
        self._decay = decay_seconds

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object, now: float) -> _Counter | None:
        """The settled counter for ``key`` (marked as recently used), or None."""
        counter = self._entries.get(key)
        if counter is None:
            return None
        counter.settle(now, self._decay)
        if counter.idle(now):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return counter

    def get_or_add(self, key: object, now: float) -> _Counter:
        """The settled counter for ``key``, created when missing (evicting the oldest)."""
        counter = self.get(key, now)
        if counter is None:
            counter = self._entries[key] = _Counter(stamp=now)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)
        return counter

    def pop(self, key: object, now: float) -> _Counter | None:
        """Remove ``key``; its settled counter, or None."""
        counter = self._entries.pop(key, None)
        if counter is not None:
            counter.settle(now, self._decay)
        return counter


class Throttle:
    """Failure counters with delays and bans on an injected clock (see the module docstring)."""

    def __init__(self, clock: IReactorTime, policy: ThrottlePolicy | None = None) -> None:
        self.clock = clock
        self.policy = policy or ThrottlePolicy()
        limit, decay = self.policy.max_keys, self.policy.decay_seconds
        self._ips = _Table(limit, decay)
        self._accounts = _Table(limit, decay)
        self._pairs = _Table(limit, decay)

    # --- the protocol-facing API ------------------------------------------------------------

    def check(self, ip: str, account: str) -> Decision:
        """May ``ip`` try to log in to ``account`` now? Call before checking credentials.

        ``BANNED`` (IP first, then account) or ``WAIT`` (a delay after a recent failure is
        still running) mean: refuse without checking the credentials. Creates no state.
        """
        return self._decide(self._ip(ip), account_key(account), self.clock.seconds())

    def failed(self, ip: str, account: str) -> Decision:
        """Count a failed login (wrong password, unknown account: the same) of ``ip`` to
        ``account``. Returns the decision now in force; ``new_ban`` is True when this
        failure started a ban."""
        now = self.clock.seconds()
        ipk, acct = self._ip(ip), account_key(account)
        policy = self.policy
        started = False
        for table, key, ban_after, ban_seconds in (
            (self._ips, ipk, policy.ip_ban_after, policy.ip_ban_seconds),
            (self._accounts, acct, policy.account_ban_after, policy.account_ban_seconds),
            (self._pairs, (ipk, acct), 0, 0.0),
        ):
            counter = table.get_or_add(key, now)
            counter.failures += 1
            failures = counter.count()
            counter.not_before = max(counter.not_before, now + policy.delay_for(failures))
            if ban_after and failures >= ban_after and counter.banned_until <= now:
                counter.banned_until = now + ban_seconds
                started = True
        decision = self._decide(ipk, acct, now)
        if started and decision.verdict is Verdict.BANNED:
            decision = Decision(
                decision.verdict, decision.retry_after, decision.until, decision.reason, True
            )
        return decision

    def succeeded(self, ip: str, account: str) -> None:
        """Forget the failures of this (IP, account) pair, in the IP's and the account's
        counters too; failures of the IP against other accounts, and of other IPs against
        the account, stay. Running bans are not lifted."""
        now = self.clock.seconds()
        ipk, acct = self._ip(ip), account_key(account)
        pair = self._pairs.pop((ipk, acct), now)
        if pair is None:
            return
        forgiven = pair.failures
        for counter in (self._ips.get(ipk, now), self._accounts.get(acct, now)):
            if counter is not None:
                counter.failures = max(0.0, counter.failures - forgiven)
                if counter.count() == 0:
                    counter.not_before = min(counter.not_before, now)

    def delay_seconds(self, ip: str, account: str) -> float:
        """Seconds until the wait after the latest failure of ``ip`` or ``account`` ends
        (0 when none runs); never more than ``max_delay``. Bans are not included."""
        now = self.clock.seconds()
        ends = [
            counter.not_before
            for counter in (
                self._ips.get(self._ip(ip), now),
                self._accounts.get(account_key(account), now),
            )
            if counter is not None
        ]
        return max([0.0, *(end - now for end in ends)])

    def delay(self, ip: str, account: str) -> Deferred[None]:
        """A Deferred firing (via ``clock.callLater``) after :meth:`delay_seconds`: send the
        failure reply when it fires. Cancelling it cancels the timer (connection lost)."""
        return deferLater(self.clock, self.delay_seconds(ip, account), lambda: None)

    # --- inspection ---------------------------------------------------------------------------

    def failures(self, ip: str, account: str) -> Failures:
        """The current failure counts of ``ip``, ``account`` and the pair (for logs, audits)."""
        now = self.clock.seconds()
        ipk, acct = self._ip(ip), account_key(account)
        counters = (
            self._ips.get(ipk, now),
            self._accounts.get(acct, now),
            self._pairs.get((ipk, acct), now),
        )
        ip_count, account_count, pair_count = (c.count() if c else 0 for c in counters)
        return Failures(ip_count, account_count, pair_count)

    def tracked(self) -> dict[str, int]:
        """How many keys each table holds: ``{"ip": .., "account": .., "pair": ..}``."""
        return {"ip": len(self._ips), "account": len(self._accounts), "pair": len(self._pairs)}

    # --- internals -------------------------------------------------------------------------------

    def _ip(self, ip: str) -> str:
        return ip_key(ip, self.policy.ipv6_prefix)

    def _decide(self, ipk: str, acct: str, now: float) -> Decision:
        """The decision for the IP key ``ipk`` and account key ``acct`` at ``now``."""
        counters = (
            (REASON_IP, self._ips.get(ipk, now)),
            (REASON_ACCOUNT, self._accounts.get(acct, now)),
        )
        for reason, counter in counters:
            if counter is not None and counter.banned_until > now:
                until = counter.banned_until
                return Decision(Verdict.BANNED, until - now, until, reason)
        waits = [
            (counter.not_before, reason)
            for reason, counter in counters
            if counter is not None and counter.not_before > now
        ]
        if waits:
            until, reason = max(waits, key=lambda wait: wait[0])
            return Decision(Verdict.WAIT, until - now, until, reason)
        return Decision(Verdict.ALLOW, 0.0, now)
