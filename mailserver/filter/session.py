"""Abstaining: the base of every check's session, with every phase answering ACCEPT.

Most checks act in one or two SMTP phases (clamd only on the message, greylisting only at
RCPT); a session class overrides those phases and inherits "nothing to say" for the rest,
so what a check does is what its session class spells out.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from mailserver.interfaces import ICheckSession
from mailserver.types import ACCEPT, Envelope, Verdict

__all__ = ["Abstaining"]


@implementer(ICheckSession)
class Abstaining:
    """An ICheckSession with no opinion in any phase."""

    def connect(self) -> Any:
        return ACCEPT

    def helo(self, name: str) -> Any:
        return ACCEPT

    def sender(self, envelope: Envelope) -> Any:
        return ACCEPT

    def recipient(self, envelope: Envelope, address: Any) -> Any:
        return ACCEPT

    def body(self, envelope: Envelope, recipients: Any, message: bytes) -> Verdict | Any:
        return ACCEPT
