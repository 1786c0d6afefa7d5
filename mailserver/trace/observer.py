"""From structured log events to trace records.

The protocols, the filter, the store and the spool say what happened through
``twisted.logger`` events with a ``mail_event`` field (the table of
:mod:`mailserver.observe.events`, plus ``stored`` and ``queued`` below);
:class:`TraceObserver` keeps those that make a message's path in the
:class:`~mailserver.trace.log.TraceLog`. Nothing that emits them imports this package.

========== =========== ============================================================================
event      record      fields kept (the first ones are its keys)
========== =========== ============================================================================
message    ``smtp``    ``queue_id`` (the id of the 250 reply; not ``NOQUEUE``), ``session``,
                       ``message_id`` when given; phase, result, code, enhanced, reply, listener,
                       client, sender, recipients, size, and helo, tls, authenticated_as when
                       given (``smtp/server.py`` through ``SessionEvents``: the reply to the end of
                       the message, or a refused MAIL/RCPT). ``tls`` and ``authenticated_as``
                       are otherwise taken from the session's earlier ``reply`` (2xx to
                       STARTTLS, or a ``tls_listen`` listener) and ``auth`` events.
verdict    ``verdict`` ``queue_id`` (the SMTP id), ``message_id`` when given; action, score, rules
                       (``filter/pipeline.py``, the filter's decision at the end of DATA)
maillog    ``delivery`` only ``direction="out"``: ``queue_id`` (the spool's); rcpt, result, status,
                       reply, relay (the MX host), attempts, delay, sender, size
                       (``spool/scheduler.py``: each recipient of each delivery attempt)
stored     ``stored``  ``smtp_id`` (``Envelope.queue_id``), ``message_id``; object_id, places
                       (``[[account, folder, uid], ...]``), sender, client, helo,
                       authenticated_as (``store/local.py``, after a local delivery's commit)
queued     ``queued``  ``queue_id`` (the spool's), ``smtp_id``, ``message_id``; sender,
                       recipients, size, client, helo, authenticated_as (``spool/queue.py``,
                       after the spool's commit)
========== =========== ============================================================================

A DSN is a message from the null reverse-path whose Message-ID is
``<QUEUEID.random@host>`` (``spool/dsn.py``): its ``stored`` and ``queued`` records also get
the key of the queue entry it reports on, and ``dsn_for`` names that entry, so the entry's
trace shows where its DSNs went.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

from mailserver.trace.log import TraceLog, key_of

__all__ = ["EVENTS", "TraceObserver", "TraceService"]

#: event kind -> (record kind, fields kept, (key letter, field) pairs).
EVENTS: dict[str, tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "message": (
        "smtp",
        ("phase", "result", "code", "enhanced", "reply", "listener", "client", "sender",
         "recipients", "size", "helo", "tls", "authenticated_as"),
        (("q", "queue_id"), ("s", "session"), ("m", "message_id")),
    ),
    "verdict": ("verdict", ("action", "score", "rules"),
                (("q", "queue_id"), ("m", "message_id"))),
    "maillog": (
        "delivery",
        ("rcpt", "result", "status", "reply", "relay", "attempts", "delay", "sender", "size"),
        (("q", "queue_id"),),
    ),
    "stored": (
        "stored",
        ("object_id", "places", "sender", "client", "helo", "authenticated_as"),
        (("q", "smtp_id"), ("m", "message_id")),
    ),
    "queued": (
        "queued",
        ("sender", "recipients", "size", "client", "helo", "authenticated_as"),
        (("q", "queue_id"), ("q", "smtp_id"), ("m", "message_id")),
    ),
}
#: Ids that are not an id: a refused MAIL or RCPT has no transaction yet.
NO_ID = frozenset({"NOQUEUE"})
_DSN_ID = re.compile(r"<?([0-9A-Fa-f]{19})\.[^@]*@")
_LONGEST = 998


def _clean(value: Any) -> Any:
    """A JSON-ready copy (strings capped at a header line's length)."""
    if isinstance(value, str):
        return value[:_LONGEST]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value[:1000]]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in list(value.items())[:100]}
    return str(value)[:_LONGEST]


@implementer(ILogObserver)
class TraceObserver:
    """Keeps the ``mail_event`` log events (module doc) in ``trace``; ignores the rest.
    Never raises (a log observer must not)."""

    def __init__(self, trace: TraceLog, max_sessions: int = 10_000) -> None:
        self.trace = trace
        self.max_sessions = max_sessions
        #: session id -> what the session's ``reply`` and ``auth`` events told (TLS, user),
        #: the most recent ``max_sessions`` sessions.
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("mail_event")
        try:
            if kind in ("reply", "auth"):
                self._session_state(event)
                return
            known = EVENTS.get(kind)  # type: ignore[arg-type]
            if known is None or (kind == "maillog" and event.get("direction") != "out"):
                return
            self._record(known, event)
        except Exception:  # a malformed event: the trace is a record, never a failure
            self.trace.dropped += 1

    def _session_state(self, event: dict[str, Any]) -> None:
        """SMTP only: a 2xx to STARTTLS means TLS from then on; a successful AUTH names the
        user (``user``, the field its log line has). The message events carry neither."""
        if event.get("protocol") != "smtp" or not event.get("session"):
            return
        if event["mail_event"] == "reply":
            if event.get("verb") != "STARTTLS" or not str(event.get("code", "")).startswith("2"):
                return
            change: dict[str, Any] = {"tls": True}
        elif event.get("result") == "success" and event.get("user"):
            change = {"authenticated_as": str(event["user"])}
        else:
            return
        session = str(event["session"])
        self.sessions.setdefault(session, {}).update(change)
        self.sessions.move_to_end(session)
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)

    def _record(self, known: tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]],
                event: dict[str, Any]) -> None:
        kind, kept, named = known
        keys: list[str] = []
        fields: dict[str, Any] = {}
        for letter, name in named:
            value = str(event.get(name) or "")
            if value and value not in NO_ID:
                keys.append(key_of(letter, value))
                fields[name] = _clean(value)
        fields.update((name, _clean(event[name])) for name in kept if name in event)
        if kind == "smtp":
            state = self.sessions.get(str(event.get("session", "")), {})
            implicit = str(event.get("listener", "")).endswith("tls_listen")
            fields.setdefault("tls", bool(state.get("tls") or implicit))
            if state.get("authenticated_as"):
                fields.setdefault("authenticated_as", state["authenticated_as"])
        if kind in ("stored", "queued") and not event.get("sender"):
            found = _DSN_ID.match(str(event.get("message_id") or "").strip())
            if found:
                fields["dsn_for"] = found.group(1).upper()
                keys.append(key_of("q", found.group(1)))
        self.trace.add(kind, keys, fields)


class TraceService(Service):
    """Runs the trace log with the server: observes ``publisher`` (the global log publisher
    by default: where every ``Logger`` sends its events) and prunes while running; stopping
    writes what is pending before the index closes."""

    def __init__(self, trace: TraceLog, publisher: LogPublisher | None = None) -> None:
        self.trace = trace
        self.observer = TraceObserver(trace)
        self.publisher = publisher if publisher is not None else globalLogPublisher

    def startService(self) -> None:
        super().startService()
        self.trace.start()
        self.publisher.addObserver(self.observer)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.publisher.removeObserver(self.observer)
        return self.trace.stop()
