"""mailserver.filter.ratelimit on a task.Clock: a burst of ``count`` then one per
``window / count``; 421 at connect, 450 at MAIL/RCPT; IPv6 counted per /64; users counted
per user; loopback exempt by default; idle keys forgotten; memory bounded."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from zope.interface.verify import verifyObject

from mailserver.filter.ratelimit import Limit, RateLimitCheck, RateLimiter, client_key
from mailserver.interfaces.filter import ICheck, ICheckSession
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer

RCPT = Address("bob", "example.org")


def envelope(auth: str | None = None) -> Envelope:
    return Envelope(Address("alice", "example.com"), authenticated_as=auth)


def connects(check: RateLimitCheck, address: str, times: int) -> list[Action]:
    return [check.session(Peer(address)).connect().action for _ in range(times)]


def test_provides_the_interfaces():
    """RateLimitCheck is an ICheck and its sessions are ICheckSessions."""
    check = RateLimitCheck(task.Clock())
    assert verifyObject(ICheck, check) and check.honours_allow_list
    assert verifyObject(ICheckSession, check.session(Peer("192.0.2.1")))


def test_connections_over_the_limit_get_421():
    """Three connections per minute: the fourth at once is 421 4.7.0 naming the client."""
    check = RateLimitCheck(task.Clock(), connections=Limit(3, 60), exempt_networks=())
    assert connects(check, "127.0.0.2", 3) == [Action.ACCEPT] * 3
    verdict = check.session(Peer("127.0.0.2")).connect()
    assert verdict.action is Action.TEMPFAIL
    assert (verdict.check, verdict.rule, verdict.code, verdict.enhanced) == (
        "ratelimit", "RATE_CONNECTIONS", 421, "4.7.0"
    )
    assert verdict.text == "Too many connections from [127.0.0.2], try again later"
    assert "next allowed in 20s" in verdict.reason


def test_allowance_refills_at_count_per_window():
    """After the burst, one more connection every window/count seconds; a full window
    later the whole burst again. Refused attempts do not use the allowance."""
    clock = task.Clock()
    check = RateLimitCheck(clock, connections=Limit(3, 60), exempt_networks=())
    connects(check, "127.0.0.2", 3)
    assert connects(check, "127.0.0.2", 5) == [Action.TEMPFAIL] * 5
    clock.advance(19)
    assert connects(check, "127.0.0.2", 1) == [Action.TEMPFAIL]
    clock.advance(1)
    assert connects(check, "127.0.0.2", 2) == [Action.ACCEPT, Action.TEMPFAIL]
    clock.advance(60)
    assert connects(check, "127.0.0.2", 4) == [Action.ACCEPT] * 3 + [Action.TEMPFAIL]


def test_clients_are_counted_apart():
    """One client's limit does not touch another's."""
    check = RateLimitCheck(task.Clock(), connections=Limit(1, 60), exempt_networks=())
    assert connects(check, "192.0.2.1", 2) == [Action.ACCEPT, Action.TEMPFAIL]
    assert connects(check, "192.0.2.2", 1) == [Action.ACCEPT]


def test_ipv6_clients_share_their_64():
    """Two addresses of one /64 share a limit; another /64 has its own."""
    check = RateLimitCheck(task.Clock(), connections=Limit(2, 60))
    assert connects(check, "2001:db8:1:1::1", 1) == [Action.ACCEPT]
    assert connects(check, "[IPv6:2001:db8:1:1::ffff]", 2) == [Action.ACCEPT, Action.TEMPFAIL]
    assert connects(check, "2001:db8:1:2::1", 1) == [Action.ACCEPT]


def test_messages_and_recipients_over_the_limit_get_450():
    """MAIL over the message limit and RCPT over the recipient limit are 450 4.7.1."""
    check = RateLimitCheck(task.Clock(), messages=Limit(2, 60), recipients=Limit(3, 60),
                           exempt_networks=())
    session = check.session(Peer("127.0.0.2"))
    assert session.connect() == ACCEPT
    assert [session.sender(envelope()).action for _ in range(2)] == [Action.ACCEPT] * 2
    refused = session.sender(envelope())
    assert (refused.action, refused.rule, refused.code, refused.enhanced) == (
        Action.TEMPFAIL, "RATE_MESSAGES", 450, "4.7.1"
    )
    assert refused.text == "Too many messages from [127.0.0.2], try again later"
    actions = [session.recipient(envelope(), RCPT).action for _ in range(4)]
    assert actions == [Action.ACCEPT] * 3 + [Action.TEMPFAIL]
    assert session.recipient(envelope(), RCPT).text == (
        "Too many recipients from [127.0.0.2], try again later"
    )


def test_authenticated_users_are_limited_per_user_not_per_address():
    """A submission user has their own message limit, whatever address they come from;
    the address limits do not apply to them."""
    check = RateLimitCheck(task.Clock(), connections=Limit(1, 60), messages=Limit(1, 60),
                           user_messages=Limit(2, 3600), user_recipients=Limit(1, 3600),
                           exempt_networks=())
    first = check.session(Peer("192.0.2.1", listener="submission"))
    second = check.session(Peer("192.0.2.2", listener="submission"))
    assert first.sender(envelope("Alice@Example.com")) == ACCEPT
    assert second.sender(envelope("alice@example.com")) == ACCEPT
    refused = first.sender(envelope("alice@example.com"))
    assert (refused.rule, refused.code, refused.enhanced) == ("RATE_USER_MESSAGES", 450, "4.7.1")
    assert refused.text == "Too many messages from alice@example.com, try again later"
    assert first.sender(envelope("carol@example.com")) == ACCEPT
    assert first.recipient(envelope("carol@example.com"), RCPT) == ACCEPT
    assert first.recipient(envelope("carol@example.com"), RCPT).rule == "RATE_USER_RECIPIENTS"
    authed = check.session(Peer("192.0.2.1", authenticated_as="dave@example.com"))
    assert [authed.connect(), authed.connect()] == [ACCEPT, ACCEPT]


def test_loopback_is_exempt_by_default():
    """Loopback clients (local tools, web mail) skip the address limits by default, and a
    peer that is not an address is not counted."""
    check = RateLimitCheck(task.Clock(), connections=Limit(1, 60), messages=Limit(1, 60))
    assert connects(check, "127.0.0.1", 3) == [Action.ACCEPT] * 3
    assert connects(check, "::1", 3) == [Action.ACCEPT] * 3
    assert connects(check, "unix-socket", 3) == [Action.ACCEPT] * 3
    session = check.session(Peer("127.0.0.1"))
    assert [session.sender(envelope()), session.sender(envelope())] == [ACCEPT, ACCEPT]


def test_idle_keys_are_forgotten():
    """A key whose allowance is full again is dropped at the next use of the limiter."""
    clock = task.Clock()
    limiter = RateLimiter(clock, Limit(2, 60))
    for key in ("a", "b", "c"):
        assert limiter.take(key) == 0
    assert len(limiter) == 3
    clock.advance(30)
    limiter.take("d")
    assert len(limiter) == 1


def test_memory_is_bounded():
    """Past max_entries the least recently seen key is forgotten (and so let through)."""
    clock = task.Clock()
    limiter = RateLimiter(clock, Limit(1, 60), max_entries=2)
    for key in ("a", "b", "c"):
        assert limiter.take(key) == 0
    assert len(limiter) == 2
    assert limiter.take("c") > 0 and limiter.take("a") == 0


def test_bad_limits_are_refused():
    """A limit needs a positive count and window; the IPv6 prefix must be 0-128."""
    for count, window in [(0, 60), (1, 0), (-1, 5)]:
        with pytest.raises(ValueError, match="count >= 1"):
            Limit(count, window)
    with pytest.raises(ValueError, match="ipv6_prefix"):
        RateLimitCheck(task.Clock(), ipv6_prefix=129)


@given(st.integers(1, 50), st.floats(1, 86400), st.integers(0, 3))
def test_burst_then_steady_rate(count, window, periods):
    """For any limit: exactly ``count`` at once, then one per window/count."""
    clock = task.Clock()
    limiter = RateLimiter(clock, Limit(count, window))
    assert [limiter.take("k") == 0 for _ in range(count + 1)] == [True] * count + [False]
    for _ in range(periods):
        clock.advance(window / count)
        assert [limiter.take("k") == 0 for _ in range(2)] == [True, False]


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_ipv6_key_ignores_the_interface_identifier(address, low):
    """Every address of a /64 has the same key."""
    same = ipaddress.IPv6Address((int(address) >> 64 << 64) | low)
    assert client_key(address) == client_key(same)
