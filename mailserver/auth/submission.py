"""The submission avatar (RFC 6409): what an authenticated user may send.

- MAIL FROM must be an address the user owns: their own, a subaddress of it, or an alias
  that resolves to them; anything else gets ``553 5.7.1`` (RFC 6409 §6.1 lets the MSA
  enforce this). The null reverse-path is allowed (clients send MDNs with it).
- Every From header address must be owned in the same way (``553 5.7.1`` at end of data).
- A message without ``Date`` or ``Message-ID`` gets them (RFC 6409 §8.2, §8.3).
- Recipients are routed by the wrapped target (local store or spool, see spool/router.py).
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import replace
from typing import Any, BinaryIO

from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IDeliveryTarget, IUserDirectory
from mailserver.message.envelope import parse_address_list
from mailserver.message.headers import (
    get_header,
    get_headers,
    header_length,
    parse_headers,
    rfc5322_date,
)
from mailserver.rewrite import RewritingDelivery
from mailserver.types import Envelope

__all__ = ["SenderNotOwned", "SubmissionTarget"]

#: Read at most this much looking for the end of the header.
MAX_HEADER = 1 << 20


class SenderNotOwned(MailError):
    code = 553
    enhanced = "5.7.1"
    text = "Sender address not owned by you"


@implementer(IDeliveryTarget)
class SubmissionTarget:
    """The avatar of ``user`` (a canonical address) on the submission port."""

    def __init__(
        self,
        user: str,
        directory: IUserDirectory,
        target: IDeliveryTarget,
        hostname: str,
        reactor: Any,
    ) -> None:
        self.user = user
        self.directory = directory
        self.target = target
        self.hostname = hostname
        self.reactor = reactor

    def owns(self, address: str) -> bool:
        """Whether the user may send as ``address``."""
        if address.lower() == self.user.lower():
            return True
        try:
            reached = self.directory.resolve(address)
        except MailError:
            return False
        return self.user.lower() in (a.lower() for a in reached)

    def start(self, envelope: Envelope) -> SubmissionDelivery:
        if envelope.sender is not None and not self.owns(str(envelope.sender)):
            raise SenderNotOwned(detail=f"{self.user} as {envelope.sender}")
        envelope = replace(envelope, authenticated_as=self.user)
        return SubmissionDelivery(self, envelope, self.target.start(envelope))


class SubmissionDelivery(RewritingDelivery):
    owner: SubmissionTarget

    def rewrite(self, source: BinaryIO) -> BinaryIO:
        """Blocking: check From, add missing Date/Message-ID; a new seekable source."""
        source.seek(0)
        head = source.read(MAX_HEADER)
        length = header_length(head)
        headers = parse_headers(head[:length])
        for raw in get_headers(headers, "From"):
            for entry in parse_address_list(raw):
                local, domain = entry[2], entry[3]
                if local is None or domain is None:
                    continue  # group markers
                if not self.owner.owns(f"{local}@{domain}"):
                    raise SenderNotOwned(
                        "From: header address not owned by you",
                        detail=f"{self.owner.user} as From {local}@{domain}",
                    )
        added = b""
        if get_header(headers, "Date") is None:
            added += f"Date: {rfc5322_date()}\r\n".encode()
        if get_header(headers, "Message-ID") is None:
            token = secrets.token_hex(12)
            added += f"Message-ID: <{token}@{self.owner.hostname}>\r\n".encode()
        out = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        head_end = _after_trace(head, length)
        out.write(head[:head_end])
        out.write(added)
        out.write(head[head_end:])
        while chunk := source.read(1 << 16):
            out.write(chunk)
        out.seek(0)
        return out  # type: ignore[return-value]


def _after_trace(head: bytes, length: int) -> int:
    """Offset after the leading trace fields (Received/Return-Path), where new header
    fields go so that the trace block stays on top (RFC 5322 §3.6)."""
    position = 0
    while position < length:
        line_end = head.find(b"\n", position, length)
        if line_end < 0:
            return position
        name = head[position:line_end].split(b":", 1)[0].strip().lower()
        if name not in (b"received", b"return-path"):
            return position
        # skip continuation lines of this field
        position = line_end + 1
        while position < length and head[position:position + 1] in (b" ", b"\t"):
            next_end = head.find(b"\n", position, length)
            position = length if next_end < 0 else next_end + 1
    return position
