"""RFC 3464 DSNs: Python's email parser reads them as multipart/report with the fields
RFC 3464 requires; RET, ENVID, ORCPT and NOTIFY are honoured; no bounce for a bounce."""

from __future__ import annotations

import email
import email.policy
from io import BytesIO

import pytest

from mailserver.spool.dsn import MAX_RETURNED, Notice, build_dsn, wants_dsn
from mailserver.types import QueuedRecipient, QueueEntry, RecipientState

ORIGINAL = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: hello\r\n\r\nthe body\r\n"


def entry(sender="a@example.org", params=None, recipients=None) -> QueueEntry:
    return QueueEntry(
        queue_id="0190ABCDEF012345678", sender=sender,
        recipients=tuple(recipients or [QueuedRecipient("x@remote.test")]),
        size=len(ORIGINAL), created=1_700_000_000.0, next_attempt=0.0, params=params or {},
    )


def failed(address="x@remote.test", params=None) -> Notice:
    r = QueuedRecipient(address, params or {}, RecipientState.FAILED, "550 5.1.1 no such user",
                        1, 1_700_000_100.0)
    return Notice(r, "failed", "5.1.1", "mx.remote.test", "550 5.1.1 no such user")


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_failure_dsn_is_a_multipart_report():
    e = entry(params={"ENVID": "env-42"})
    notice = failed(params={"ORCPT": "rfc822;X@remote.test", "NOTIFY": "FAILURE"})
    message = parse(build_dsn("mx.example.org", e, [notice], BytesIO(ORIGINAL), 1_700_000_200.0))
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["To"].addresses[0].addr_spec == "a@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    text, status, returned = message.get_payload()
    assert text.get_content_type() == "text/plain"
    assert "550 5.1.1 no such user" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.org"
    assert per_message["Original-Envelope-Id"] == "env-42"
    assert per_recipient["Final-Recipient"] == "rfc822; x@remote.test"
    assert per_recipient["Original-Recipient"] == "rfc822;X@remote.test"
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.test"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_payload()[0]["Subject"] == "hello"


def test_ret_hdrs_and_big_messages_return_headers_only():
    dsn = build_dsn("mx.example.org", entry(params={"RET": "HDRS"}), [failed()],
                    BytesIO(ORIGINAL), 0)
    returned = parse(dsn).get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"the body" not in dsn
    big = ORIGINAL + b"x" * (MAX_RETURNED + 10)
    dsn = build_dsn("mx.example.org", entry(), [failed()], BytesIO(big), 0)
    assert parse(dsn).get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert len(dsn) < 10_000


def test_utf8_recipient_uses_global_delivery_status():
    notice = failed("jos\u00e9@remote.test")
    dsn = build_dsn("mx.example.org", entry(), [notice], BytesIO(ORIGINAL), 0)
    status = parse(dsn).get_payload()[1]
    assert status.get_content_type() == "message/global-delivery-status"
    assert "utf-8; jos\u00e9@remote.test" in dsn.decode()


@pytest.mark.parametrize(
    ("sender", "notify", "action", "expected"),
    [
        ("a@example.org", None, "failed", True),
        ("a@example.org", None, "delayed", True),
        ("a@example.org", None, "delivered", False),
        ("a@example.org", "NEVER", "failed", False),
        ("a@example.org", "SUCCESS", "failed", False),
        ("a@example.org", "SUCCESS,DELAY", "delivered", True),
        ("a@example.org", "FAILURE", "delayed", False),
        ("", None, "failed", False),  # no bounce for a bounce
        ("", "FAILURE", "failed", False),
    ],
)
def test_wants_dsn(sender, notify, action, expected):
    recipient = QueuedRecipient("x@remote.test", {"NOTIFY": notify} if notify else {})
    assert wants_dsn(entry(sender=sender), recipient, action) is expected
