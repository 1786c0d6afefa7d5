"""Message tracking from the trace log (``context.trace``, an ITraceLog): the parts of
``GET /admin/track`` built from its records (see :mod:`mailserver.web.api.tracking`).

Everything here is a direct read: the records come from the log's indexes, a stored copy is
checked with one ``IMailbox.message(uid)`` per place the ``stored`` records name, a queue
entry with one ``ISpool.get`` per queue id the ``queued`` records name. No part scans the
store or the queue, so the answer costs the same whatever their size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["QUEUE_ID_DOC", "RESPONSE", "assemble"]

#: What ``?queue_id=`` may be.
QUEUE_ID_DOC = "a spool queue id, the id of an SMTP 250 reply, or an SMTP session id"

#: Fields of an ``smtp`` record shown per session.
SESSION_FIELDS = ("time", "session", "queue_id", "client", "helo", "tls", "authenticated_as",
                  "listener", "phase", "result", "code", "enhanced", "reply", "sender",
                  "recipients", "size")
#: What a ``stored`` or ``queued`` record knows of the session that the ``smtp`` record
#: (from the protocol) may lack.
_ENVELOPE = ("client", "helo", "authenticated_as")


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: record[name] for name in names if name in record}


def _sessions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``smtp`` records, completed with the envelope facts (HELO name, authenticated
    user) the store's and spool's records of the same transaction carry."""
    known: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["kind"] in ("stored", "queued") and record.get("smtp_id"):
            known.setdefault(str(record["smtp_id"]).upper(), {}).update(
                (k, v) for k, v in _pick(record, _ENVELOPE).items() if v)
    sessions = []
    for record in records:
        if record["kind"] != "smtp":
            continue
        session = {"source": "trace", **_pick(record, SESSION_FIELDS)}
        for name, value in known.get(str(record.get("queue_id", "")).upper(), {}).items():
            session.setdefault(name, value)
        sessions.append(session)
    return sessions


def _place(store: Any, record: dict[str, Any], account: str, folder: str, uid: int
           ) -> dict[str, Any]:
    """Blocking: one place a ``stored`` record names, and whether the copy is still there
    (the same object at that UID); a moved or expunged copy says ``present: false``."""
    place: dict[str, Any] = {"account": account, "folder": folder, "uid": uid,
                             "object_id": record.get("object_id"), "time": record["time"],
                             "message_id": record.get("message_id"), "source": "trace"}
    try:
        info = store.account(account).folder(folder).message(uid).info
    except Exception:  # no such account, folder or UID any more
        info = None
    present = info is not None and info.object_id == record.get("object_id")
    place["present"] = present
    if present:
        place.update(size=info.size, flags=sorted(info.flags), internaldate=info.internaldate,
                     spam=None if info.spam is None else {
                         "score": info.spam.score, "is_spam": info.spam.is_spam,
                         "classifier": info.spam.classifier, "reasons": list(info.spam.reasons)})
    return place


def _places(store: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in record.get("places") or ():
        account, folder, uid = str(item[0]), str(item[1]), int(item[2])
        out.append(_place(store, record, account, folder, uid) if store is not None else
                   {"account": account, "folder": folder, "uid": uid, "present": None,
                    "object_id": record.get("object_id"), "time": record["time"],
                    "source": "trace"})
    return out


def _message_id(records: list[dict[str, Any]]) -> str:
    """The message's own Message-ID: the first one a record names, DSNs left out."""
    for record in records:
        if record.get("message_id") and not record.get("dsn_for"):
            return str(record["message_id"])
    return ""


def assemble(found: dict[str, Any], store: Any, spool: Any,
             entry_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Blocking: the tracking parts from ``found`` (an ITraceLog.find answer): ``message_id``,
    ``smtp``, ``verdicts``, ``storage``, ``queue``, ``dsns`` and ``gaps``. ``store`` and
    ``spool`` (either may be None) confirm where the message is now; ``entry_json`` renders
    a live QueueEntry."""
    records: list[dict[str, Any]] = found["records"]
    gaps: list[str] = []
    if not found.get("complete", True):
        gaps.append(f"the trace answer stopped at {len(records)} records")
    own = [r for r in records if not r.get("dsn_for")]
    dsn_records = [r for r in records if r.get("dsn_for")]
    sessions = _sessions(own)
    if not sessions:
        gaps.append("no SMTP session record: the message did not come by SMTP (the web API "
                    "or a DSN) or arrived before tracking recorded sessions")
    locations = [p for r in own if r["kind"] == "stored" for p in _places(store, r)]
    queue_ids = list(dict.fromkeys(str(r["queue_id"]) for r in own
                                   if r["kind"] == "queued" and r.get("queue_id")))
    entries = []
    for wanted in queue_ids:
        entry = None if spool is None else spool.get(wanted)
        if entry is not None:
            entries.append(entry_json(entry))
    attempts = [_pick(r, ("time", "queue_id", "rcpt", "result", "status", "reply", "relay",
                          "attempts", "delay")) for r in records if r["kind"] == "delivery"]
    dsns: list[dict[str, Any]] = []
    for record in dsn_records:
        if record["kind"] == "queued":
            entry = None if spool is None else spool.get(str(record.get("queue_id", "")))
            dsns.append({"dsn_for": record["dsn_for"], "time": record["time"],
                         "queue_id": record.get("queue_id"),
                         "message_id": record.get("message_id"),
                         "recipients": record.get("recipients"),
                         "entry": None if entry is None else entry_json(entry)})
        elif record["kind"] == "stored":
            dsns += [{"dsn_for": record["dsn_for"], **place} for place in _places(store, record)]
    return {
        "message_id": _message_id(records),
        "smtp": {"recorded": True, "source": "trace", "sessions": sessions},
        "verdicts": [_pick(r, ("time", "queue_id", "action", "score", "rules"))
                     for r in own if r["kind"] == "verdict"],
        "storage": {"recorded": True, "source": "trace", "locations": locations,
                    "scanned": 0, "complete": True},
        "queue": {"recorded": True, "source": "trace", "queue_ids": queue_ids,
                  "entries": entries, "attempts": attempts, "scanned": 0, "complete": True},
        "dsns": dsns,
        "gaps": gaps,
        "trace": {"recorded": True, "records": len(records),
                  "complete": bool(found.get("complete", True))},
    }


def _part(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description,
            "properties": {"recorded": {"type": "boolean"}}}


#: The OpenAPI schema of ``GET /admin/track``'s answer (see :mod:`.tracking`).
RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["query", "message_id", "smtp", "checks", "storage", "queue", "dsns", "gaps",
                 "trace"],
    "properties": {
        "query": {"type": "object"},
        "message_id": {"type": ["string", "null"]},
        "smtp": _part("sessions: the SMTP session(s) that accepted or refused the message"),
        "checks": _part("verdicts: the filter's decisions; entries: spam classifications"),
        "storage": _part("locations: the mailboxes the message was delivered to"),
        "queue": _part("entries: live queue entries; attempts: every delivery attempt"),
        "dsns": {"type": "array", "items": {"type": "object"},
                 "description": "DSNs generated for the message (dsn_for: its queue id)"},
        "gaps": {"type": "array", "items": {"type": "string"},
                 "description": "what could not be known, and why"},
        "trace": {"type": "object", "description": "whether the trace log answered",
                  "properties": {"recorded": {"type": "boolean"},
                                 "records": {"type": "integer"},
                                 "complete": {"type": "boolean"}}},
    },
}
