"""The spool's scheduler: picks due messages, hands them to the courier domain by domain,
records the outcome per recipient, retries with exponential back-off and jitter, and sends
DSNs when it gives up (or, optionally, when a message is delayed).

Time comes from the injected ``clock`` (``IReactorTime``), randomness from ``rng``, so the
whole retry curve is tested with ``task.Clock``. The scheduler wakes at the earliest due
time and also every ``poll_interval`` seconds (so entries changed by ``mailserver queue``
in another process are seen).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    DeferredSemaphore,
    inlineCallbacks,
    maybeDeferred,
)
from twisted.logger import Logger

from mailserver.interfaces import IDeliveryTarget
from mailserver.message.address import parse_address
from mailserver.observe.events import MAILLOG
from mailserver.spool.dsn import Notice, build_dsn, wants_dsn
from mailserver.spool.queue import LmdbSpool
from mailserver.spool.remote import Outcome
from mailserver.types import Envelope, QueuedRecipient, QueueEntry, RecipientState

__all__ = ["RetryPolicy", "Scheduler", "backoff"]

log = Logger(namespace="mailserver.spool")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and when to give up (Postfix-like defaults)."""

    first: float = 300.0  # the first retry after 5 minutes
    factor: float = 2.0
    maximum: float = 4 * 3600.0  # never wait more than 4 hours between attempts
    jitter: float = 0.2  # +-20%, so a burst of deferrals does not retry in lock-step
    give_up: float = 5 * 86400.0  # RFC 5321 §4.5.4.1: "at least 4-5 days"
    delay_warning: float = 0.0  # send a "delayed" DSN once after this long; 0 = never


def backoff(attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds until the next attempt after ``attempts`` failed ones (>= 1)."""
    base = min(policy.first * policy.factor ** max(attempts - 1, 0), policy.maximum)
    return float(base * (1.0 + rng.uniform(-policy.jitter, policy.jitter)))


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Scheduler(Service):
    """Runs deliveries from ``spool`` through ``courier`` (``deliver(entry, domain,
    recipients, open_message) -> Deferred[dict[address, Outcome]]``); bounces go into
    ``bounces`` (a delivery target that routes them local or remote)."""

    def __init__(
        self,
        spool: LmdbSpool,
        courier: Any,
        clock: Any,
        *,
        hostname: str,
        bounces: IDeliveryTarget | None = None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        max_in_flight: int = 50,
        max_per_domain: int = 10,
        poll_interval: float = 30.0,
    ) -> None:
        self.spool = spool
        self.courier = courier
        self.clock = clock
        self.hostname = hostname
        self.bounces = bounces if bounces is not None else spool
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()
        self.max_in_flight = max_in_flight
        self.max_per_domain = max_per_domain
        self.poll_interval = poll_interval
        self.in_flight: dict[str, Deferred[Any]] = {}
        self._domains: dict[str, DeferredSemaphore] = {}
        self._timer: Any = None

    # -- life cycle ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.poke()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self._cancel()
        waiting = DeferredList(list(self.in_flight.values()), consumeErrors=True)
        close = getattr(self.courier, "close", None)
        if close is not None:
            waiting.addBoth(lambda _: close())
        return waiting

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def poke(self) -> None:
        """Look for due work now (after an enqueue, a ``queue flush``, a finished attempt)."""
        if not self.running:
            return
        self._cancel()
        self._timer = self.clock.callLater(0, self._wake)

    def _wake(self) -> None:
        self._timer = None
        if not self.running:
            return
        now = self.clock.seconds()
        room = self.max_in_flight - len(self.in_flight)
        if room > 0:
            for queue_id in self.spool.due(now, limit=room + len(self.in_flight)):
                if queue_id in self.in_flight or len(self.in_flight) >= self.max_in_flight:
                    continue
                self._start(queue_id)
        next_due = self.spool.next_due()
        delay = self.poll_interval if next_due is None else max(next_due - now, 0.0)
        if next_due is not None and next_due <= now:
            delay = self.poll_interval  # all due work is running; wait for it or the poll
        self._timer = self.clock.callLater(min(delay, self.poll_interval), self._wake)

    def _start(self, queue_id: str) -> None:
        d = maybeDeferred(self.attempt, queue_id)

        def done(result: object) -> None:
            del self.in_flight[queue_id]
            if self.running:
                self.poke()

        d.addErrback(lambda f: log.failure("delivery of {queue_id} failed", f, queue_id=queue_id))
        d.addBoth(done)
        self.in_flight[queue_id] = d

    # -- one attempt ---------------------------------------------------------------------

    @inlineCallbacks
    def attempt(self, queue_id: str) -> Any:
        """Try every pending recipient of ``queue_id`` once; record and bounce."""
        entry = self.spool.get(queue_id)
        if entry is None or entry.held or not entry.pending:
            return None
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for recipient in entry.pending:
            by_domain.setdefault(_domain(recipient.address), []).append(recipient)
        started = self.clock.seconds()
        attempts = [
            self._per_domain(domain).run(self._deliver, entry, domain, recipients)
            for domain, recipients in by_domain.items()
        ]
        results = yield DeferredList(attempts, consumeErrors=True)
        outcomes: dict[str, Outcome] = {}
        for (ok, value), (domain, recipients) in zip(results, by_domain.items()):
            if ok:
                outcomes.update(value)
            else:
                log.failure("courier failed for {domain}", value, domain=domain)
                for r in recipients:
                    outcomes[r.address] = Outcome(
                        RecipientState.DEFERRED, "local error in delivery", "4.3.0"
                    )
        yield self._record(entry, outcomes, self.clock.seconds() - started)
        return outcomes

    def _per_domain(self, domain: str) -> DeferredSemaphore:
        if domain not in self._domains:
            self._domains[domain] = DeferredSemaphore(self.max_per_domain)
        return self._domains[domain]

    def _deliver(self, entry: QueueEntry, domain: str, recipients: list[QueuedRecipient]) -> Any:
        return self.courier.deliver(
            entry, domain, recipients, lambda: self.spool.open_message(entry.queue_id)
        )

    @inlineCallbacks
    def _record(self, entry: QueueEntry, outcomes: dict[str, Outcome], elapsed: float = 0.0) -> Any:
        now = self.clock.seconds()
        age = now - entry.created
        give_up = age >= self.policy.give_up
        warn = (
            self.policy.delay_warning > 0
            and age >= self.policy.delay_warning
            and not entry.warned
        )
        changed: dict[str, QueuedRecipient] = {}
        notices: list[Notice] = []
        for recipient in entry.pending:
            outcome = outcomes.get(recipient.address)
            if outcome is None:
                continue
            state, reply, status = outcome.state, outcome.reply, outcome.status
            if state is RecipientState.DEFERRED and give_up:
                state = RecipientState.FAILED
                days = self.policy.give_up / 86400
                reply = f"gave up after {days:g} days; last reply: {outcome.reply}"
                status = "4.4.7" if status.startswith("4") else status
            new = replace(
                recipient, state=state, last_reply=reply, attempts=recipient.attempts + 1,
                updated=now,
            )
            changed[recipient.address] = new
            log.info(  # the outbound mail log line (mailserver.observe.events: maillog)
                "{queue_id}: to=<{rcpt}>, from=<{sender}>, relay={relay}, delay={delay:.1f}, "
                "size={size}, dsn={status}, status={state} ({reply})",
                queue_id=entry.queue_id, rcpt=recipient.address, state=state.value, reply=reply,
                mail_event=MAILLOG, direction="out", sender=entry.sender, size=entry.size,
                relay=outcome.remote_mta or "none", delay=age, status=status, elapsed=elapsed,
                attempts=new.attempts, result=state.value,
            )
            action = {
                RecipientState.FAILED: "failed",
                RecipientState.DEFERRED: "delayed",
                # RFC 3461 §5.2.2: a next hop without DSN support means we report success
                RecipientState.DELIVERED: None if outcome.dsn_passed else "relayed",
            }.get(state)
            if action == "delayed" and not warn:
                continue
            if action is not None and wants_dsn(entry, new, action):
                notices.append(Notice(new, action, status, outcome.remote_mta, reply))
        if notices:
            yield self._bounce(entry, notices, now)
        next_attempt = now + backoff(entry.attempts + 1, self.policy, self.rng)
        yield self.spool.update(entry.queue_id, changed, next_attempt, warned=warn or None)

    @inlineCallbacks
    def _bounce(self, entry: QueueEntry, notices: list[Notice], now: float) -> Any:
        """Queue a DSN to the envelope sender, from the null reverse-path."""
        opened = yield self.spool.in_thread(self.spool.open_message, entry.queue_id)
        try:
            message = yield self.spool.in_thread(build_dsn, self.hostname, entry, notices,
                                                 opened, now)
        finally:
            opened.close()
        delivery = self.bounces.start(Envelope(sender=None, received_at=now))
        try:
            yield delivery.add_recipient(parse_address(entry.sender))
            yield delivery.body(BytesIO(message))
            yield delivery.commit()
        except Exception:
            yield maybeDeferred(delivery.abort)
            raise
        log.info("{queue_id}: DSN sent to <{sender}>", queue_id=entry.queue_id,
                 sender=entry.sender)
