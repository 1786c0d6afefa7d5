"""``GET /events`` (Server-Sent Events) through real HTTP: treq reads the stream unbuffered
while the test changes the account through the store, as SMTP delivery and IMAP do."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest_twisted
import treq
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock, deferLater

from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import SEEN, Address, Envelope, FlagMode
from mailserver.web.api.events import EventHub, EventStream, _last_event_id

ALICE, PASSWORD = "alice@example.test", "pw-alice-1"
#: Seconds before a wait is given up as a failure (no test depends on how fast it is).
PATIENCE = 15.0


class Closed(Exception):
    """Raised from the body collector: treq then drops the connection."""


class EventReader:
    """Parses the event stream as it arrives; :meth:`next` waits for the next record."""

    def __init__(self) -> None:
        self.buffer = b""
        self.records: list[dict[str, Any]] = []
        self.cursor = 0
        self.closing = False
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[dict[str, Any]]]] = []

    def feed(self, data: bytes) -> None:
        if self.closing:
            raise Closed()
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            record: dict[str, Any] = {}
            for line in block.decode("utf-8").split("\n"):
                field, _, value = line.partition(":")
                record.setdefault(field or "comment", value.removeprefix(" "))
            if "data" in record:
                record["json"] = json.loads(record["data"])
            self.records.append(record)
        self._wake()

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            wanted, deferred = waiter
            found = self._find(wanted)
            if found is not None:
                self._waiters.remove(waiter)
                deferred.callback(found)

    def _find(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        while self.cursor < len(self.records):
            record = self.records[self.cursor]
            self.cursor += 1
            if wanted(record):
                return record
        return None

    def next(self, wanted: Callable[[dict[str, Any]], bool]) -> Deferred[dict[str, Any]]:
        """The next record (after those already returned) that ``wanted`` accepts."""
        found = self._find(wanted)
        deferred: Deferred[dict[str, Any]] = Deferred()
        if found is not None:
            deferred.callback(found)
            return deferred
        self._waiters.append((wanted, deferred))
        return deferred.addTimeout(PATIENCE, reactor)

    def event(self, kind: str, folder: str | None = None) -> Deferred[dict[str, Any]]:
        return self.next(lambda r: r.get("event") == kind
                         and (folder is None or r["json"].get("folder") == folder))


async def open_stream(api: Any, token: str, headers: dict[str, str] | None = None
                      ) -> tuple[Any, EventReader, Deferred[None]]:
    response = await treq.get(api.url("/events"), headers={**api.bearer(token), **(headers or {})},
                              unbuffered=True, pool=api.pool)
    reader = EventReader()
    done = treq.collect(response, reader.feed) if response.code == 200 else Deferred()
    return response, reader, done


async def eventually(check: Callable[[], bool]) -> None:
    """Wait (on the reactor) until ``check()``; fail after PATIENCE seconds."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        await deferLater(reactor, 0.01, lambda: None)


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "bob@example.net"
    message["To"] = ALICE
    message["Subject"] = subject
    message.set_content("hello\n")
    return message.as_bytes()


async def _signed_in(api: Any) -> str:
    await api.add_user(ALICE, PASSWORD)
    await api.storage.store.create_account(ALICE)
    return str(await api.login(ALICE, PASSWORD))


class CountingStore:
    """The real store, counting the watchers its accounts hold."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.live = 0

    def account(self, address: str) -> Any:
        return CountingAccount(self, self.store.account(address))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class CountingAccount:
    def __init__(self, owner: CountingStore, account: Any) -> None:
        self.owner = owner
        self.account = account

    def __getattr__(self, name: str) -> Any:
        return getattr(self.account, name)

    def watch(self, name: str, callback: Callable[[], None]) -> Callable[[], None]:
        unwatch = self.account.watch(name, callback)
        self.owner.live += 1
        done = []

        def stop() -> None:
            if not done:
                done.append(True)
                self.owner.live -= 1
            unwatch()

        return stop


async def _flush_due(clock: Clock) -> None:
    """Wait until a change notice has scheduled a flush on ``clock`` (besides the
    keep-alive loop, the only other call of a hub without ``max_age``)."""
    await eventually(lambda: len(clock.getDelayedCalls()) == 2)


async def _close(reader: EventReader, done: Deferred[None], clock: Clock | None = None) -> None:
    """Drop the connection: the collector raises on the next bytes (a keep-alive)."""
    reader.closing = True
    if clock is not None:
        clock.advance(25)
    try:
        await done.addTimeout(PATIENCE, reactor)
    except Closed:
        pass


@pytest_twisted.ensureDeferred
async def test_stream_starts_with_retry_and_a_folders_snapshot(api: Any) -> None:
    """The stream is text/event-stream, unbuffered and uncached; it opens with ``retry:``
    and an ``event: folders`` listing every folder with its counters."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock)
    response, reader, done = await open_stream(api, token)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream"]
    assert response.headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert response.headers.getRawHeaders(b"x-accel-buffering") == [b"no"]
    first = await reader.next(lambda r: True)
    assert first == {"retry": "5000"}
    snapshot = await reader.event("folders")
    assert snapshot["id"] == "1"
    names = [f["name"] for f in snapshot["json"]["folders"]]
    assert names[0] == "INBOX" and "Sent" in names
    inbox = snapshot["json"]["folders"][0]
    assert inbox["exists"] == 0 and inbox["highestmodseq"] >= 0
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_a_delivery_and_a_flag_change_are_folder_events(api: Any) -> None:
    """A message delivered into INBOX (LocalDeliveryTarget, as SMTP delivers) gives an
    ``event: folder`` with the new counts; setting \\Seen gives another."""
    token = await _signed_in(api)
    api.context.events = EventHub(reactor, coalesce=0.0, keep_alive=0.05)
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")

    target = LocalDeliveryTarget(api.storage.store, api.storage.directory)
    delivery = target.start(Envelope(sender=None, received_at=time.time()))
    await delivery.add_recipient(Address("alice", "example.test"))
    await delivery.body(io.BytesIO(_message("first")))
    await delivery.commit()
    delivered = await reader.event("folder", "INBOX")
    counters = delivered["json"]
    assert (counters["exists"], counters["unseen"], counters["uidnext"]) == (1, 1, 2)
    assert delivered["id"] == "2"

    inbox = api.storage.store.account(ALICE).folder("INBOX")
    await inbox.store_flags([1], {SEEN}, FlagMode.ADD)
    seen = (await reader.event("folder", "INBOX"))["json"]
    assert (seen["exists"], seen["unseen"]) == (1, 0)
    assert seen["highestmodseq"] > counters["highestmodseq"]
    await _close(reader, done)


@pytest_twisted.ensureDeferred
async def test_bursts_coalesce_into_one_event(api: Any) -> None:
    """Several appends within one coalescing interval (the hub's clock stands still) give
    one event, with the final count."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock, max_age=None)  # coalesce 0.2 s on a still clock
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    inbox = api.storage.store.account(ALICE).folder("INBOX")
    await inbox.append(io.BytesIO(_message("one")))
    await _flush_due(clock)
    clock.advance(0)  # the first notice flushes at once (nothing was sent before)
    assert (await reader.event("folder", "INBOX"))["json"]["exists"] == 1
    for n in range(3):
        await inbox.append(io.BytesIO(_message(f"burst {n}")))
    await deferLater(reactor, 0.05, lambda: None)  # let the notices arrive (callLater(0))
    clock.advance(0.2)
    burst = await reader.event("folder", "INBOX")
    assert burst["json"]["exists"] == 4
    clock.advance(0.2)
    assert not [r for r in reader.records[reader.cursor:] if r.get("event") == "folder"]
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_folder_list_changes_send_a_folders_event(api: Any) -> None:
    """A deleted folder (noticed at once) and a created one (found by the keep-alive
    poll) each give an ``event: folders`` with the new list."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock, coalesce=0.0, max_age=None)
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    account = api.storage.store.account(ALICE)

    await account.delete_folder("Archive")
    await _flush_due(clock)
    clock.advance(0)
    gone = await reader.event("folders")
    assert "Archive" not in [f["name"] for f in gone["json"]["folders"]]

    await account.create_folder("Projects")
    clock.advance(25)
    await reader.next(lambda r: r.get("comment") == "keep-alive")
    created = await reader.event("folders")
    assert "Projects" in [f["name"] for f in created["json"]["folders"]]
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_keep_alive_comments(api: Any) -> None:
    """Every ``keep_alive`` seconds on the hub's clock the stream sends a comment line."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock, keep_alive=7.0)
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    for _ in range(2):
        clock.advance(7.0)
        record = await reader.next(lambda r: "comment" in r)
        assert record == {"comment": "keep-alive"}
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_closing_the_connection_removes_every_watcher(api_server: Any) -> None:
    """When the client goes away the stream is cancelled: its watchers, loop and slot are
    gone, and a later delivery wakes nothing."""
    api = await api_server()
    counting = CountingStore(api.storage.store)
    api.context.store = counting
    clock = Clock()
    hub = EventHub(clock)
    api.context.events = hub
    token = await _signed_in(api)
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    folders = len(api.storage.store.account(ALICE).list_folders())
    assert counting.live == folders and hub.open_streams(ALICE) == 1

    await _close(reader, done, clock)
    await eventually(lambda: hub.open_streams(ALICE) == 0)
    assert counting.live == 0
    assert clock.getDelayedCalls() == []
    await api.storage.store.account(ALICE).folder("INBOX").append(io.BytesIO(_message("x")))
    await deferLater(reactor, 0.05, lambda: None)
    assert clock.getDelayedCalls() == []  # no flush scheduled by a leftover watcher


@pytest_twisted.ensureDeferred
async def test_streams_per_user_are_bounded(api: Any) -> None:
    """Beyond ``max_streams`` open streams a user gets a 429 problem; closing one frees a
    slot."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock, max_streams=2)
    streams = [await open_stream(api, token) for _ in range(2)]
    for _, reader, _ in streams:
        await reader.event("folders")
    refused = await api.call("GET", "/events", token=token)
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert "2 live update streams" in refused.json["detail"]
    assert refused.headers["retry-after"] == "5"

    _, reader, done = streams[0]
    await _close(reader, done, clock)
    await eventually(lambda: api.context.events.open_streams(ALICE) == 1)
    response, again, again_done = await open_stream(api, token)
    assert response.code == 200
    await again.event("folders")
    await _close(again, again_done, clock)
    _, reader, done = streams[1]
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_last_event_id_continues_the_ids_after_a_snapshot(api: Any) -> None:
    """A reconnect with ``Last-Event-ID: 41`` gets the snapshot first, as id 42; an id that
    is not a number is ignored."""
    token = await _signed_in(api)
    clock = Clock()
    api.context.events = EventHub(clock)
    _, reader, done = await open_stream(api, token, {"Last-Event-ID": "41"})
    first = await reader.next(lambda r: "id" in r)
    assert (first["id"], first["event"]) == ("42", "folders")
    await _close(reader, done, clock)
    _, reader, done = await open_stream(api, token, {"Last-Event-ID": "x'; DROP"})
    first = await reader.next(lambda r: "id" in r)
    assert (first["id"], first["event"]) == ("1", "folders")
    await _close(reader, done, clock)


@pytest_twisted.ensureDeferred
async def test_max_age_ends_the_stream_cleanly(api: Any) -> None:
    """After ``max_age`` seconds the server ends the response (the client reconnects with
    its current credentials) and frees the slot."""
    token = await _signed_in(api)
    clock = Clock()
    hub = EventHub(clock, max_age=60.0, keep_alive=25.0)
    api.context.events = hub
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    clock.advance(60.0)
    await done.addTimeout(PATIENCE, reactor)  # the body ended normally
    assert hub.open_streams(ALICE) == 0


@pytest_twisted.ensureDeferred
async def test_refusals(api: Any) -> None:
    """No token: 401; a user without a mailbox: 404; HEAD answers at once."""
    assert (await api.call("GET", "/events")).status == 401
    await api.add_user("nobox@example.test", "pw-nobox-1")
    nobox = await api.login("nobox@example.test", "pw-nobox-1")
    missing = await api.call("GET", "/events", token=nobox)
    assert missing.status == 404
    token = await _signed_in(api)
    head = await api.call("HEAD", "/events", token=token)
    assert head.status == 200 and head.headers["content-type"] == "text/event-stream"
    document = (await api.call("GET", "/openapi.json")).json
    assert "429" in document["paths"]["/events"]["get"]["responses"]


@pytest_twisted.ensureDeferred
async def test_a_revoked_token_ends_the_stream(api: Any) -> None:
    """At the next credential check after the token is revoked, the stream ends (a
    reconnect then gets its 401); a valid token keeps it open."""
    token = await _signed_in(api)
    clock = Clock()
    hub = EventHub(clock, recheck=0.0)
    api.context.events = hub
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    clock.advance(25)  # checked: still valid
    await reader.next(lambda r: r.get("comment") == "keep-alive")
    await eventually(lambda: not any(s._checking for s in hub._open.get(ALICE, ())))
    assert hub.open_streams(ALICE) == 1
    assert await api.credentials.revoke_token(token)
    await eventually(lambda: not any(s._checking for s in hub._open.get(ALICE, ())))
    clock.advance(25)
    await done.addTimeout(PATIENCE, reactor)
    assert hub.open_streams(ALICE) == 0
    assert (await api.call("GET", "/events", token=token)).status == 401


@pytest_twisted.ensureDeferred
async def test_a_deleted_account_ends_the_stream(api: Any) -> None:
    """When the mailbox account is deleted the stream ends at the next check."""
    token = await _signed_in(api)
    clock = Clock()
    hub = EventHub(clock, recheck=0.0)
    api.context.events = hub
    _, reader, done = await open_stream(api, token)
    await reader.event("folders")
    await api.storage.store.delete_account(ALICE)
    clock.advance(25)
    await done.addTimeout(PATIENCE, reactor)
    assert hub.open_streams(ALICE) == 0


class FakeRequest:
    """Just enough of a twisted.web Request for an EventStream."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def events(self) -> list[str]:
        text = b"".join(self.written).decode("utf-8")
        return [line[len("event: "):] for line in text.split("\n") if line.startswith("event: ")]


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_gets_a_snapshot_instead_of_a_backlog(
    storage: Any,
) -> None:
    """While twisted.web has paused the stream nothing is written; on resume the client
    gets one ``folders`` snapshot with the current counters."""
    await storage.store.create_account(ALICE)
    account = storage.store.account(ALICE)
    clock = Clock()
    request = FakeRequest()
    stream = EventStream(EventHub(clock, coalesce=0.0), account, ALICE, request)
    done = stream.start()
    assert request.producer is stream and request.events() == ["folders"]
    stream.pauseProducing()
    for n in range(3):
        await account.folder("INBOX").append(io.BytesIO(_message(f"unread {n}")))
    await deferLater(reactor, 0, lambda: None)
    clock.advance(0)
    clock.advance(25)  # no keep-alive either while paused
    assert request.events() == ["folders"] and len(request.written) == 2
    stream.resumeProducing()
    assert request.events() == ["folders", "folders"]
    last = json.loads(b"".join(request.written).decode().rstrip("\n").rsplit("data: ", 1)[1])
    assert last["folders"][0]["exists"] == 3
    done.cancel()
    assert request.producer is None and clock.getDelayedCalls() == []
    await done.addErrback(lambda f: f.trap(CancelledError))


@given(st.binary(max_size=30))
def test_last_event_id_is_a_number_or_ignored(raw: bytes) -> None:
    """Any Last-Event-ID header gives None or a non-negative int of at most 18 digits."""

    class Request:
        @staticmethod
        def getHeader(name: bytes) -> bytes:
            return raw

    value = _last_event_id(Request())
    assert value is None or 0 <= value < 10**18
    if value is not None:
        assert raw.strip().isdigit() and int(raw.strip()) == value
