"""``GET /events``: the live update stream (Server-Sent Events) of the signed-in account.

The stream is fed by the same change notices that wake IMAP IDLE (``IAccount.watch``, one
watcher per folder of the account), so a delivery, an APPEND, a flag change, an expunge,
a move, a DELETE or a RENAME made through this process shows up at once, whatever protocol
made it. What a client receives (``text/event-stream``, the WHATWG HTML "Server-sent
events" format, UTF-8, one JSON document per ``data:`` line):

- ``retry: 5000`` first (how long a browser's EventSource waits before reconnecting);
- ``event: folders``, data ``{"folders": [...]}``: every folder as ``GET /folders`` gives
  it, plus ``highestmodseq``. It is sent at the start of every connection (a reconnect
  included: the snapshot replaces whatever was missed while disconnected, since nothing is
  kept between connections) and again whenever the set of folders changed (created,
  deleted, renamed), or when the client read too slowly and updates were dropped;
- ``event: folder``, data ``{"folder", "exists", "unseen", "uidnext", "highestmodseq"}``:
  one folder's counters after a change (read from the index after the notice);
- ``: keep-alive`` comment lines every ``keep_alive`` seconds (25 by default), so proxies
  and clients see a live connection.

Event ids (``id:``) are per-connection sequence numbers. A client reconnecting with
``Last-Event-ID: n`` (a decimal number, as EventSource sends it) gets ids from n + 1 on, so
the ids it sees never go backwards; it gets the ``folders`` snapshot first either way.
Another ``Last-Event-ID`` value is ignored (ids restart at 1).

Design rules:

1. **Notices are hints** (``mailserver.store.changes``): a woken stream re-reads the
   folder's counters from the index (a cheap LMDB read on the reactor) and sends an event
   only when they differ from what it last sent.
2. **Bursts coalesce**: notices are collected and flushed at most once per ``coalesce``
   seconds (0.2 by default, on the reactor clock), so each folder gets at most one event per
   interval however many messages arrive.
3. **What the notices cannot tell is polled**: creating a folder wakes no watcher (its name
   was not watched yet), and changes by other processes are not noticed at all; at every
   keep-alive the stream compares the folder list and counters with what it sent, as IDLE
   polls (so such changes arrive within ``keep_alive`` seconds).
4. **Nothing leaks**: the stream's Deferred is cancelled when the client goes away (the app
   does it); cancelling removes every watcher, the keep-alive loop and the pending flush, and
   frees the user's stream slot.
5. **Credentials are checked again**: every ``recheck`` seconds (at a keep-alive) the stream
   asks again whether its bearer token (or the page's session) is still valid for the user
   and the account still exists; when not, the stream ends cleanly (a browser reconnects and
   gets its 401). ``max_age`` (off by default) ends every stream after that many seconds.
6. **Bounded**: at most ``max_streams`` open streams per user (429 beyond); a client that
   does not read pauses the stream (twisted.web's producer) and, once it reads again, gets a
   ``folders`` snapshot instead of the updates it missed, so nothing queues without bound.

The per-server state (stream counts, parameters) is an :class:`EventHub`, taken from
``context.events``; when the wiring set none, one with the defaults is made on first use
and kept there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.errors import NoSuchFolder
from mailserver.types import FolderInfo
from mailserver.web.api.compose import account_of
from mailserver.web.api.mail import folder_json
from mailserver.web.api.routing import Call, Problem, Response, Route

__all__ = ["ROUTES", "EventHub", "EventStream", "hub_of"]

log = Logger(namespace="mailserver.web.api")

#: Headers of the stream (Cache-Control is on every API reply anyway).
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
CONTENT_TYPE = "text/event-stream"
#: Longest Last-Event-ID taken as a number (the routing's int parameters allow as much).
MAX_ID_DIGITS = 18


class EventHub:
    """The live update streams of one API: their parameters and the open streams per user.

    ``clock`` is an IReactorTime; ``max_streams`` streams per user at once;
    ``keep_alive`` seconds between comment lines (and polls); ``coalesce`` seconds between
    flushes of change notices; ``retry`` milliseconds the client waits before reconnecting;
    ``recheck`` seconds between checks of the stream's credentials; ``max_age`` seconds a
    stream lasts (None: no limit).
    """

    def __init__(
        self,
        clock: Any,
        *,
        max_streams: int = 10,
        keep_alive: float = 25.0,
        coalesce: float = 0.2,
        retry: int = 5000,
        recheck: float = 60.0,
        max_age: float | None = None,
    ) -> None:
        if max_streams < 1 or keep_alive <= 0 or coalesce < 0 or retry < 0 or recheck < 0:
            raise ValueError("event streams need max_streams >= 1, keep_alive > 0, "
                             "coalesce >= 0, retry >= 0 and recheck >= 0")
        self.clock = clock
        self.max_streams = max_streams
        self.keep_alive = keep_alive
        self.coalesce = coalesce
        self.retry = retry
        self.recheck = recheck
        self.max_age = max_age
        self._open: dict[str, set[EventStream]] = {}

    def open_streams(self, user: str) -> int:
        """How many streams ``user`` has open now."""
        return len(self._open.get(user, ()))

    def full(self, user: str) -> bool:
        return self.open_streams(user) >= self.max_streams

    def add(self, stream: EventStream) -> None:
        self._open.setdefault(stream.user, set()).add(stream)

    def remove(self, stream: EventStream) -> None:
        streams = self._open.get(stream.user)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._open[stream.user]


def hub_of(context: Any) -> EventHub:
    """``context.events``, made from the config (or defaults) and kept there on first use."""
    hub: EventHub | None = context.events
    if hub is None:
        hub = context.events = EventHub(context.reactor)
    return hub


def _counters(info: FolderInfo) -> dict[str, Any]:
    """The data of an ``event: folder``."""
    return {
        "folder": info.name,
        "exists": info.exists,
        "unseen": info.unseen,
        "uidnext": info.uidnext,
        "highestmodseq": info.highestmodseq,
    }


def _last_event_id(request: Any) -> int | None:
    raw = request.getHeader(b"last-event-id")
    if raw is None:
        return None
    text = raw.strip()
    if not text or len(text) > MAX_ID_DIGITS or not text.isdigit() or not text.isascii():
        return None
    return int(text)


@implementer(IPushProducer)
class EventStream:
    """One client's stream: watches every folder of ``account`` and writes events to
    ``request``. :meth:`start` returns the Deferred the app awaits; cancelling it stops
    everything (:meth:`stop`). ``allowed()`` (-> bool or Deferred[bool]) says whether the
    stream's credentials still hold (rule 5)."""

    def __init__(self, hub: EventHub, account: Any, user: str, request: Any,
                 last_id: int = 0, allowed: Callable[[], Any] | None = None) -> None:
        self.hub = hub
        self.allowed = allowed
        self.account = account
        self.user = user
        self.request = request
        self.next_id = last_id + 1
        self.done: Deferred[None] = Deferred(lambda _: self.stop())
        self._unwatch: dict[str, Callable[[], None]] = {}
        self._sent: dict[str, dict[str, Any]] = {}  # folder -> counters last sent
        self._pending: set[str] = set()
        self._flush_call: Any = None
        self._end_call: Any = None
        self._last_flush = float("-inf")
        self._last_check = float(hub.clock.seconds())
        self._checking = False
        self._paused = False
        self._stale = False  # updates were dropped while paused: send a snapshot on resume
        self._loop = LoopingCall(self._tick)
        self._loop.clock = hub.clock
        self._running = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        self._running = True
        self.hub.add(self)
        try:
            self.request.registerProducer(self, True)
            self._write(f"retry: {self.hub.retry}\n\n")
            self._snapshot()
        except Exception as error:  # the account vanished under us, or the store failed
            log.info("event stream of {user} could not start: {error!r}", user=self.user,
                     error=error)
            self._end()
            return self.done
        self._loop.start(self.hub.keep_alive, now=False)
        if self.hub.max_age is not None:
            self._end_call = self.hub.clock.callLater(self.hub.max_age, self._end)
        return self.done

    def stop(self) -> None:
        """Stop watching and free the stream's slot (idempotent)."""
        if not self._running:
            return
        self._running = False
        self.hub.remove(self)
        for unwatch in self._unwatch.values():
            unwatch()
        self._unwatch.clear()
        if self._loop.running:
            self._loop.stop()
        for name in ("_flush_call", "_end_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        try:
            self.request.unregisterProducer()
        except Exception:  # the connection is already gone
            pass

    def _end(self) -> None:
        """End the stream from this side (max_age, or the account is gone)."""
        self.stop()
        if not self.done.called:
            self.done.callback(None)

    # -- IPushProducer (twisted.web pauses us when the client does not read) ---------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._stale and self._running:
            self._stale = False
            self._guard(self._snapshot)

    def stopProducing(self) -> None:
        self.stop()

    # -- events ----------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.request.write(text.encode("utf-8"))

    def _event(self, kind: str, data: Any) -> None:
        if self._paused:
            self._stale = True
            return
        document = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        self._write(f"id: {self.next_id}\nevent: {kind}\ndata: {document}\n\n")
        self.next_id += 1

    def _snapshot(self) -> None:
        """Watch exactly the account's folders and send them all as ``event: folders``."""
        infos = self.account.list_folders()
        names = {info.name for info in infos}
        for name in list(self._unwatch):
            if name not in names:
                self._unwatch.pop(name)()
        for name in sorted(names - set(self._unwatch)):
            self._unwatch[name] = self.account.watch(name, lambda n=name: self._changed(n))
        self._sent = {info.name: _counters(info) for info in infos}
        self._pending.clear()
        if self._paused:
            self._stale = True
            return
        folders = [{**folder_json(info), "highestmodseq": info.highestmodseq} for info in infos]
        self._event("folders", {"folders": folders})

    def _changed(self, name: str) -> None:
        """A change notice for folder ``name``: flush soon, at most once per ``coalesce``."""
        if not self._running:
            return
        self._pending.add(name)
        if self._flush_call is None:
            now = float(self.hub.clock.seconds())
            delay = max(0.0, self._last_flush + self.hub.coalesce - now)
            self._flush_call = self.hub.clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self._last_flush = float(self.hub.clock.seconds())
        pending, self._pending = self._pending, set()
        self._guard(self._send_changes, pending)

    def _send_changes(self, names: set[str]) -> None:
        updates = []
        for name in sorted(names):
            try:
                info = self.account.folder(name).info()
            except NoSuchFolder:  # deleted or renamed: the folder list changed
                self._snapshot()
                return
            counters = _counters(info)
            if counters != self._sent.get(name):
                updates.append(counters)
        for counters in updates:
            self._sent[counters["folder"]] = counters
            self._event("folder", counters)

    def _tick(self) -> None:
        """Keep-alive, the poll for what notices do not tell (rule 3), and now and then
        the check of the credentials (rule 5)."""
        if not self._paused:
            self._write(": keep-alive\n\n")
        self._guard(self._poll)
        now = float(self.hub.clock.seconds())
        if (self._running and self.allowed is not None and not self._checking
                and now - self._last_check >= self.hub.recheck):
            self._last_check = now
            self._checking = True
            checked = maybeDeferred(self.allowed)
            checked.addCallbacks(self._checked, self._check_failed)

    def _checked(self, still: object) -> None:
        self._checking = False
        if not still and self._running:
            log.info("event stream of {user} ended: its credentials are gone", user=self.user)
            self._end()

    def _check_failed(self, failure: Failure) -> None:
        self._checking = False
        log.failure("event stream of {user}: credential check failed", failure, user=self.user)
        if self._running:
            self._end()

    def _poll(self) -> None:
        infos = self.account.list_folders()
        if {info.name for info in infos} != set(self._unwatch):
            self._snapshot()
            return
        for info in infos:
            counters = _counters(info)
            if counters != self._sent.get(info.name):
                self._sent[info.name] = counters
                self._event("folder", counters)

    def _guard(self, step: Callable[..., None], *args: Any) -> None:
        """Run ``step``; a store failure (the account deleted, the index gone) ends the
        stream, logged, never a traceback to the client."""
        if not self._running:
            return
        try:
            step(*args)
        except Exception as error:
            log.info("event stream of {user} ended: {error!r}", user=self.user, error=error)
            self._end()


def events(call: Call) -> Response:
    """``GET /events``: see the module docstring."""
    assert call.user is not None
    user = call.user
    hub = hub_of(call.context)
    account = account_of(call)  # NoSuchUser -> 404 before anything is sent
    if call.request.method == b"HEAD":
        return Response(200, body=b"", content_type=CONTENT_TYPE, headers=STREAM_HEADERS)
    if hub.full(user):
        raise Problem(
            429, "Too Many Requests",
            f"at most {hub.max_streams} live update streams may be open per user",
            headers={"Retry-After": str(max(1, hub.retry // 1000))},
        )
    last_id = _last_event_id(call.request) or 0
    context, token, ip = call.context, call.token, call.client_ip

    async def allowed() -> bool:
        store, directory = context.store, context.directory
        if not store.has_account(user):
            return False
        if directory is not None and directory.get_user(user) is None:
            return False
        if token is not None:
            owner = await context.credentials.check_token(token, "api", ip)
        elif context.session is not None:
            owner = await maybeDeferred(context.session, call.request)
        else:
            owner = None
        return owner is not None and str(owner) == user

    def stream(request: Any) -> Deferred[None]:
        check = lambda: Deferred.fromCoroutine(allowed())  # noqa: E731
        return EventStream(hub, account, user, request, last_id, check).start()

    return Response(200, content_type=CONTENT_TYPE, headers=STREAM_HEADERS, stream=stream)


ROUTES: list[Route] = [
    Route("GET", "/events", events,
          "Live updates of the account's folders (text/event-stream: Server-Sent Events)",
          tag="mail", errors=(429,),
          response={"type": "string",
                    "description": "text/event-stream: event folders {folders: [...]} "
                                   "first, then event folder {folder, exists, unseen, "
                                   "uidnext, highestmodseq} per change; ': keep-alive' "
                                   "comments"}),
]
