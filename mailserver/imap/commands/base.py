"""What every command handler returns, and the one mapping from errors to IMAP responses.

A handler takes the :class:`~mailserver.imap.session.Session` and the parsed
:class:`~mailserver.imap.grammar.Command` and returns a :class:`Result` (or a Deferred or
coroutine of one). It never writes: the server appends the mailbox updates it may send and
the tagged line, and writes the whole response at once. A handler refuses with
:func:`no` / :func:`bad`, or lets a :class:`~mailserver.errors.MailError` from the store
propagate; :func:`result_for_error` turns either into the response. A response too big to
build at once goes in :attr:`Result.stream`, still written by the server alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mailserver.errors import (
    AlreadyExists,
    InvalidName,
    MailError,
    NoSuchFolder,
    NoSuchMessage,
    QuotaExceeded,
)

__all__ = ["Refusal", "Result", "bad", "no", "result_for_error"]


@dataclass
class Result:
    """A command's response: untagged lines (complete, CRLF-terminated) and the tagged
    status. ``close`` ends the connection after the response (LOGOUT)."""

    status: str = "OK"
    text: str = "Completed"
    code: bytes | None = None
    untagged: list[bytes] = field(default_factory=list)
    close: bool = False
    #: More untagged responses, produced while they are written (a big FETCH): chunks of
    #: complete responses, each written before the next is asked for, and only while the
    #: transport takes them (:mod:`mailserver.imap.server`). The stream may still change
    #: ``status``, ``text`` and ``code`` before it ends; an exception out of it becomes the
    #: tagged response (:func:`result_for_error`) after the responses already sent.
    stream: AsyncIterator[bytes] | None = None


class Refusal(Exception):
    """Raised by a handler to answer NO or BAD."""

    def __init__(self, status: str, text: str, code: str | bytes | None = None) -> None:
        super().__init__(text)
        self.result = Result(status, text, code.encode("ascii") if isinstance(code, str) else code)


def no(text: str, code: str | bytes | None = None) -> Refusal:
    """``tag NO [code] text``."""
    return Refusal("NO", text, code)


def bad(text: str, code: str | bytes | None = None) -> Refusal:
    """``tag BAD [code] text``."""
    return Refusal("BAD", text, code)


def result_for_error(error: BaseException) -> Result:
    """The response for an exception out of a handler (RFC 5530 codes); the client sees the
    error's public text only, never a traceback or the logged detail. The caller logs an
    unexpected exception (``SERVERBUG``)."""
    if isinstance(error, Refusal):
        return error.result
    if isinstance(error, NoSuchFolder):
        return Result("NO", "No such mailbox", b"NONEXISTENT")
    if isinstance(error, AlreadyExists):
        return Result("NO", "Mailbox already exists", b"ALREADYEXISTS")
    if isinstance(error, InvalidName):
        return Result("NO", error.text, b"CANNOT")
    if isinstance(error, NoSuchMessage):
        return Result("NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED")
    if isinstance(error, QuotaExceeded):
        return Result("NO", error.text, b"OVERQUOTA")
    if isinstance(error, MailError):
        if error.temporary:
            return Result("NO", error.text, b"UNAVAILABLE")
        return Result("NO", error.text, b"CANNOT")
    return Result("NO", "Internal server error", b"SERVERBUG")
