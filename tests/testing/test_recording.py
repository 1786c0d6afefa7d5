"""RecordingTarget: a delivery target that captures each committed message instead of
delivering it, all-or-nothing like every IDeliveryTarget."""

from __future__ import annotations

import io

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from mailserver.errors import MailError, NoSuchUser, RelayDenied
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.testing import CapturedMessage, DeliveryTimeout, RecordingTarget
from mailserver.types import Address, Envelope

BODY = b"From: bob@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


BOB = Address("bob", "example.net")


def envelope(sender: Address | None = BOB) -> Envelope:
    return Envelope(sender=sender)


def deliver(target: RecordingTarget, *recipients: Address) -> None:
    delivery = target.start(envelope())
    for recipient in recipients:
        delivery.add_recipient(recipient, {"NOTIFY": "NEVER"})
    delivery.body(io.BytesIO(BODY))
    delivery.commit()


def test_provides_interfaces() -> None:
    """The target and its transactions provide IDeliveryTarget and IDelivery."""
    target = RecordingTarget()
    assert verifyObject(IDeliveryTarget, target)
    assert verifyObject(IDelivery, target.start(envelope()))


def test_commit_records_envelope_recipients_and_bytes() -> None:
    """A committed message is recorded with its envelope, recipients in RCPT order, their
    parameters and the exact bytes."""
    target = RecordingTarget()
    deliver(target, Address("carol", "example.org"), Address("dave", "example.com"))
    [captured] = target.messages
    assert captured.sender == "bob@example.net"
    assert captured.to == ["carol@example.org", "dave@example.com"]
    assert captured.data == BODY
    assert captured.params == ({"NOTIFY": "NEVER"}, {"NOTIFY": "NEVER"})


def test_null_sender_is_empty_text() -> None:
    """The null reverse-path <> reads as ''."""
    target = RecordingTarget()
    delivery = target.start(Envelope(sender=None))
    delivery.add_recipient(Address("carol", "example.org"))
    delivery.body(io.BytesIO(BODY))
    delivery.commit()
    assert target.messages[0].sender == ""


def test_nothing_before_commit_and_nothing_after_abort() -> None:
    """A body alone records nothing; an aborted transaction leaves no trace and cannot be
    committed afterwards."""
    target = RecordingTarget()
    delivery = target.start(envelope())
    delivery.add_recipient(Address("carol", "example.org"))
    delivery.body(io.BytesIO(BODY))
    assert target.messages == []
    delivery.abort()
    committing = delivery.commit()
    failure = committing.result
    committing.addErrback(lambda _: None)
    assert failure.check(MailError)
    assert target.messages == []


def test_body_without_recipient_is_refused() -> None:
    """A body with no accepted recipient fails with MailError."""
    delivery = RecordingTarget().start(envelope())
    body = delivery.body(io.BytesIO(BODY))
    failure = body.result
    body.addErrback(lambda _: None)
    assert failure.check(MailError)


def test_accept_refuses_with_the_given_error() -> None:
    """Recipients ``accept`` rejects are refused with ``refusal``'s error (a generic
    MailError without one); the others still get the message."""
    only_local = RecordingTarget(
        accept=lambda a: a.domain == "example.org",
        refusal=lambda a: RelayDenied(detail=str(a)),
    )
    delivery = only_local.start(envelope())
    refused = delivery.add_recipient(Address("dave", "example.com"))
    failure = refused.result
    refused.addErrback(lambda _: None)
    assert failure.check(RelayDenied)
    delivery.add_recipient(Address("carol", "example.org"))
    delivery.body(io.BytesIO(BODY))
    delivery.commit()
    assert only_local.messages[0].to == ["carol@example.org"]

    generic = RecordingTarget(accept=lambda a: False)
    refused = generic.start(envelope()).add_recipient(Address("carol", "example.org"))
    failure = refused.result
    refused.addErrback(lambda _: None)
    assert failure.check(MailError) and not failure.check(NoSuchUser)


def test_wait_for_fires_in_commit_order() -> None:
    """wait_for(n) fires once n messages were committed (at once if they were already)."""
    target, clock = RecordingTarget(), task.Clock()
    second = target.wait_for(2, reactor=clock)
    first = target.wait_for(1, reactor=clock)
    deliver(target, Address("carol", "example.org"))
    assert first.called and not second.called
    deliver(target, Address("dave", "example.org"))
    assert [m.to for m in second.result] == [["carol@example.org"], ["dave@example.org"]]
    assert isinstance(target.wait_for(1, reactor=clock).result[0], CapturedMessage)
    assert clock.getDelayedCalls() == []


def test_wait_for_times_out() -> None:
    """After ``timeout`` seconds without enough messages the wait fails with
    DeliveryTimeout saying how many arrived."""
    target, clock = RecordingTarget(), task.Clock()
    waiting = target.wait_for(1, timeout=5, reactor=clock)
    clock.advance(5)
    failure = waiting.result
    waiting.addErrback(lambda _: None)
    assert failure.check(DeliveryTimeout)
    assert str(failure.value) == "0 outbound message(s) captured after 5s, expected 1"
    deliver(target, Address("carol", "example.org"))  # a late message wakes nobody
    assert len(target.messages) == 1


@pytest.mark.parametrize("count", [0, 1])
def test_wait_for_what_is_there(count: int) -> None:
    """Waiting for no more than what was committed fires at once."""
    target = RecordingTarget()
    deliver(target, Address("carol", "example.org"))
    assert len(target.wait_for(count).result) == 1


def test_commit_error_fails_commits_until_cleared() -> None:
    """While commit_error is set every commit fails with it and nothing is recorded; once
    cleared, commits record again."""
    target = RecordingTarget()
    target.commit_error = MailError("Relay down, try later")
    delivery = target.start(envelope())
    delivery.add_recipient(Address("carol", "example.org"))
    delivery.body(io.BytesIO(BODY))
    committing = delivery.commit()
    failure = committing.result
    committing.addErrback(lambda _: None)
    assert failure.value is target.commit_error and failure.value.temporary
    assert target.messages == []
    target.commit_error = None
    deliver(target, Address("carol", "example.org"))
    assert len(target.messages) == 1

