"""A delivering process for the kill -9 tests (run as a script, not collected by pytest).

``python deliver_loop.py DATA_DIR COUNT SIZE [INFLIGHT]`` opens the real store in DATA_DIR
(as the server does: ``DATA_DIR/index`` + ``DATA_DIR/mail``, fsync on), makes sure the
account ``kill@example.org`` exists, then delivers COUNT messages of about SIZE bytes through
the store's final-delivery target, INFLIGHT at a time. It prints ``ACK <n>`` and flushes the
moment a delivery's commit Deferred fires: that is the acknowledgement the store promises to
keep. The test kills this process with SIGKILL at a moment of its choosing.
"""

from __future__ import annotations

import io
import os
import sys

from twisted.internet import defer, task

from mailserver.auth.directory import LmdbDirectory
from mailserver.db import Database
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import Address, Envelope

ADDRESS = "kill@example.org"


def message(n: int, size: int) -> bytes:
    """Message n: a header naming n, then a body of a known pattern (checkable byte for
    byte after the crash)."""
    head = (
        f"From: loop@example.net\r\nSubject: kill test {n}\r\n"
        f"Message-ID: <{n}@kill.test>\r\n\r\n"
    )
    line = f"message {n} ".encode() * 8 + b"\r\n"
    body = line * max(1, size // len(line))
    return head.encode() + body


async def run(reactor: object, data_dir: str, count: int, size: int, inflight: int) -> None:
    db = Database.open(os.path.join(data_dir, "index"), map_size=1 << 30, reactor=reactor)
    directory = LmdbDirectory(db, reactor=reactor, bcrypt_cost=4)
    store = MaildirStore(db, os.path.join(data_dir, "mail"), reactor=reactor)
    if not directory.has_domain("example.org"):
        await directory.add_domain("example.org")
    if directory.get_user(ADDRESS) is None:
        await directory.add_user(ADDRESS, "pw")
    if not store.has_account(ADDRESS):
        await store.create_account(ADDRESS)
    target = LocalDeliveryTarget(store, directory)
    print("READY", flush=True)

    async def deliver(n: int) -> None:
        delivery = target.start(Envelope(sender=Address("loop", "example.net")))
        await delivery.add_recipient(Address("kill", "example.org"))
        await delivery.body(io.BytesIO(message(n, size)))
        await delivery.commit()
        print(f"ACK {n}", flush=True)

    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            await deliver(n)

    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(inflight)], consumeErrors=True
    )
    await store.close()
    await db.close()
    print("DONE", flush=True)


def main() -> None:
    data_dir, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    inflight = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, data_dir, count, size, inflight)))


if __name__ == "__main__":
    main()
