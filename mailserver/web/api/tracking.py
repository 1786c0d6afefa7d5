"""The outbound queue (``/admin/queue``) and message tracking, "where is my mail":
``GET /admin/track?message_id=...|queue_id=...``.

Queue routes work through ISpool (``context.spool``) as ``mailserver queue`` does: list
(paged by queue id), show (with the queued message's Message-ID), retry (refused while
held), hold, release, delete (no bounce); each needs ``manage-queue`` and each change is
audited as ``queue_action`` (see :mod:`mailserver.web.api.admin` for the rules).

Tracking needs ``manage-queue`` too: it shows where any account's mail went.

One query returns the message's path as one document. Each part says whether it is
recorded at all (``recorded``) and whether its search was complete (``complete``), and
``gaps`` lists what could not be known, so an empty list means "not found", never "not
looked for". ``trace`` says whether the trace log answered.

**From the trace log first** (``context.trace``, an ITraceLog; ``[tracking]``, on by
default; :mod:`mailserver.trace`). It records, by Message-ID, queue id and SMTP session,
what the SMTP session, the filter, the store and the spool logged about each message, so
the answer is a few index reads and never a scan (:mod:`.trace_view`):

``smtp``
    ``recorded: true``; ``sessions``: the reply to the end of the message with the session
    id, the 250's id, client, listener, TLS, envelope, size, the authenticated user, and the
    HELO name from the store's and spool's records. A MAIL/RCPT refused before there was a
    message has no Message-ID: the session id (``?queue_id=``) finds it.
``checks``
    ``verdicts``: the filter's decision (action, score, rules) on each message that reached
    the end of DATA through it, accepted or refused; ``entries``: the spam classification
    log's entries of the Message-ID (a bounded backward walk, in the thread pool).
``storage``
    Each place a local delivery stored the message (account, folder, UID, object id),
    checked with one ``IMailbox.message(uid)`` each: ``present: false`` when the copy has
    since been moved or expunged (the trace does not follow IMAP moves).
``queue``
    ``queue_ids`` the spool gave the message, the live ``entries`` (``spool.get``), and
    ``attempts``: every delivery attempt per recipient (time, MX host, reply, status,
    result), which outlive the queue entry.
``dsns``
    DSNs generated for the queue entries (queued or stored locally), with ``dsn_for``.

The trace log is bounded (``[tracking] max_age_days``, ``max_records``) and written in
batches (``flush_interval``): a crash loses at most the last batch, and records of work
still in flight when the server stops may be missing.

**Without a trace record** (tracking off, a message older than the trace or from before it
was on), the parts are assembled from what the server otherwise keeps, and cost bounded
scans:

``smtp``
    ``recorded: false``: what is known of the session comes from the spam classification
    entries (client IP, envelope sender and recipients) and from our ``Received`` field in
    a queued copy (``... (mailserver) with ESMTP id <session id>``).
``checks``
    The ``spam_classifications`` log only: messages that reached the body phase with a
    spam verdict; a refusal at connect/HELO/MAIL/RCPT, a message with no spam check
    (submission) or a check error leave no entry.
``storage``
    A bounded scan (:data:`STORE_SCAN_LIMIT` messages) through the store interfaces,
    reading the cached envelope only (``IMailbox.messages(meta="envelope")``), in the
    thread pool. Accounts named as recipients by the classification entries (and
    ``?account=``) are scanned first, then every directory user. ``complete`` is false
    when the bound stopped the scan.
``queue`` and ``dsns``
    The spool: a queue id from ``spool.get``; by Message-ID (or by the SMTP id of the 250
    reply) a bounded scan (:data:`QUEUE_SCAN_LIMIT` entries) reading the first 64 KiB of
    each queued message. A DSN is queued as a new entry from ``<>`` whose Message-ID starts
    with ``<QUEUEID.``, which is how the DSNs of an entry are found. Once every recipient
    is delivered or failed the entry is removed, and with it its delivery history.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.errors import MailError
from mailserver.types import QueuedRecipient, QueueEntry
from mailserver.web.api.admin import (
    MANAGE_QUEUE,
    QUEUE_ACTION,
    audit,
    in_thread,
    queue_id,
    require,
    run,
)
from mailserver.web.api.routing import Call, Problem, Response, Route
from mailserver.web.api.trace_view import QUEUE_ID_DOC, RESPONSE, assemble

__all__ = [
    "QUEUE_SCAN_LIMIT",
    "ROUTES",
    "STORE_SCAN_LIMIT",
    "header_value",
    "queue_entry_json",
    "track",
]

#: Queue entries per page of ``GET /admin/queue`` (default and most).
QUEUE_PAGE, QUEUE_PAGE_MAX = 100, 1000
#: Messages whose envelope the storage scan reads at most.
STORE_SCAN_LIMIT = 50_000
#: Queue entries whose head the queue scan reads at most.
QUEUE_SCAN_LIMIT = 5_000
#: Classification entries returned at most.
CHECKS_LIMIT = 50
#: Locations returned at most.
LOCATIONS_LIMIT = 200
_HEAD = 64 * 1024
_PAGE = 500
_RECEIVED_ID = re.compile(rb"\(mailserver\)\s+with\s+\S+\s+id\s+([0-9A-Fa-f]+)")

#: The parts of the path nothing but the trace log records (``gaps`` repeats the relevant
#: when the answer does not come from the trace).
NOT_RECORDED = {
    "smtp": "[tracking] is off: SMTP sessions (connection, HELO, MAIL/RCPT replies, the 250 "
    "and its id) are only written to the process log, which the server does not read back",
    "delivery_history": "a queue entry and its per-recipient history are removed once every "
    "recipient is delivered or failed; finished deliveries leave only process-log lines",
    "local_delivery": "local deliveries (port 25 to a mailbox) are not queued: no attempt "
    "record exists, only the stored message",
    "checks_without_spam": "filter decisions without a spam verdict (refusals before DATA, "
    "submission, DNSBL/greylist/rate-limit replies) are not recorded per message",
}


#: The gap when the trace log is on but knows nothing of the query.
NOT_TRACED = (
    "the trace log has no record of it (unknown, pruned after [tracking] max_age_days, or "
    "from before tracking was on): the parts below come from the bounded scans"
)


def normalise(message_id: str) -> str:
    """A Message-ID without surrounding whitespace and angle brackets (for comparing)."""
    text = message_id.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


# -- queue ---------------------------------------------------------------------------------


def _recipient_json(recipient: QueuedRecipient) -> dict[str, Any]:
    return {
        "address": recipient.address,
        "state": recipient.state.value,
        "attempts": recipient.attempts,
        "last_reply": recipient.last_reply,
        "updated": recipient.updated or None,
        "params": dict(recipient.params),
    }


def queue_entry_json(entry: QueueEntry) -> dict[str, Any]:
    """A QueueEntry as JSON: envelope, schedule and each recipient's delivery history."""
    return {
        "queue_id": entry.queue_id,
        "sender": entry.sender,
        "authenticated_as": entry.authenticated_as,
        "size": entry.size,
        "created": entry.created,
        "next_attempt": entry.next_attempt,
        "attempts": entry.attempts,
        "held": entry.held,
        "delay_notice_sent": entry.warned,
        "params": dict(entry.params),
        "pending": len(entry.pending),
        "recipients": [_recipient_json(r) for r in entry.recipients],
    }


def _entry(call: Call, wanted: str) -> QueueEntry:
    entry: QueueEntry | None = call.context.need("spool").get(wanted)
    if entry is None:
        raise Problem(404, "No such queue entry",
                      f"no message {wanted} in the queue (delivered or deleted?)")
    return entry


async def _spool_write(wanted: str, change: Any) -> Any:
    """Await a spool write; an entry finished meanwhile is a 404, not a 503."""
    try:
        return await change
    except MailError as error:
        if error.detail == wanted:
            raise Problem(404, "No such queue entry", f"{wanted} left the queue") from None
        raise


def list_queue(call: Call) -> Any:
    """A page of entries in queue id (arrival) order; ``next`` is the ``after`` of the next."""
    call.require(MANAGE_QUEUE)
    after = call.arg("after")
    limit = call.int_arg("limit", QUEUE_PAGE, 1, QUEUE_PAGE_MAX)
    entries = call.context.need("spool").entries(queue_id(after) if after else "", limit)
    more = len(entries) == limit
    return {"entries": [queue_entry_json(e) for e in entries],
            "next": entries[-1].queue_id if more and entries else None}


def read_message_id(spool: Any, wanted: str) -> str:
    """Blocking: the Message-ID field of a spooled message ('' when absent or unreadable)."""
    try:
        with spool.open_message(wanted) as source:
            head = source.read(_HEAD)
    except OSError:
        return ""
    return header_value(head, b"message-id")


def header_value(head: bytes, name: bytes) -> str:
    """The first ``name:`` field of a header block (unfolded), '' when absent."""
    end = head.find(b"\n\n")
    lines = head[: end if end >= 0 else len(head)].replace(b"\r\n", b"\n").split(b"\n")
    prefix = name.lower() + b":"
    for number, line in enumerate(lines):
        if line[: len(prefix)].lower() == prefix:
            value = line[len(prefix):]
            for more in lines[number + 1:]:
                if more[:1] not in (b" ", b"\t"):
                    break
                value += b" " + more.strip()
            return value.strip().decode("utf-8", "replace")[:998]
    return ""


@run
async def show_queue_entry(call: Call) -> Any:
    call.require(MANAGE_QUEUE)
    wanted = queue_id(call.params["id"])
    entry = _entry(call, wanted)
    out = queue_entry_json(entry)
    out["message_id"] = await in_thread(call, read_message_id, call.context.need("spool"), wanted)
    return out


def _queue_verb(verb: str) -> Callable[[Call], Deferred[Any]]:
    async def act(call: Call) -> Any:
        await require(call, MANAGE_QUEUE, None, QUEUE_ACTION, verb)
        wanted = queue_id(call.params["id"])
        spool = call.context.need("spool")
        entry = _entry(call, wanted)
        if verb == "retry":
            if entry.held:
                raise Problem(409, "Entry held", f"{wanted} is held; release it first")
            now = call.context.reactor.seconds()
            entry = await _spool_write(wanted, spool.reschedule(wanted, now)) or entry
        elif verb in ("hold", "release") and entry.held != (verb == "hold"):
            entry = await _spool_write(wanted, spool.set_held(wanted, verb == "hold")) or entry
        await audit(call, QUEUE_ACTION, "ok", action=verb, target=wanted)
        return queue_entry_json(spool.get(wanted) or entry)

    act.__name__ = f"{verb}_queue_entry"
    return run(act)


@run
async def delete_queue_entry(call: Call) -> Any:
    """Remove the entry and its message; no bounce is sent (as ``mailserver queue delete``)."""
    await require(call, MANAGE_QUEUE, None, QUEUE_ACTION, "delete")
    wanted = queue_id(call.params["id"])
    entry = _entry(call, wanted)
    await _spool_write(wanted, call.context.need("spool").remove(wanted))
    await audit(call, QUEUE_ACTION, "ok", action="delete", target=wanted,
                 sender=entry.sender, undelivered=len(entry.pending))
    return Response(204)



# -- tracking ------------------------------------------------------------------------------


@dataclass
class _Found:
    """What the spool scan saw."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    dsns: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True
    message_id: str = ""


def _head(spool: Any, wanted: str) -> bytes:
    try:
        with spool.open_message(wanted) as source:
            return bytes(source.read(_HEAD))
    except OSError:
        return b""


def _entry_json(entry: QueueEntry, head: bytes) -> dict[str, Any]:
    out = queue_entry_json(entry)
    out["message_id"] = header_value(head, b"message-id")
    found = _RECEIVED_ID.search(head)
    out["smtp_id"] = found.group(1).decode().upper() if found else None
    return out


def scan_spool(spool: Any, message_id: str, smtp_id: str, queue_ids: Iterable[str],
               limit: int = QUEUE_SCAN_LIMIT) -> _Found:
    """Blocking: the entries holding ``message_id`` (or received in SMTP session
    ``smtp_id``) and the DSNs of any of them or of ``queue_ids``, reading at most ``limit``
    entries' heads."""
    found = _Found()
    wanted = normalise(message_id) if message_id else ""
    parents = {q.upper() for q in queue_ids}
    candidates: list[tuple[QueueEntry, dict[str, Any]]] = []
    after = ""
    while True:
        room = limit - found.scanned
        if room <= 0:
            found.complete = not spool.entries(after, 1)
            break
        batch = spool.entries(after, min(_PAGE, room))
        for entry in batch:
            found.scanned += 1
            data = _entry_json(entry, _head(spool, entry.queue_id))
            candidates.append((entry, data))
            if (wanted and normalise(data["message_id"]) == wanted) or (
                smtp_id and data["smtp_id"] == smtp_id
            ):
                found.entries.append(data)
                parents.add(entry.queue_id)
                found.message_id = found.message_id or data["message_id"]
        if len(batch) < min(_PAGE, room):
            break
        after = batch[-1].queue_id
    for entry, data in candidates:
        parent = _dsn_parent(entry, data["message_id"])
        if parent is not None and parent in parents:
            data["dsn_for"] = parent
            found.dsns.append(data)
    return found


def _dsn_parent(entry: QueueEntry, message_id: str) -> str | None:
    """The queue id a DSN was made for (``spool/dsn.py``: ``<QUEUEID.random@host>`` from
    the null reverse-path), or None."""
    if entry.sender != "":
        return None
    local = normalise(message_id).partition("@")[0]
    parent, dot, _rest = local.partition(".")
    return parent.upper() if dot and re.fullmatch(r"[0-9A-Fa-f]+", parent) else None


def scan_store(store: Any, accounts: Iterable[str], message_id: str,
               queue_ids: Iterable[str], limit: int = STORE_SCAN_LIMIT
               ) -> tuple[list[dict[str, Any]], int, bool]:
    """Blocking: (locations, messages scanned, complete) of the messages whose Message-ID
    is ``message_id`` or that are DSNs of ``queue_ids``, in ``accounts`` (in order)."""
    wanted = normalise(message_id) if message_id else ""
    dsn_prefixes = tuple(q.upper() + "." for q in queue_ids)
    locations: list[dict[str, Any]] = []
    scanned = 0
    for address in accounts:
        if not store.has_account(address):
            continue
        account = store.account(address)
        for info in account.list_folders():
            if scanned >= limit:
                return locations, scanned, False
            folder = account.folder(info.name)
            uids = list(itertools.islice(folder.uids(), limit - scanned + 1))
            if len(uids) > limit - scanned:
                uids = uids[: limit - scanned]
                complete = False
            else:
                complete = True
            for message in folder.messages(uids, meta="envelope"):
                scanned += 1
                found = normalise(str(message.info.envelope.get("message_id") or ""))
                is_dsn = bool(dsn_prefixes) and found.upper().startswith(dsn_prefixes)
                if (wanted and found == wanted) or is_dsn:
                    locations.append(_location(account, folder, message, is_dsn))
                    if len(locations) >= LOCATIONS_LIMIT:
                        return locations, scanned, False
            if not complete:
                return locations, scanned, False
    return locations, scanned, True


def _location(account: Any, folder: Any, message: Any, is_dsn: bool) -> dict[str, Any]:
    info = message.info
    try:
        spam = folder.message(info.uid).info.spam
    except Exception:  # expunged meanwhile
        spam = None
    return {
        "account": account.address,
        "folder": folder.name,
        "uid": info.uid,
        "object_id": info.object_id,
        "size": info.size,
        "internaldate": info.internaldate,
        "flags": sorted(info.flags),
        "message_id": info.envelope.get("message_id"),
        "subject": info.envelope.get("subject"),
        "dsn": is_dsn,
        "spam": None if spam is None else {
            "score": spam.score, "is_spam": spam.is_spam,
            "classifier": spam.classifier, "reasons": list(spam.reasons),
        },
    }


def _checks(classifications: Any, message_id: str) -> list[dict[str, Any]]:
    """Blocking: the classification entries of ``message_id`` (as stored: usually with
    its angle brackets; the bare form is tried when that finds nothing)."""
    bare = normalise(message_id)
    entries: list[dict[str, Any]] = classifications.recent(CHECKS_LIMIT, message_id=f"<{bare}>")
    if not entries:
        entries = classifications.recent(CHECKS_LIMIT, message_id=bare)
    return entries


def _accounts(call: Call, checks: list[dict[str, Any]], queued: list[dict[str, Any]]
              ) -> list[str]:
    """Accounts to scan: ``?account=``, the recipients the checks and the queue name, then
    every directory user."""
    first: list[str] = []
    account = call.arg("account")
    if account:
        first.append(account.strip().lower())
    for entry in checks:
        first.extend(str(r).lower() for r in entry.get("recipients") or ())
    for data in queued:
        if data.get("sender"):
            first.append(str(data["sender"]).lower())
    rest = [user.address for user in call.context.directory.users()]
    return list(dict.fromkeys(first + sorted(rest)))


@run
async def track(call: Call) -> Any:
    """The path of one message, by ``message_id`` or ``queue_id`` (see the module doc)."""
    call.require("manage-queue")
    message_id = (call.arg("message_id") or "").strip()
    raw_queue_id = (call.arg("queue_id") or "").strip()
    if bool(message_id) == bool(raw_queue_id):
        raise Problem(400, "Bad query", "give exactly one of message_id or queue_id")
    if len(message_id) > 998:
        raise Problem(400, "Bad query", "message_id is longer than a header line may be")
    context = call.context
    trace = context.trace
    if trace is not None:
        asked = queue_id(raw_queue_id) if raw_queue_id else ""
        found = await in_thread(call, partial(trace.find, message_id=message_id,
                                              queue_id=asked))
        if found["records"]:
            return await _from_trace(call, found)
        gaps: list[str] = [NOT_TRACED]
    else:
        gaps = [NOT_RECORDED["smtp"]]
    spool_id = smtp_id = ""
    direct: dict[str, Any] | None = None
    if raw_queue_id:
        wanted = queue_id(raw_queue_id)
        entry = None if context.spool is None else context.spool.get(wanted)
        if entry is not None:
            spool_id = wanted
            direct = _entry_json(entry, await in_thread(call, _head, context.spool, wanted))
            message_id = direct["message_id"]
        else:
            smtp_id = wanted  # the id of a 250 reply, or a spool entry that is gone
    queue: dict[str, Any] = {"recorded": context.spool is not None, "entries": [],
                             "scanned": 0, "complete": True}
    dsns: list[dict[str, Any]] = []
    if context.spool is not None:
        found = await in_thread(call, scan_spool, context.spool, message_id, smtp_id,
                                [spool_id] if spool_id else [], QUEUE_SCAN_LIMIT)
        entries = found.entries
        if direct is not None and all(e["queue_id"] != spool_id for e in entries):
            entries.insert(0, direct)
        queue.update(entries=entries, scanned=found.scanned, complete=found.complete)
        dsns = found.dsns
        message_id = message_id or found.message_id
        if not found.complete:
            gaps.append(f"the queue scan stopped after {found.scanned} entries")
    else:
        gaps.append("this server has no spool configured")
    if smtp_id and not message_id:
        gaps.append(f"{smtp_id} is not a queued message and no queued copy names it as "
                    "its SMTP session id; stored messages are not indexed by it: "
                    "search by message_id")
    checks: dict[str, Any] = {"recorded": context.classifications is not None, "entries": []}
    if context.classifications is not None and message_id:
        checks["entries"] = await in_thread(call, _checks, context.classifications, message_id)
    if not checks["entries"]:
        gaps.append(NOT_RECORDED["checks_without_spam"])
    storage: dict[str, Any] = {"recorded": context.store is not None, "locations": [],
                               "scanned": 0, "complete": True}
    parents = [e["queue_id"] for e in queue["entries"]]
    if context.store is not None and (message_id or parents):
        accounts = _accounts(call, checks["entries"], queue["entries"])
        locations, scanned, complete = await in_thread(
            call, scan_store, context.store, accounts, message_id, parents, STORE_SCAN_LIMIT
        )
        dsns += [place for place in locations if place["dsn"]]
        storage.update(locations=[p for p in locations if not p["dsn"]], scanned=scanned,
                       complete=complete)
        if not complete:
            gaps.append(f"the storage scan stopped after {scanned} messages; name the "
                        "recipient with ?account= to look there first")
    if not queue["entries"]:
        gaps.append(NOT_RECORDED["delivery_history"])
        gaps.append(NOT_RECORDED["local_delivery"])
    checks["verdicts"] = []
    queue["attempts"] = []
    return {
        "query": {"message_id": call.arg("message_id"), "queue_id": call.arg("queue_id")},
        "message_id": message_id or None,
        "smtp": {"recorded": False, "sessions": _sessions(checks["entries"], queue["entries"])},
        "checks": checks,
        "storage": storage,
        "queue": queue,
        "dsns": dsns,
        "gaps": gaps,
        "trace": {"recorded": trace is not None, "records": 0, "complete": True},
    }


async def _from_trace(call: Call, found: dict[str, Any]) -> dict[str, Any]:
    """The answer from the trace log's records (:mod:`.trace_view`), with the spam
    classification entries of the Message-ID they name."""
    context = call.context
    parts = await in_thread(call, assemble, found, context.store, context.spool,
                            queue_entry_json)
    message_id = parts["message_id"]
    checks: dict[str, Any] = {"recorded": True, "entries": [], "verdicts": parts["verdicts"]}
    if context.classifications is not None and message_id:
        checks["entries"] = await in_thread(call, _checks, context.classifications, message_id)
    return {
        "query": {"message_id": call.arg("message_id"), "queue_id": call.arg("queue_id")},
        "message_id": message_id or None,
        "smtp": parts["smtp"],
        "checks": checks,
        "storage": parts["storage"],
        "queue": parts["queue"],
        "dsns": parts["dsns"],
        "gaps": parts["gaps"],
        "trace": parts["trace"],
    }


def _sessions(checks: list[dict[str, Any]], queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What is known of the SMTP sessions without a session record: the client, envelope
    and time a filter entry saw, and the session id in a queued copy's Received field."""
    sessions = [
        {"source": "filter", "time": entry.get("time"), "client": entry.get("client"),
         "sender": entry.get("sender"), "recipients": entry.get("recipients"),
         "action": entry.get("action")}
        for entry in checks if entry.get("source") == "filter"
    ]
    sessions += [
        {"source": "queue", "time": data["created"], "smtp_id": data.get("smtp_id"),
         "sender": data["sender"], "authenticated_as": data["authenticated_as"]}
        for data in queued
    ]
    return sessions


ROUTES: list[Route] = [
    Route("GET", "/admin/queue", list_queue, "A page of the outbound queue", tag="admin",
          query={"after": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}),
    Route("GET", "/admin/queue/{id}", show_queue_entry, "One queued message", tag="admin"),
    Route("POST", "/admin/queue/{id}/retry", _queue_verb("retry"), "Make a message due now",
          tag="admin"),
    Route("POST", "/admin/queue/{id}/hold", _queue_verb("hold"),
          "Keep a message from being tried", tag="admin"),
    Route("POST", "/admin/queue/{id}/release", _queue_verb("release"),
          "Put a held message back on its schedule", tag="admin"),
    Route("DELETE", "/admin/queue/{id}", delete_queue_entry,
          "Delete a queued message without a bounce", status=204, tag="admin"),
    Route(
        "GET",
        "/admin/track",
        track,
        "Where is a message: its SMTP session, checks, storage, delivery attempts and DSNs",
        query={
            "message_id": {"type": "string"},
            "queue_id": {"type": "string", "description": QUEUE_ID_DOC},
            "account": {"type": "string"},
        },
        response=RESPONSE,
        tag="admin",
    ),
]
