"""Delivery status notifications: RFC 3464 ``multipart/report`` messages (RFC 6522).

:func:`build_dsn` makes the bounce (or delay/success notice) for one queued message: a
human-readable part, a ``message/delivery-status`` part with per-message and per-recipient
fields, and the original message (``message/rfc822``) or only its header
(``text/rfc822-headers``) as RET asks (RFC 3461 §4.3). :func:`wants_dsn` applies NOTIFY
(RFC 3461 §4.1) and the rule that a message with the null sender never gets one
(RFC 5321 §6.1: no bounce for a bounce).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from mailserver.message.headers import rfc5322_date
from mailserver.types import QueuedRecipient, QueueEntry

__all__ = ["Notice", "build_dsn", "wants_dsn"]

#: How much of the original message a full-return DSN carries at most.
MAX_RETURNED = 256 * 1024


@dataclass(frozen=True, slots=True)
class Notice:
    """One recipient's line in a DSN: RFC 3464 action and status, and what happened."""

    recipient: QueuedRecipient
    action: str  # "failed", "delayed", "delivered", "relayed", "expanded"
    status: str  # RFC 3463 code, e.g. "5.1.1"
    remote_mta: str = ""  # the host that gave the reply, if any
    diagnostic: str = ""  # the reply, e.g. "550 5.1.1 no such user"


_NOTIFY_FOR_ACTION = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS",
                      "relayed": "SUCCESS", "expanded": "SUCCESS"}


def wants_dsn(entry: QueueEntry, recipient: QueuedRecipient, action: str) -> bool:
    """Whether ``recipient`` of ``entry`` should be reported with ``action``.

    Null sender: never. NOTIFY=NEVER: never. Without NOTIFY, failures and delays are
    reported (RFC 3461 §4.1: the default is FAILURE, DELAY at the server's option) and
    successes are not.
    """
    if not entry.sender:
        return False
    notify = recipient.params.get("NOTIFY")
    if notify is None:
        return action in ("failed", "delayed")
    wanted = set(notify.upper().split(","))
    return "NEVER" not in wanted and _NOTIFY_FOR_ACTION[action] in wanted


def _subject(notices: Sequence[Notice]) -> str:
    actions = {n.action for n in notices}
    if actions == {"failed"}:
        return "Undelivered Mail Returned to Sender"
    if actions == {"delayed"}:
        return "Delayed Mail (still being retried)"
    if actions <= {"delivered", "relayed", "expanded"}:
        return "Successful Mail Delivery Report"
    return "Mail Delivery Status Report"


def _human(hostname: str, notices: Sequence[Notice]) -> str:
    lines = [f"This is the mail system at host {hostname}.", ""]
    failed = [n for n in notices if n.action == "failed"]
    delayed = [n for n in notices if n.action == "delayed"]
    done = [n for n in notices if n.action in ("delivered", "relayed", "expanded")]
    if failed:
        lines += ["Your message could not be delivered to one or more recipients.",
                  "It is attached below. The errors were:", ""]
        lines += [f"<{n.recipient.address}>: {n.diagnostic or n.status}" for n in failed]
        lines.append("")
    if delayed:
        lines += ["Your message could not be delivered yet to these recipients;",
                  "the mail system will keep trying:", ""]
        lines += [f"<{n.recipient.address}>: {n.diagnostic or n.status}" for n in delayed]
        lines.append("")
    if done:
        lines += ["Your message was delivered to these recipients:", ""]
        lines += [f"<{n.recipient.address}>: {n.action}" for n in done]
        lines.append("")
    return "\r\n".join(lines) + "\r\n"


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"


def _status_part(hostname: str, entry: QueueEntry, notices: Sequence[Notice], now: float) -> str:
    fields = [f"Reporting-MTA: dns; {hostname}"]
    if entry.params.get("ENVID"):
        fields.append(f"Original-Envelope-Id: {entry.params['ENVID']}")
    fields.append(f"Arrival-Date: {rfc5322_date(entry.created)}")
    blocks = ["\r\n".join(fields)]
    for notice in notices:
        r = notice.recipient
        lines = []
        orcpt = r.params.get("ORCPT")
        if orcpt:
            lines.append(f"Original-Recipient: {orcpt}")
        lines.append(f"Final-Recipient: {_address_type(r.address)}; {r.address}")
        lines.append(f"Action: {notice.action}")
        lines.append(f"Status: {notice.status}")
        if notice.remote_mta:
            lines.append(f"Remote-MTA: dns; {notice.remote_mta}")
        if notice.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {' '.join(notice.diagnostic.split())}")
        lines.append(f"Last-Attempt-Date: {rfc5322_date(r.updated or now)}")
        blocks.append("\r\n".join(lines))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _original(message: BinaryIO, headers_only: bool) -> tuple[str, bytes]:
    data = message.read(MAX_RETURNED + 1)
    if headers_only or len(data) > MAX_RETURNED:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            end = data.find(b"\n\n")
        head = data if end < 0 else data[: end + 2]
        return "text/rfc822-headers", head
    return "message/rfc822", data


def build_dsn(
    hostname: str,
    entry: QueueEntry,
    notices: Sequence[Notice],
    message: BinaryIO,
    now: float,
) -> bytes:
    """The DSN message for ``notices`` about ``entry`` (sent from ``MAILER-DAEMON@hostname``
    with the null reverse-path by the caller). ``message`` is the original, read up to
    :data:`MAX_RETURNED` bytes."""
    boundary = f"{secrets.token_hex(8)}/{hostname}"
    headers_only = entry.params.get("RET", "").upper() == "HDRS" or any(
        n.action != "failed" for n in notices
    )
    content_type, original = _original(message, headers_only)
    utf8 = not (entry.sender.isascii() and all(n.recipient.address.isascii() for n in notices))
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.sender}>",
        f"Subject: {_subject(notices)}",
        f"Date: {rfc5322_date(now)}",
        f"Message-ID: <{entry.queue_id}.{secrets.token_hex(4)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        _human(hostname, notices),
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: {status_type}",
        "",
        _status_part(hostname, entry, notices, now),
        f"--{boundary}",
        "Content-Description: Undelivered message" if not headers_only
        else "Content-Description: Message headers",
        f"Content-Type: {content_type}",
        "",
        "",
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    return "\r\n".join(head).encode("utf-8") + original.rstrip(b"\r\n") + b"\r\n" + tail
