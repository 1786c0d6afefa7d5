"""The scheduler on a task.Clock: the exact retry curve, per-recipient outcomes, give-up
after the queue lifetime with a DSN, no bounce for a bounce, delay warnings."""

from __future__ import annotations

import email
import email.policy
import random
from io import BytesIO

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import succeed

from mailserver.db import Database
from mailserver.spool.queue import LmdbSpool
from mailserver.spool.remote import Outcome
from mailserver.spool.scheduler import RetryPolicy, Scheduler, backoff
from mailserver.types import Address, Envelope, RecipientState

MESSAGE = b"From: a@example.org\r\nSubject: out\r\n\r\nbody\r\n"
OK = Outcome(RecipientState.DELIVERED, "250 2.0.0 ok", "2.0.0", "mx.remote.test")
LATER = Outcome(RecipientState.DEFERRED, "451 4.3.0 busy", "4.3.0", "mx.remote.test")
NO = Outcome(RecipientState.FAILED, "550 5.1.1 no such user", "5.1.1", "mx.remote.test")


class ClockReactor:
    """Time from a task.Clock; threads from the real reactor."""

    def __init__(self, clock):
        self.clock = clock

    def seconds(self):
        return self.clock.seconds()

    def callLater(self, *args, **kwargs):
        return self.clock.callLater(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(reactor, name)


class ScriptedCourier:
    """Answers each attempt from a per-recipient script (the last answer repeats)."""

    def __init__(self, script):
        self.script = script
        self.calls = []
        self.messages = []

    def deliver(self, entry, domain, recipients, open_message):
        self.calls.append((entry.queue_id, domain, [r.address for r in recipients]))
        with open_message() as f:
            self.messages.append((entry.sender, f.read()))
        answers = {}
        for r in recipients:
            queue = self.script.get(r.address, [OK])
            answers[r.address] = queue.pop(0) if len(queue) > 1 else queue[0]
        return succeed(answers)


@pytest.fixture
def env(tmp_path):
    clock = task.Clock()
    clock.advance(1_700_000_000)
    fake = ClockReactor(clock)
    db = Database.open(str(tmp_path / "index"), map_size=32 << 20, reactor=reactor, sync=False)
    spool = LmdbSpool(db, str(tmp_path / "spool"), fake, fsync=False)
    yield clock, spool
    pytest_twisted.blockon(db.close())


SENDER = Address("a", "example.org")


async def enqueue(spool, *recipients, sender=SENDER):
    delivery = spool.start(Envelope(sender=sender))
    for r in recipients:
        local, domain = r.split("@")
        await delivery.add_recipient(Address(local, domain))
    await delivery.body(BytesIO(MESSAGE))
    return await delivery.commit()


async def settle(scheduler):
    """Let attempts in flight finish (their index writes run on the real reactor)."""
    for _ in range(500):
        if not scheduler.in_flight:
            return
        await task.deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("attempts did not finish")


def make(spool, clock, script, **policy):
    courier = ScriptedCourier(script)
    policy = RetryPolicy(**{"jitter": 0.0, **policy})
    scheduler = Scheduler(spool, courier, ClockReactor(clock), hostname="mx.example.org",
                          policy=policy, rng=random.Random(0), poll_interval=3600)
    return scheduler, courier


async def run_until(clock, scheduler, when):
    """Advance the clock to ``when`` in steps, letting attempts finish."""
    while clock.seconds() < when:
        step = min(60.0, when - clock.seconds())
        clock.advance(step)
        await settle(scheduler)


def test_backoff_curve_and_jitter():
    policy = RetryPolicy(first=300, factor=2, maximum=3600, jitter=0.0)
    rng = random.Random(0)
    assert [backoff(n, policy, rng) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    jittery = RetryPolicy(first=300, jitter=0.2)
    values = {backoff(1, jittery, random.Random(seed)) for seed in range(50)}
    assert min(values) >= 240 and max(values) <= 360 and len(values) > 40


@pytest_twisted.ensureDeferred
async def test_deferred_recipient_is_retried_on_the_backoff_schedule(env):
    clock, spool = env
    start = clock.seconds()
    queue_id = await enqueue(spool, "x@remote.test")
    scheduler, courier = make(spool, clock, {"x@remote.test": [LATER, LATER, LATER, OK]})
    scheduler.startService()
    clock.advance(0)
    await settle(scheduler)
    times = [clock.seconds() - start]
    while spool.get(queue_id) is not None:
        next_due = spool.next_due()
        await run_until(clock, scheduler, next_due)
        times.append(round(clock.seconds() - start))
        assert len(times) < 10
    assert [c[2] for c in courier.calls] == [["x@remote.test"]] * 4
    assert times == [0, 300, 900, 2100]
    scheduler.stopService()


@pytest_twisted.ensureDeferred
async def test_permanent_failure_bounces_once_and_never_bounces_the_bounce(env):
    clock, spool = env
    queue_id = await enqueue(spool, "ok@remote.test", "gone@remote.test", "later@other.test")
    scheduler, courier = make(
        spool, clock, {"gone@remote.test": [NO], "later@other.test": [LATER],
                       "a@example.org": [NO]},
    )
    await scheduler.attempt(queue_id)
    entry = spool.get(queue_id)
    states = {r.address: r.state for r in entry.recipients}
    assert states == {"ok@remote.test": RecipientState.DELIVERED,
                      "gone@remote.test": RecipientState.FAILED,
                      "later@other.test": RecipientState.DEFERRED}
    assert sorted(c[1] for c in courier.calls) == ["other.test", "remote.test"]
    bounces = [e for e in spool.entries() if e.sender == ""]
    assert len(bounces) == 1 and [r.address for r in bounces[0].recipients] == ["a@example.org"]
    with spool.open_message(bounces[0].queue_id) as f:
        dsn = email.message_from_binary_file(f, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert "gone@remote.test" in dsn.get_payload()[1].as_string()
    assert "later@other.test" not in dsn.get_payload()[1].as_string()
    # the bounce itself fails: it is dropped, and no bounce of the bounce is made
    await scheduler.attempt(bounces[0].queue_id)
    assert spool.get(bounces[0].queue_id) is None
    assert [e.queue_id for e in spool.entries()] == [queue_id]


@pytest_twisted.ensureDeferred
async def test_gives_up_after_the_queue_lifetime_with_a_dsn(env):
    clock, spool = env
    queue_id = await enqueue(spool, "x@remote.test")
    scheduler, courier = make(spool, clock, {"x@remote.test": [LATER]}, first=3600,
                              maximum=6 * 3600, give_up=86400)
    scheduler.startService()
    await run_until(clock, scheduler, clock.seconds() + 86400 + 7 * 3600)
    scheduler.stopService()
    assert spool.get(queue_id) is None and spool.entries() == []  # the DSN went out too
    [dsn] = [data.decode() for sender, data in courier.messages if sender == ""]
    assert "Status: 4.4.7" in dsn and "gave up after 1 days" in dsn
    assert [sender for sender, _ in courier.messages].count("a@example.org") in range(5, 9)


@pytest_twisted.ensureDeferred
async def test_delay_warning_sent_once(env):
    clock, spool = env
    queue_id = await enqueue(spool, "x@remote.test")
    scheduler, _courier = make(spool, clock, {"x@remote.test": [LATER]}, first=600,
                               delay_warning=1000)
    for _ in range(4):
        clock.advance(700)
        await scheduler.attempt(queue_id)
    warnings = [e for e in spool.entries() if e.sender == ""]
    assert len(warnings) == 1 and spool.get(queue_id).warned
    with spool.open_message(warnings[0].queue_id) as f:
        assert b"Action: delayed" in f.read()


@pytest_twisted.ensureDeferred
async def test_success_notice_when_the_next_hop_cannot_take_the_dsn_request(env):
    clock, spool = env
    delivery = spool.start(Envelope(sender=SENDER))
    await delivery.add_recipient(Address("x", "remote.test"), {"NOTIFY": "SUCCESS"})
    await delivery.add_recipient(Address("y", "dsn.test"), {"NOTIFY": "SUCCESS,FAILURE"})
    await delivery.add_recipient(Address("z", "remote.test"))
    await delivery.body(BytesIO(MESSAGE))
    queue_id = await delivery.commit()
    passed = Outcome(RecipientState.DELIVERED, "250 ok", "2.0.0", "mx.dsn.test", dsn_passed=True)
    scheduler, _courier = make(spool, clock, {"y@dsn.test": [passed]})
    await scheduler.attempt(queue_id)
    assert spool.get(queue_id) is None
    [notice] = spool.entries()
    with spool.open_message(notice.queue_id) as f:
        text = f.read().decode()
    # x: relayed to a server without DSN; y: the next hop took NOTIFY; z: no NOTIFY
    assert "Action: relayed" in text and "x@remote.test" in text
    assert "y@dsn.test" not in text and "z@remote.test" not in text
    assert "Successful Mail Delivery Report" in text
