"""The message trace log over a real index, with time from a task.Clock: records are found
by Message-ID, queue id and session id through the index, linked across a message's path,
written in batches (one write per flush, found before it), and pruned by age and count."""

from __future__ import annotations

import itertools

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mailserver.db import Database, schema
from mailserver.db.schema import SCHEMA_VERSION, SUBDBS
from mailserver.interfaces import ITraceLog
from mailserver.trace import log as tracelog
from mailserver.trace.log import TraceLog, key_of


def path_of_one_message(trace: TraceLog) -> None:
    """A message accepted over SMTP (id SMTP1) into the spool (Q1), tried twice, bounced
    with a DSN that was queued as Q2."""
    trace.add("smtp", ["q:SMTP1", "s:SESS1"],
              {"queue_id": "SMTP1", "result": "accepted", "reply": "250 2.0.0 OK"})
    trace.add("verdict", ["q:SMTP1"], {"action": "accept", "score": 0.5})
    trace.add("queued", ["q:Q1", "q:SMTP1", "m:<a@x>"], {"queue_id": "Q1"})
    trace.add("delivery", ["q:Q1"], {"rcpt": "r@remote", "result": "deferred"})
    trace.add("delivery", ["q:Q1"], {"rcpt": "r@remote", "result": "failed"})
    trace.add("queued", ["q:Q2", "m:<Q1.abcd@mx>", "q:Q1"], {"queue_id": "Q2"})
    trace.add("delivery", ["q:Q2"], {"rcpt": "s@x", "result": "delivered"})


def kinds(found: dict) -> list[str]:
    return [record["kind"] for record in found["records"]]


@pytest_twisted.ensureDeferred
async def test_provides_the_interface_and_the_schema_has_its_tables(storage) -> None:
    """TraceLog provides ITraceLog; schema version 8 brings the trace and trace_keys tables."""
    trace = TraceLog(storage.db, Clock())
    assert verifyObject(ITraceLog, trace)
    assert SCHEMA_VERSION >= 8 and {b"trace", b"trace_keys"} <= set(SUBDBS)
    assert storage.db.schema_version == SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_one_query_by_message_id_or_any_queue_id_returns_the_whole_path(storage) -> None:
    """By Message-ID (with or without brackets), by the SMTP id, by the spool queue id and
    by the session id, the same records come back in time order, DSN included."""
    clock = Clock()
    trace = TraceLog(storage.db, clock)
    clock.advance(1000)
    path_of_one_message(trace)
    await trace.flush()
    whole = ["smtp", "verdict", "queued", "delivery", "delivery", "queued", "delivery"]
    for query in ({"message_id": "<a@x>"}, {"message_id": "a@x"}, {"queue_id": "smtp1"},
                  {"queue_id": "Q1"}, {"queue_id": "SESS1"}):
        found = trace.find(**query)
        assert kinds(found) == whole, query
        assert found["complete"] is True
    assert "keys" not in trace.find(queue_id="Q1")["records"][0]
    assert trace.find(message_id="<other@x>") == {"records": [], "complete": True}


@pytest_twisted.ensureDeferred
async def test_a_session_key_is_not_followed_from_one_message_to_the_next(storage) -> None:
    """Two messages of one SMTP connection: a Message-ID finds its own message only; the
    session id finds both."""
    trace = TraceLog(storage.db, Clock())
    trace.add("smtp", ["q:A1", "s:S", "m:one@x"], {"queue_id": "A1"})
    trace.add("smtp", ["q:A2", "s:S", "m:two@x"], {"queue_id": "A2"})
    await trace.flush()
    assert [r["queue_id"] for r in trace.find(message_id="two@x")["records"]] == ["A2"]
    assert [r["queue_id"] for r in trace.find(queue_id="S")["records"]] == ["A1", "A2"]


@pytest_twisted.ensureDeferred
async def test_the_limit_cuts_the_answer_and_says_so(storage) -> None:
    trace = TraceLog(storage.db, Clock())
    for n in range(10):
        trace.add("delivery", ["q:Q9"], {"attempt": n})
    await trace.flush()
    found = trace.find(queue_id="Q9", limit=4)
    assert len(found["records"]) == 4 and found["complete"] is False


def test_exactly_one_key_is_asked_for(storage) -> None:
    trace = TraceLog(storage.db, Clock())
    with pytest.raises(ValueError):
        trace.find()
    with pytest.raises(ValueError):
        trace.find(message_id="a@x", queue_id="Q1")


@pytest_twisted.ensureDeferred
async def test_records_are_written_in_batches_and_found_before_they_are(storage) -> None:
    """add() writes nothing by itself: the records wait for flush_interval (one index write
    for all of them), or until a batch is full; meanwhile find() already sees them."""
    clock = Clock()
    writes: list[int] = []
    real_write = storage.db.write

    def counting(function):
        writes.append(1)
        return real_write(function)

    storage.db.write = counting
    trace = TraceLog(storage.db, clock, flush_interval=2.0, batch=100)
    for n in range(5):
        trace.add("delivery", ["q:QB"], {"attempt": n})
    assert writes == [] and trace.stats()["pending"] == 5
    assert len(trace.find(queue_id="QB")["records"]) == 5
    clock.advance(2.0)
    assert writes == [1]
    await trace.flush()
    assert trace.stats()["records"] == 5 and trace.stats()["pending"] == 0
    for n in range(100):
        trace.add("delivery", ["q:QC"], {"attempt": n})
    assert len(writes) == 2  # the full batch went at once, before any timer
    await trace.flush()
    assert len(trace.find(queue_id="QC")["records"]) == 100


@pytest_twisted.ensureDeferred
async def test_a_backlog_is_bounded_and_the_loss_counted(storage) -> None:
    trace = TraceLog(storage.db, Clock(), batch=1000, max_pending=3)
    for n in range(5):
        trace.add("delivery", ["q:QD"], {"attempt": n})
    assert trace.stats()["dropped"] == 2
    await trace.flush()
    assert [r["attempt"] for r in trace.find(queue_id="QD")["records"]] == [2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_pruning_drops_records_older_than_max_age_with_their_index(storage) -> None:
    clock = Clock()
    trace = TraceLog(storage.db, clock, max_age=100.0)
    clock.advance(1000)
    trace.add("smtp", ["q:OLD", "m:old@x"], {"queue_id": "OLD"})
    clock.advance(60)
    trace.add("smtp", ["q:NEW", "m:new@x"], {"queue_id": "NEW"})
    await trace.flush()
    clock.advance(50)  # OLD is 110 s old, NEW 50 s
    assert await trace.prune() == 1
    assert trace.find(queue_id="OLD")["records"] == []
    assert [r["queue_id"] for r in trace.find(message_id="new@x")["records"]] == ["NEW"]
    with storage.db.read() as txn:
        assert txn.count(b"trace_keys") == 2  # only NEW's two keys are left
    assert trace.stats()["records"] == 1 and trace.stats()["oldest"] == 1060.0


@pytest_twisted.ensureDeferred
async def test_pruning_keeps_at_most_max_records_oldest_dropped_first(storage) -> None:
    clock = Clock()
    trace = TraceLog(storage.db, clock, max_records=3)
    for n in range(5):
        clock.advance(1)
        trace.add("delivery", [f"q:P{n}"], {"attempt": n})
    await trace.flush()
    assert await trace.prune() == 2
    assert [trace.find(queue_id=f"P{n}")["records"] != [] for n in range(5)] == [
        False, False, True, True, True]


@pytest_twisted.ensureDeferred
async def test_pruning_runs_on_the_clock_a_bounded_batch_per_write(storage, monkeypatch) -> None:
    """start() prunes at once and then every prune_interval; while a full batch was
    deleted the next write follows at once (each write deletes at most PRUNE_BATCH)."""
    monkeypatch.setattr(tracelog, "PRUNE_BATCH", 2)
    clock = Clock()
    counter = itertools.count()
    trace = TraceLog(storage.db, clock, max_age=10.0, prune_interval=60.0,
                     random=lambda n: next(counter).to_bytes(n, "big"))
    for n in range(5):
        trace.add("delivery", ["q:R"], {"attempt": n})
    await trace.flush()
    clock.advance(11)  # all five are now too old
    trace.start()
    left = []
    for _ in range(3):
        clock.advance(0)
        assert trace._pruning is not None
        await trace._pruning
        left.append(trace.stats()["records"])
    assert left == [3, 1, 0]
    assert trace._prune_timer is not None and trace._prune_timer.getTime() == clock.seconds() + 60
    await trace.stop()
    assert trace._prune_timer is None


@pytest_twisted.ensureDeferred
async def test_stop_writes_what_is_pending(storage) -> None:
    trace = TraceLog(storage.db, Clock(), flush_interval=3600.0)
    trace.start()
    trace.add("smtp", ["q:LAST"], {"queue_id": "LAST"})
    await trace.stop()
    assert trace.stats()["records"] == 1


def test_keys_are_normalised() -> None:
    assert key_of("m", " <Id@Example> ") == "m:Id@Example"
    assert key_of("q", "abc123") == "q:ABC123"
    assert key_of("s", "s1") == "s:S1"


@pytest_twisted.ensureDeferred
async def test_an_index_at_version_7_is_upgraded_with_an_empty_trace(tmp_path) -> None:
    """Version 8 adds the trace tables: an index written by the previous program opens at
    the current version, keeps its data, and records and finds trace records."""
    path = str(tmp_path / "index")
    db = Database.open(path, map_size=16 << 20, reactor=reactor)
    db.write_sync(lambda txn: (txn.put_json(b"meta", b"schema_version", 7),
                               txn.put_json(b"meta", b"kept", "yes")))
    await db.close()
    db = Database.open(path, map_size=16 << 20, reactor=reactor)
    try:
        assert db.schema_version == schema.SCHEMA_VERSION >= 8
        with db.read() as txn:
            assert txn.get_json(b"meta", b"kept") == "yes"
            assert txn.count(b"trace") == txn.count(b"trace_keys") == 0
        trace = TraceLog(db, Clock())
        trace.add("queued", ["q:Q8"], {"queue_id": "Q8"})
        await trace.flush()
        assert [r["queue_id"] for r in trace.find(queue_id="Q8")["records"]] == ["Q8"]
    finally:
        await db.close()
