"""Per-account quota: limits from the configuration and the directory, usage from counters
kept in the index (RFC 9208 resources STORAGE and MESSAGE).

Design rules:

1. Usage is two counters in the account's index record (``used_bytes``, ``used_messages``),
   changed by :func:`charge` inside the same LMDB transaction that adds or removes a message
   (:func:`mailserver.store.index.add_message`, :func:`~mailserver.store.index.remove_messages`),
   so they never drift from the messages and are never computed by scanning files. An
   account record written before the counters existed gets them once, from its folder
   records' counters; ``mailserver reindex`` rebuilds them from the message records
   (:func:`rebuild_usage`).
2. A copy of a message in another folder (a label) counts again, as in every IMAP server:
   quota counts what the folders hold, not the bytes on disk.
3. The limit is decided outside the transaction (:class:`QuotaRules`: the account's own
   override, else the configured default; 0 = unlimited) and checked inside it
   (:func:`check`), so two appends racing for the last free bytes cannot both succeed.
4. Refusals are :class:`~mailserver.errors.QuotaExceeded` (552 5.2.2: the message can never
   fit) or :class:`~mailserver.errors.MailboxFull` (452 4.2.2: it does not fit now); IMAP
   answers both ``NO [OVERQUOTA]`` (RFC 9208 §4.3.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailserver.db import Txn
from mailserver.db.schema import from_u32, load, u32
from mailserver.errors import MailboxFull, QuotaExceeded
from mailserver.types import QuotaUsage

__all__ = ["QuotaRules", "charge", "check", "rebuild_usage", "report", "usage"]


@dataclass(frozen=True)
class QuotaRules:
    """Where an account's limits come from.

    ``default_bytes`` / ``default_messages`` apply to every account (0 = unlimited).
    ``override`` gives an account's own byte limit (the directory's ``quota_bytes``): a
    positive number replaces the default, 0 keeps it, a negative one means unlimited.
    """

    default_bytes: int = 0
    default_messages: int = 0
    override: Callable[[str], int | None] | None = None

    def limits(self, address: str) -> tuple[int | None, int | None]:
        """(byte limit, message limit) of ``address``; None = unlimited."""
        limit = self.default_bytes
        if self.override is not None:
            own = self.override(address) or 0
            if own > 0:
                limit = own
            elif own < 0:
                limit = 0
        return (limit or None), (self.default_messages or None)


def _folder_sums(txn: Txn, address: str) -> tuple[int, int]:
    """Bytes and messages from the account's folder records (their own counters)."""
    size = count = 0
    for _key, value in txn.prefix(b"folders", address.encode() + b"\0"):
        record = txn.get_json(b"finfo", bytes(value))
        if record is not None:
            size += record["size"]
            count += record["exists"]
    return size, count


def _account(txn: Txn, address: str) -> dict[str, Any] | None:
    record: dict[str, Any] | None = txn.get_json(b"accounts", address.encode())
    if record is not None and "used_bytes" not in record:
        record["used_bytes"], record["used_messages"] = _folder_sums(txn, address)
    return record


def usage(txn: Txn, address: str) -> tuple[int, int]:
    """(bytes, messages) the account uses now; (0, 0) for an unknown account."""
    record = _account(txn, address)
    if record is None:
        return 0, 0
    return int(record["used_bytes"]), int(record["used_messages"])


def charge(txn: Txn, address: str, size: int, count: int) -> None:
    """Add ``size`` bytes and ``count`` messages (negative to release) to the account's
    counters. Call it before the folder record of the change is written (an account without
    counters yet takes them from its folder records first). No account, no counters."""
    record = _account(txn, address)
    if record is None:
        return
    record["used_bytes"] = max(0, record["used_bytes"] + size)
    record["used_messages"] = max(0, record["used_messages"] + count)
    txn.put_json(b"accounts", address.encode(), record)


def check(
    txn: Txn, address: str, limits: tuple[int | None, int | None], size: int, count: int
) -> None:
    """Raise unless ``size`` more bytes and ``count`` more messages fit the limits."""
    limit_bytes, limit_messages = limits
    used_bytes, used_messages = usage(txn, address)
    pairs = ((used_bytes, limit_bytes, size), (used_messages, limit_messages, count))
    for used, limit, more in pairs:
        if limit is None or more <= 0 or used + more <= limit:
            continue
        if more > limit:
            raise QuotaExceeded(detail=f"{address}: {more} more, limit {limit}")
        raise MailboxFull(detail=f"{address}: {used} used + {more} more, limit {limit}")


def report(txn: Txn, address: str, limits: tuple[int | None, int | None]) -> QuotaUsage:
    """The account's usage with its limits."""
    used_bytes, used_messages = usage(txn, address)
    return QuotaUsage(used_bytes, used_messages, limits[0], limits[1])


def rebuild_usage(txn: Txn, address: str) -> tuple[int, int]:
    """Recount the account's usage from its message records (``mailserver reindex``)."""
    record = txn.get_json(b"accounts", address.encode())
    if record is None:
        return 0, 0
    size = count = 0
    for _key, value in list(txn.prefix(b"folders", address.encode() + b"\0")):
        fid = from_u32(bytes(value))
        for _mkey, raw in txn.prefix(b"messages", u32(fid)):
            size += int(load(raw)["size"])
            count += 1
    record["used_bytes"], record["used_messages"] = size, count
    txn.put_json(b"accounts", address.encode(), record)
    return size, count
