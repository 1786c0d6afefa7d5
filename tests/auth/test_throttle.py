"""The brute-force throttle on a task.Clock: growing delays, bans that expire, decay, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from mailserver.auth.throttle import (
    REASON_ACCOUNT,
    REASON_IP,
    Failures,
    Throttle,
    ThrottlePolicy,
    Verdict,
    account_key,
    ip_key,
    policy_from_config,
)
from mailserver.config import Config

IP = "203.0.113.7"
ALICE = "alice@example.org"


def make(**policy: float) -> tuple[Clock, Throttle]:
    clock = Clock()
    clock.advance(1_000_000)
    return clock, Throttle(clock, ThrottlePolicy(**policy))  # type: ignore[arg-type]


def test_defaults_match_the_config_section():
    """The [security] defaults build exactly the default policy (one source of truth)."""
    assert policy_from_config(Config().security) == ThrottlePolicy()


def test_a_burst_from_one_ip_gets_growing_delays_then_a_ban_that_expires():
    """Wrong passwords from one IP wait 1, 2, 4, 8, 16 then 30 s; the 10th failure bans the IP
    for 15 minutes, for every account; afterwards the IP may try again."""
    clock, throttle = make()
    waits = []
    for _ in range(9):
        assert throttle.check(IP, ALICE).allowed
        decision = throttle.failed(IP, ALICE)
        assert decision.verdict is Verdict.WAIT and decision.reason == REASON_IP
        assert throttle.delay_seconds(IP, ALICE) == pytest.approx(decision.retry_after)
        waits.append(decision.retry_after)
        clock.advance(decision.retry_after)
    assert waits == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30, 30])

    banned = throttle.failed(IP, ALICE)
    assert (banned.verdict, banned.reason, banned.new_ban) == (Verdict.BANNED, REASON_IP, True)
    assert banned.retry_after == pytest.approx(900)
    assert banned.until == pytest.approx(clock.seconds() + 900)
    assert throttle.check(IP, "bob@example.org").verdict is Verdict.BANNED
    again = throttle.failed(IP, ALICE)
    assert again.verdict is Verdict.BANNED and not again.new_ban
    assert again.until == banned.until  # a failure during the ban does not extend it

    clock.advance(899)
    assert throttle.check(IP, ALICE).verdict is Verdict.BANNED
    clock.advance(1)
    assert throttle.check(IP, ALICE).allowed


def test_a_repeat_offender_is_banned_again_sooner():
    """Counters outlive the ban (they only decay), so after a ban a few failures ban again."""
    clock, throttle = make(base_delay=0.0)
    for _ in range(10):
        throttle.failed(IP, ALICE)
    clock.advance(900)  # 3 of the 10 failures are forgotten meanwhile
    assert throttle.check(IP, ALICE).allowed
    assert throttle.failures(IP, ALICE).ip == 7
    decisions = [throttle.failed(IP, ALICE) for _ in range(3)]
    assert [d.new_ban for d in decisions] == [False, False, True]


def test_parallel_attempts_during_a_delay_are_refused():
    """While the delay after a failure runs, check says WAIT for that IP (any account), so
    parallel connections do not get around it; other IPs and accounts are unaffected."""
    clock, throttle = make()
    throttle.failed(IP, ALICE)
    throttle.failed(IP, ALICE)
    decision = throttle.check(IP, "bob@example.org")
    assert decision.verdict is Verdict.WAIT and decision.retry_after == pytest.approx(2)
    assert throttle.check("198.51.100.1", "carol@example.org").allowed
    clock.advance(2)
    assert throttle.check(IP, ALICE).allowed


def test_many_ips_against_one_account_ban_the_account_for_everyone():
    """20 failures from 20 IPs ban the account: every IP is refused, also one with no failures
    (even the owner's right password is not checked until the ban expires); other accounts
    and the attackers' IPs against other accounts are not affected by the account ban."""
    clock, throttle = make()
    for n in range(19):
        decision = throttle.failed(f"198.51.100.{n}", ALICE)
        assert decision.verdict is Verdict.WAIT
        assert decision.reason == (REASON_ACCOUNT if n else REASON_IP)  # a tie names the IP
    decision = throttle.failed("198.51.100.19", ALICE)
    assert (decision.verdict, decision.reason, decision.new_ban) == (
        Verdict.BANNED,
        REASON_ACCOUNT,
        True,
    )
    owner = throttle.check("192.0.2.1", ALICE)
    assert owner.verdict is Verdict.BANNED and owner.reason == REASON_ACCOUNT
    assert throttle.check("192.0.2.1", "bob@example.org").allowed
    clock.advance(30)
    assert throttle.check("198.51.100.3", "bob@example.org").allowed
    clock.advance(870)
    assert throttle.check("192.0.2.1", ALICE).allowed


def test_the_account_wait_applies_across_ips():
    """After a failure on an account, another IP trying it during the delay gets WAIT too."""
    _clock, throttle = make()
    throttle.failed("198.51.100.1", ALICE)
    decision = throttle.check("198.51.100.2", "Alice@Example.ORG")
    assert decision.verdict is Verdict.WAIT and decision.reason == REASON_ACCOUNT


def test_unknown_and_known_accounts_are_treated_the_same():
    """The throttle knows no accounts: the same failures give the same decisions whatever the
    name, and names are compared case-insensitively (no enumeration by behaviour)."""
    results = []
    for name in (ALICE, "nobody@example.org"):
        clock, throttle = make()
        run = []
        for _ in range(12):
            run.append(throttle.failed(IP, name))
            clock.advance(1)
        results.append(run)
    assert results[0] == results[1]
    assert account_key("  Alice@Example.ORG ") == ALICE
    assert len(account_key("x" * 10_000)) == 320


def test_success_forgives_only_the_pairs_failures():
    """A good login forgives that IP's failures on that account, not the IP's failures on
    other accounts nor other IPs' failures on that account."""
    _clock, throttle = make(base_delay=0.0)
    for _ in range(3):
        throttle.failed(IP, ALICE)
    for _ in range(2):
        throttle.failed(IP, "bob@example.org")
    for _ in range(4):
        throttle.failed("198.51.100.1", ALICE)
    throttle.succeeded(IP, "ALICE@example.org")
    assert throttle.failures(IP, ALICE) == Failures(ip=2, account=4, pair=0)
    assert throttle.failures(IP, "bob@example.org") == Failures(ip=2, account=2, pair=2)
    assert throttle.failures("198.51.100.1", ALICE) == Failures(ip=4, account=4, pair=4)
    throttle.succeeded("192.0.2.99", ALICE)  # no failures: nothing happens
    assert throttle.failures(IP, ALICE).account == 4


def test_success_does_not_lift_a_ban():
    """succeeded() during a ban (a caller bug) leaves the ban in force."""
    _clock, throttle = make(ip_ban_after=2)
    throttle.failed(IP, ALICE)
    throttle.failed(IP, ALICE)
    throttle.succeeded(IP, ALICE)
    assert throttle.check(IP, ALICE).verdict is Verdict.BANNED


def test_counters_decay_and_idle_entries_are_dropped():
    """Each counter forgets one failure per decay_seconds; an idle counter is dropped."""
    clock, throttle = make(decay_seconds=60.0)
    for _ in range(3):
        throttle.failed(IP, ALICE)
    assert throttle.failures(IP, ALICE) == Failures(3, 3, 3)
    clock.advance(60)
    assert throttle.failures(IP, ALICE) == Failures(2, 2, 2)
    clock.advance(30)
    assert throttle.failures(IP, ALICE) == Failures(2, 2, 2)  # half forgotten still counts
    clock.advance(90)
    assert throttle.failures(IP, ALICE) == Failures(0, 0, 0)
    assert throttle.tracked() == {"ip": 0, "account": 0, "pair": 0}


def test_memory_is_bounded_least_recently_used_first():
    """Each table keeps at most max_keys entries; the least recently used one goes first."""
    _clock, throttle = make(max_keys=50)
    throttle.failed(IP, ALICE)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", f"user{n}@example.org")
        throttle.check(IP, ALICE)  # keeps IP and ALICE recently used
    assert throttle.tracked() == {"ip": 50, "account": 50, "pair": 50}
    assert throttle.failures(IP, ALICE).ip == 1
    assert throttle.failures(IP, ALICE).account == 1
    assert throttle.failures("10.0.0.0", "user0@example.org") == Failures(0, 0, 0)


def test_ipv6_counts_per_64():
    """IPv6 addresses count per /64, IPv4-mapped addresses as IPv4, odd names as themselves."""
    assert ip_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert ip_key("[2001:db8:1:2::99%eth0]") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8::1", ipv6_prefix=48) == "2001:db8::/48"
    assert ip_key("::ffff:192.0.2.5") == "192.0.2.5"
    assert ip_key(" 192.0.2.5") == "192.0.2.5"
    assert ip_key("unix") == "unix"
    _clock, throttle = make(base_delay=0.0)
    throttle.failed("2001:db8:1:2::1", ALICE)
    throttle.failed("2001:db8:1:2::2", "bob@example.org")
    assert throttle.failures("2001:db8:1:2:ffff::", ALICE).ip == 2
    assert throttle.failures("2001:db8:1:3::1", ALICE).ip == 0


def test_delay_fires_after_the_current_delay():
    """delay() fires via the clock once the wait ends; cancelling it cancels the timer."""
    clock, throttle = make()
    for _ in range(3):
        throttle.failed(IP, ALICE)
    fired = []
    throttle.delay(IP, ALICE).addCallback(fired.append)
    clock.advance(3.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == [None]

    throttle.failed(IP, ALICE)
    waiting = throttle.delay(IP, ALICE)
    waiting.addErrback(lambda failure: None)
    waiting.cancel()
    assert clock.getDelayedCalls() == []


def test_delay_without_failures_is_zero():
    """With no failures there is nothing to wait for."""
    clock, throttle = make()
    fired = []
    throttle.delay(IP, ALICE).addCallback(fired.append)
    clock.advance(0)
    assert fired == [None]
    assert throttle.check(IP, ALICE).retry_after == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"factor": 0.5},
        {"base_delay": -1.0},
        {"ip_ban_after": 0},
        {"decay_seconds": 0.0},
        {"max_keys": 0},
        {"ipv6_prefix": 129},
    ],
)
def test_invalid_policy_is_refused(bad):
    """A policy that cannot work raises ValueError naming the knob."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        ThrottlePolicy(**bad)


def test_delay_for_survives_huge_counts():
    """A huge failure count gives max_delay, not an overflow."""
    assert ThrottlePolicy().delay_for(100_000) == 30.0
    assert ThrottlePolicy(factor=1.0).delay_for(100_000) == 1.0


policies = st.builds(
    ThrottlePolicy,
    base_delay=st.floats(0, 100),
    factor=st.floats(1, 10),
    max_delay=st.floats(0, 3600),
    ip_ban_after=st.integers(1, 30),
    account_ban_after=st.integers(1, 30),
)


@settings(max_examples=150, deadline=None)
@given(
    policy=policies,
    others=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=40),
)
def test_delays_never_decrease_with_more_failures_and_never_exceed_the_max(policy, others):
    """At a fixed time, each further failure (of any IP on any account) never shortens the
    wait of a given (IP, account) and the wait never exceeds max_delay."""
    clock = Clock()
    throttle = Throttle(clock, policy)
    previous = 0.0
    for ip, account in [(0, 0), *others]:
        throttle.failed(f"192.0.2.{ip}", f"user{account}@example.org")
        delay = throttle.delay_seconds("192.0.2.0", "user0@example.org")
        assert previous <= delay <= policy.max_delay
        previous = delay
    counts = [policy.delay_for(n) for n in range(60)]
    assert counts == sorted(counts) and max(counts) <= policy.max_delay
