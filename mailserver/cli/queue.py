"""``mailserver queue list|show|retry|delete|hold|release|flush``: the outbound spool.

The spool lives at ``<server.data_dir>/spool`` on the same index as the mailboxes, so these
commands work whether or not the server runs: LMDB lets both processes use the index. The
server's scheduler looks at the spool every :data:`POLL_INTERVAL` seconds (and at each due
time), so ``retry``, ``flush``, ``hold`` and ``release`` take effect within that interval.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import CommandError, run_with_storage
from mailserver.config import Config
from mailserver.errors import MailError
from mailserver.spool.queue import LmdbSpool
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import QueuedRecipient, QueueEntry, RecipientState

#: How often the running server's scheduler re-reads the spool (``Scheduler.poll_interval``).
POLL_INTERVAL = 30

#: Entries read from the index per page.
PAGE = 500

#: The longest last reply shown by ``queue list`` (longer ones end in ``...``).
REPLY_WIDTH = 60

#: A queue id as ``queue list`` prints it: upper-case hex digits.
_QUEUE_ID = re.compile(r"[0-9A-F]+")

_TAKES_EFFECT = f"the running server picks this up within {POLL_INTERVAL} s"

#: ``work`` for a command on the spool: ``(spool, now) -> exit status``.
SpoolWork = Callable[[LmdbSpool, float], Awaitable[int]]


def register(subparsers: Any) -> None:
    """Add the ``queue`` noun and its verbs."""
    parser = subparsers.add_parser(
        "queue",
        help="inspect and manage the outbound mail queue",
        description="Inspect and manage the outbound queue. The running server re-reads "
        f"the queue every {POLL_INTERVAL} s, so retry, flush, hold and release take effect "
        "within that interval.",
    )
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    listing = verbs.add_parser("list", help="one line per queued message, then a summary")
    listing.add_argument(
        "--limit",
        metavar="N",
        type=_positive,
        default=None,
        help="show only the N oldest messages (the summary still counts all)",
    )
    add_config_option(listing)
    listing.set_defaults(handler=list_queue)

    show = verbs.add_parser("show", help="every detail of one queued message")
    show.add_argument("queue_id", metavar="ID", help="a queue id from 'mailserver queue list'")
    show.add_argument(
        "--message", action="store_true", help="also print the whole message as queued"
    )
    add_config_option(show)
    show.set_defaults(handler=show_entry)

    simple = [
        ("retry", "make a message due now", f"Make message ID due now; {_TAKES_EFFECT}."),
        (
            "delete",
            "delete a message without a bounce",
            "Delete message ID from the queue. No bounce or DSN is sent to its sender. "
            "A delivery already in progress may still complete.",
        ),
        (
            "hold",
            "keep a message from being tried",
            f"Keep message ID in the queue but never try it until released; {_TAKES_EFFECT}.",
        ),
        (
            "release",
            "let a held message be tried again",
            "Put held message ID back on its retry schedule (use 'retry' as well to try it "
            f"now); {_TAKES_EFFECT}.",
        ),
    ]
    for verb, summary, description in simple:
        command = verbs.add_parser(verb, help=summary, description=description)
        command.add_argument(
            "queue_id", metavar="ID", help="a queue id from 'mailserver queue list'"
        )
        add_config_option(command)
        command.set_defaults(handler=_VERBS[verb])

    flush = verbs.add_parser(
        "flush",
        help="make every message that is not held due now",
        description=f"Make every message that is not held due now; {_TAKES_EFFECT}.",
    )
    add_config_option(flush)
    flush.set_defaults(handler=flush_queue)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("give a number of 1 or more")
    return value


def queue_id(text: str) -> str:
    """The canonical (upper-case) form of a queue id argument; CommandError if malformed."""
    canonical = text.strip().upper()
    if not _QUEUE_ID.fullmatch(canonical):
        raise CommandError(
            f"{text!r} is not a queue id (hex digits); see the ids with: mailserver queue list"
        )
    return canonical


def _run(args: argparse.Namespace, work: SpoolWork) -> int:
    """run_with_storage with the server's spool (``<data_dir>/spool``) opened for ``work``."""

    async def with_spool(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        from twisted.internet import reactor

        root = os.path.join(config.server.data_path, "spool")
        spool = LmdbSpool(store.db, root, reactor, fsync=config.store.fsync)
        return await work(spool, time.time())

    return run_with_storage(args, with_spool)


def _entry(spool: LmdbSpool, queue_id: str) -> QueueEntry:
    """The entry ``queue_id``; CommandError naming ``queue list`` when there is none."""
    entry = spool.get(queue_id)
    if entry is None:
        raise _gone(queue_id)
    return entry


def _gone(queue_id: str) -> CommandError:
    return CommandError(
        f"no message {queue_id} in the queue (delivered or deleted?); "
        "see the queue with: mailserver queue list"
    )


async def _write(queue_id: str, change: Deferred[Any]) -> Any:
    """Await a spool write; a vanished entry (the server finished it meanwhile) is _gone."""
    try:
        return await change
    except MailError as error:
        if error.detail == queue_id:
            raise _gone(queue_id) from None
        raise


def all_entries(spool: LmdbSpool, page: int = PAGE) -> Iterator[QueueEntry]:
    """Every entry in queue id (arrival) order, read ``page`` at a time."""
    after = ""
    while True:
        batch = spool.entries(after, page)
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1].queue_id


# -- formatting --------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A short span in its two largest units: ``45s``, ``12m30s``, ``3h12m``, ``2d3h``."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def size(octets: int) -> str:
    """A byte count for humans: ``812B``, ``1.2K``, ``3.4M``, ``1.1G``."""
    value = float(octets)
    for unit in ("B", "K", "M"):
        if value < 1024:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"


def sender(entry: QueueEntry) -> str:
    """The envelope sender as ``<address>``, ``<>`` for the null reverse-path."""
    return f"<{entry.sender}>"


def next_attempt(entry: QueueEntry, now: float) -> str:
    """``held``, ``now`` (due), or ``in 4m30s``."""
    if entry.held:
        return "held"
    if entry.next_attempt <= now:
        return "now"
    return f"in {duration(entry.next_attempt - now)}"


def one_line(text: str, width: int | None = None) -> str:
    """``text`` with its whitespace (line breaks too) collapsed, cut to ``width``."""
    flat = " ".join(text.split())
    if width is not None and len(flat) > width:
        return flat[: width - 3] + "..."
    return flat


def last_reply(entry: QueueEntry) -> str:
    """The last reply of the first deferred recipient that has one, else ``""``."""
    for recipient in entry.recipients:
        if recipient.state is RecipientState.DEFERRED and recipient.last_reply:
            return recipient.last_reply
    return ""


def timestamp(when: float, now: float) -> str:
    """Local date and time with its offset, and how far from ``now`` it is."""
    stamp = datetime.fromtimestamp(when).astimezone().isoformat(sep=" ", timespec="seconds")
    relative = f"{duration(now - when)} ago" if when <= now else f"in {duration(when - now)}"
    return f"{stamp} ({relative})"


def params(values: Any) -> str:
    """ESMTP parameters as ``KEY=value KEY=value``, or ``-`` when there are none."""
    return " ".join(f"{key}={value}" for key, value in sorted(values.items())) or "-"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# -- verbs -------------------------------------------------------------------------------


_HEADINGS = ("QUEUE ID", "AGE", "SIZE", "SENDER", "RCPT", "NEXT", "LAST REPLY")
_RIGHT = {1, 2, 4}  # the columns aligned right: age, size, recipients


def list_queue(args: argparse.Namespace) -> int:
    """Print a table of the queue, oldest first, then ``N messages, M held, SIZE total``."""
    limit: int | None = args.limit

    def work(spool: LmdbSpool, now: float) -> int:
        rows: list[tuple[str, ...]] = []
        count = held = total = 0
        for entry in all_entries(spool):
            count += 1
            held += 1 if entry.held else 0
            total += entry.size
            if limit is None or len(rows) < limit:
                rows.append(
                    (
                        entry.queue_id,
                        duration(now - entry.created),
                        size(entry.size),
                        sender(entry),
                        f"{len(entry.pending)}/{len(entry.recipients)}",
                        next_attempt(entry, now),
                        one_line(last_reply(entry), REPLY_WIDTH),
                    )
                )
        if not count:
            print("queue is empty")
            return 0
        widths = [max(len(row[i]) for row in [_HEADINGS, *rows]) for i in range(len(_HEADINGS))]
        for row in [_HEADINGS, *rows]:
            cells = [
                cell.rjust(width) if i in _RIGHT else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths))
            ]
            print("  ".join(cells).rstrip())
        shown = "" if len(rows) == count else f" (showing the oldest {len(rows)})"
        print(f"{_plural(count, 'message')}, {held} held, {size(total)} total{shown}")
        return 0

    return _run(args, _synchronous(work))


def show_entry(args: argparse.Namespace) -> int:
    """Print every field of one entry; with ``--message``, then the message itself."""
    wanted = queue_id(args.queue_id)

    def work(spool: LmdbSpool, now: float) -> int:
        entry = _entry(spool, wanted)
        raw = _read_message(spool, wanted) if args.message else None
        for line in describe(entry, spool.message_path(wanted), now):
            print(line)
        if raw is not None:
            print()
            sys.stdout.flush()
            sys.stdout.buffer.write(raw)
            sys.stdout.buffer.flush()
        return 0

    return _run(args, _synchronous(work))


def _read_message(spool: LmdbSpool, queue_id: str) -> bytes:
    try:
        with spool.open_message(queue_id) as file:
            return file.read()
    except FileNotFoundError:
        raise CommandError(
            f"the message file of {queue_id} is missing ({spool.message_path(queue_id)}); "
            f"the entry cannot be delivered, remove it: mailserver queue delete {queue_id}"
        ) from None


def describe(entry: QueueEntry, path: str, now: float) -> list[str]:
    """The lines ``queue show`` prints for ``entry``."""
    if entry.held:
        schedule = f"held (scheduled for {timestamp(entry.next_attempt, now)})"
    elif entry.next_attempt <= now:
        schedule = f"due now (since {timestamp(entry.next_attempt, now)})"
    else:
        schedule = timestamp(entry.next_attempt, now)
    lines = [
        f"queue id:      {entry.queue_id}",
        f"sender:        {sender(entry)}",
        f"authenticated: {entry.authenticated_as or '-'}",
        f"parameters:    {params(entry.params)}",
        f"size:          {entry.size} bytes ({size(entry.size)})",
        f"created:       {timestamp(entry.created, now)}",
        f"attempts:      {entry.attempts}",
        f"next attempt:  {schedule}",
        f"held:          {'yes' if entry.held else 'no'}",
        f"delay notice:  {'sent' if entry.warned else 'not sent'}",
        f"file:          {path}",
        f"recipients:    {len(entry.recipients)} ({len(entry.pending)} pending)",
    ]
    for recipient in entry.recipients:
        lines.extend(_recipient(recipient, now))
    return lines


def _recipient(recipient: QueuedRecipient, now: float) -> list[str]:
    lines = [
        f"  {recipient.address}",
        f"    state:      {recipient.state.value}",
        f"    attempts:   {recipient.attempts}",
        f"    last reply: {one_line(recipient.last_reply) or '-'}",
    ]
    if recipient.updated:
        lines.append(f"    updated:    {timestamp(recipient.updated, now)}")
    lines.append(f"    parameters: {params(recipient.params)}")
    return lines


def retry_entry(args: argparse.Namespace) -> int:
    """Make the entry due now (refused while it is held)."""
    wanted = queue_id(args.queue_id)

    async def work(spool: LmdbSpool, now: float) -> int:
        if _entry(spool, wanted).held:
            raise CommandError(
                f"{wanted} is held; release it first: mailserver queue release {wanted}"
            )
        await _write(wanted, spool.reschedule(wanted, now))
        print(f"{wanted} is due now; {_TAKES_EFFECT}")
        return 0

    return _run(args, work)


def delete_entry(args: argparse.Namespace) -> int:
    """Remove the entry and its message file; no bounce is sent."""
    wanted = queue_id(args.queue_id)

    async def work(spool: LmdbSpool, now: float) -> int:
        entry = _entry(spool, wanted)
        await _write(wanted, spool.remove(wanted))
        pending = _plural(len(entry.pending), "recipient")
        print(f"deleted {wanted} ({pending} not delivered); no bounce was sent to {sender(entry)}")
        return 0

    return _run(args, work)


def hold_entry(args: argparse.Namespace) -> int:
    """Keep the entry out of the schedule until released."""
    wanted = queue_id(args.queue_id)

    async def work(spool: LmdbSpool, now: float) -> int:
        if _entry(spool, wanted).held:
            print(f"{wanted} is held already")
            return 0
        await _write(wanted, spool.set_held(wanted, True))
        print(f"held {wanted}; release it with: mailserver queue release {wanted}")
        return 0

    return _run(args, work)


def release_entry(args: argparse.Namespace) -> int:
    """Put a held entry back on its schedule."""
    wanted = queue_id(args.queue_id)

    async def work(spool: LmdbSpool, now: float) -> int:
        entry = _entry(spool, wanted)
        if not entry.held:
            print(f"{wanted} is not held")
            return 0
        released = await _write(wanted, spool.set_held(wanted, False))
        print(f"released {wanted}; next attempt {next_attempt(released, now)}")
        return 0

    return _run(args, work)


def flush_queue(args: argparse.Namespace) -> int:
    """Make every entry that is not held due now; print how many are due."""

    async def work(spool: LmdbSpool, now: float) -> int:
        due = held = 0
        later = []
        for entry in all_entries(spool):
            if entry.held:
                held += 1
            elif entry.next_attempt > now:
                later.append(entry.queue_id)
            else:
                due += 1
        for start in range(0, len(later), PAGE):
            batch = [spool.reschedule(name, now) for name in later[start : start + PAGE]]
            results = await DeferredList(batch, consumeErrors=True)
            for (ok, failure), name in zip(results, later[start : start + PAGE]):
                if ok:
                    due += 1
                elif not (failure.check(MailError) and failure.value.detail == name):
                    failure.raiseException()  # a vanished entry was finished meanwhile
        skipped = f"; {held} held, not touched" if held else ""
        print(f"{_plural(due, 'message')} due now{skipped}; {_TAKES_EFFECT}")
        return 0

    return _run(args, work)


def _synchronous(work: Callable[[LmdbSpool, float], int]) -> SpoolWork:
    """A read-only ``work`` as the awaitable that _run expects."""

    async def run(spool: LmdbSpool, now: float) -> int:
        return work(spool, now)

    return run


_VERBS = {
    "retry": retry_entry,
    "delete": delete_entry,
    "hold": hold_entry,
    "release": release_entry,
}
