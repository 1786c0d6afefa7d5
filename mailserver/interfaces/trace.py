"""The message trace log's read side: "where is my mail" for the admin API.

A provider keeps bounded, durable records of what happened to messages (the SMTP session
that accepted or refused them, the filter's verdict, where they were stored, each outbound
delivery attempt, the DSNs sent) and answers one query by Message-ID, queue id or SMTP
session id with every record it can link to it. The web API reads it through this
interface only (``ApiContext.trace``); the implementation is :mod:`mailserver.trace`.
"""

from __future__ import annotations

from typing import Any

from zope.interface import Interface

__all__ = ["ITraceLog"]


class ITraceLog(Interface):
    """Bounded message history, looked up through indexes (never a scan of the log)."""

    def find(message_id: str = "", queue_id: str = "", limit: int = 500) -> dict[str, Any]:
        """The records linked to one message: exactly one of ``message_id`` (with or without
        angle brackets) or ``queue_id`` (a spool queue id, the id of an SMTP 250 reply, or an
        SMTP session id) is given.

        Returns a dict ``{"records": [...], "complete": bool}``: records are JSON-ready dicts
        in time order, each with at least ``kind`` (``smtp``, ``verdict``, ``stored``,
        ``queued`` or ``delivery``) and ``time`` (seconds since the epoch). Records
        are linked transitively through the Message-IDs, queue ids and SMTP transactions
        they name (so a queue id finds the session that accepted the message and its DSNs),
        up to ``limit`` records; ``complete`` is false when the limit cut the answer short.
        Records not yet written durably are included. An unknown key gives no records.
        Blocking but fast (index reads): callers may run it on the reactor or in a thread.
        """

    def stats() -> dict[str, Any]:
        """A dict ``{"records": int, "oldest": float | None, "max_age": float,
        "max_records": int, "pending": int, "dropped": int}``: what the log holds and its
        bounds (``dropped``: records lost because writing fell behind)."""
