"""The spam_classifications log over a real index."""

from __future__ import annotations

import itertools

import pytest_twisted
from twisted.internet.task import Clock

from mailserver.filter.classifications import ClassificationLog


@pytest_twisted.ensureDeferred
async def test_entries_come_back_newest_first_and_filtered(storage) -> None:
    clock = Clock()
    log = ClassificationLog(storage.db, clock)
    for n in range(5):
        clock.advance(1)
        await log.record(
            {"source": "filter", "message_id": f"<{n}@x>", "recipients": [f"u{n % 2}@x"],
             "is_spam": n % 2 == 0}
        )
    newest = log.recent(3)
    assert [e["message_id"] for e in newest] == ["<4@x>", "<3@x>", "<2@x>"]
    assert newest[0]["time"] == 5.0
    assert [e["message_id"] for e in log.recent(message_id="<1@x>")] == ["<1@x>"]
    assert [e["message_id"] for e in log.recent(address="u1@x")] == ["<3@x>", "<1@x>"]


@pytest_twisted.ensureDeferred
async def test_same_millisecond_entries_never_collide(storage) -> None:
    counter = itertools.count()
    log = ClassificationLog(storage.db, Clock(), random=lambda n: next(counter).to_bytes(n, "big"))
    for n in range(3):
        await log.record({"source": "user", "message_id": f"<{n}@x>"})
    assert len(log.recent(10)) == 3


@pytest_twisted.ensureDeferred
async def test_the_log_is_bounded_oldest_dropped_first(storage) -> None:
    clock = Clock()
    log = ClassificationLog(storage.db, clock, max_entries=20)
    for n in range(40):
        clock.advance(1)
        await log.record({"source": "filter", "message_id": f"<{n}@x>"})
    kept = log.recent(100)
    assert len(kept) <= 20
    assert kept[0]["message_id"] == "<39@x>"
    assert all(int(e["message_id"][1:-3]) >= 20 for e in kept)
