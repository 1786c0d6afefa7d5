"""The store: deliveries/s into one account, and listing 100,000 messages' flags, each against
a peer measured in the same run on the same file system.

    .venv/bin/python bench/store_bench.py [--messages N] [--concurrency 32] [--repeat 3]
                                          [--warmup 50] [--threadpool T]
                                          [--list-messages 100000] [--json PATH] [--quick]
                                          [--workdir DIR] [--keep]

1. **Deliveries/s.** N copies of a realistic ~4 KiB RFC 5322 message (multipart/alternative,
   DKIM-Signature, Received lines) go to one account, one at a time and then with
   ``--concurrency`` in flight, through

   - **ours**: :class:`~mailserver.store.local.LocalDeliveryTarget` on a
     :class:`~mailserver.store.maildir_store.MaildirStore` with fsync on, the path the SMTP
     server takes after DATA: parse once, ``tmp/`` + fsync + rename into ``new/`` + fsync of
     ``new/``, index commit with fsync (group commit), rename into ``cur/``. The reactor's
     default thread pool is used, as in the server;
   - **stdlib**: Python's ``mailbox.Maildir.add`` (fsyncs the file, but *not* the ``new/``
     directory after the link, so a crash can lose an acknowledged message: not durable);
   - **durable**: a careful naive delivery agent: write ``tmp/``, fsync, rename into ``new/``,
     fsync ``new/``, one message at a time per thread (no index at all).

   The peers run in a pool of ``--concurrency`` threads when more than one is in flight.
   Each run is interleaved (ours, stdlib, durable, in a rotating order) and repeated; the
   figures are medians.

2. **Listing flags.** One folder is filled with ``--list-messages`` messages through the
   store's own ``IMailbox.append`` (fsync off for the fill only; flags mixed as in a real
   mailbox: most \\Seen, some \\Answered, \\Flagged, $Forwarded), so the index and the Maildir
   files agree. Then the time to list every UID with its flags and modseq through
   ``IMailbox.flags()`` (the range read IMAP ``FETCH 1:* FLAGS`` uses) is measured *cold-ish*
   (the index environment reopened just before; the OS page cache is warm) and *warm*,
   against the **maildir** peer: ``os.listdir(cur) + os.listdir(new)`` of the same folder on
   disk and parsing the ``:2,<letters>`` info of every file name, which is what a server
   without an index does (it gets no UIDs and no modseqs, and keywords other than the
   letters are invisible to it).

Every ratio is "how many times faster ours is" (our msgs/s over the peer's, or the peer's
seconds over ours): above 1 ours is faster. Absolute figures depend on the machine and its
load; only the same-run ratios are meant to be compared between runs. No figure here is a
pass/fail threshold.
"""

from __future__ import annotations

import argparse
import collections
import gc
import io
import itertools
import json
import mailbox
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from bench import machine, servers  # noqa: E402
from mailserver.auth.directory import LmdbDirectory  # noqa: E402
from mailserver.db import Database  # noqa: E402
from mailserver.store.local import LocalDeliveryTarget  # noqa: E402
from mailserver.store.maildir_store import MaildirStore  # noqa: E402
from mailserver.types import Address, Envelope, FlagInfo  # noqa: E402

DOMAIN = "example.org"
ADDRESS = f"alice@{DOMAIN}"
RECIPIENT = Address("alice", DOMAIN)
SENDER = Address("newsletter", "example.net")
MESSAGE_SIZE = 4096
#: The index may grow to this (address space reserved, not disk used).
MAP_SIZE = 8 << 30
#: Filling the listed folder (fsync off): distinct messages appended, FILL_CONCURRENCY in
#: flight, and the rest copied COPY_CHUNK at a time.
FILL_APPEND = 5000
FILL_CONCURRENCY = 64
COPY_CHUNK = 10_000
#: Maildir info letters -> IMAP flags, as a maildir-only server maps them (the peer's own
#: table, deliberately not imported from mailserver.store.maildir).
PEER_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}

Log = Callable[[str], None]


# -- the message --------------------------------------------------------------------------


def make_message(n: int, size: int = MESSAGE_SIZE) -> bytes:
    """Message ``n``: a realistic newsletter-style RFC 5322 message of about ``size`` bytes
    (trace and authentication headers, a DKIM signature, multipart/alternative with a
    quoted-printable text part and an HTML part)."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1_700_000_000 + n * 37))
    boundary = f"=_bench_{n:08d}_alt"
    head = (
        f"Received: from mail-out.example.net (mail-out.example.net [192.0.2.25])\r\n"
        f"\tby mx.example.org with ESMTPS id {n:012X}\r\n"
        f"\tfor <{ADDRESS}>; {date}\r\n"
        f"Received: from app.internal (app.internal [10.0.0.7])\r\n"
        f"\tby mail-out.example.net with ESMTP id B{n:011X}; {date}\r\n"
        f"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.net;\r\n"
        f"\tdkim=pass header.d=example.net header.s=s2024; dmarc=pass header.from=example.net\r\n"
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=s2024;\r\n"
        f"\th=from:to:subject:date:message-id:mime-version:content-type;\r\n"
        f"\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        f"\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaGFzIHRoZSByaWdodCBsZW5n\r\n"
        f"\t dGggZm9yIGEgMjA0OC1iaXQga2V5IHNvIHRoYXQgaGVhZGVycyBsb29rIHJlYWxpc3RpYyBp\r\n"
        f"\t biB0aGUgYmVuY2htYXJrIG1lc3NhZ2UgKG5vIG9uZSB2ZXJpZmllcyBpdCkuLi4uLi4uLi4u\r\n"
        f"\t LiBwYWRkaW5nIHBhZGRpbmcgcGFkZGluZyBwYWRkaW5nIHBhZGRpbmcgcGFkZGluZw==\r\n"
        f'From: "Example News" <news@example.net>\r\n'
        f"To: Alice <{ADDRESS}>\r\n"
        f"Subject: =?utf-8?q?Weekly_digest_n=C2=BA_{n}?=\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{n}.digest@example.net>\r\n"
        f"List-Unsubscribe: <https://example.net/u/{n}>, <mailto:unsub-{n}@example.net>\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        f"\r\n"
    )
    text_line = f"Item {n}: the quick brown fox jumps over the lazy dog =E2=80=94 read more.\r\n"
    html_line = f"<p>Item {n}: the <b>quick</b> brown fox jumps over the lazy dog.</p>\r\n"
    fixed = len(head) + 3 * len(boundary) + 220  # delimiters and part headers
    room = max(0, size - fixed)
    text = text_line * max(1, room * 2 // 5 // len(text_line))
    html = html_line * max(1, (room - len(text)) // len(html_line))
    body = (
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"{text}\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n"
        f"<html><body>\r\n{html}</body></html>\r\n"
        f"--{boundary}--\r\n"
    )
    return (head + body).encode()


def listing_flags(n: int) -> frozenset[str]:
    """The flags of the n-th message of the listing folder: a mailbox as people keep them
    (80% seen, 5% answered, 2% flagged, 1% forwarded)."""
    flags = set()
    if n % 10 < 8:
        flags.add("\\Seen")
    if n % 20 == 0:
        flags.update(("\\Seen", "\\Answered"))
    if n % 50 == 7:
        flags.add("\\Flagged")
    if n % 100 == 42:
        flags.add("$Forwarded")
    return frozenset(flags)


# -- ours ---------------------------------------------------------------------------------


class OurStore:
    """One data directory as the server opens it: ``index/`` (LMDB) and ``mail/``."""

    def __init__(self, reactor: Any, path: Path, fsync: bool) -> None:
        self.reactor = reactor
        self.path = path
        self.fsync = fsync
        self.db = Database.open(str(path / "index"), map_size=MAP_SIZE, reactor=reactor, sync=fsync)
        self.directory = LmdbDirectory(self.db, reactor=reactor, bcrypt_cost=4)
        self.store = MaildirStore(self.db, str(path / "mail"), reactor=reactor, fsync=fsync)

    async def provision(self) -> None:
        """The domain, the user and the account of the recipient."""
        if not self.directory.has_domain(DOMAIN):
            await self.directory.add_domain(DOMAIN)
        if self.directory.get_user(ADDRESS) is None:
            await self.directory.add_user(ADDRESS, "bench password")
        if not self.store.has_account(ADDRESS):
            await self.store.create_account(ADDRESS)

    def inbox_path(self) -> Path:
        return Path(self.store.account(ADDRESS).folder("INBOX").path)

    async def close(self) -> None:
        await self.store.close()
        await self.db.close()


async def deliver_ours(
    target: LocalDeliveryTarget, messages: list[bytes], concurrency: int
) -> float:
    """Deliver every message through the final-delivery transaction, ``concurrency`` at a
    time; the wall time until the last commit is durable."""
    pending = iter(messages)

    async def worker() -> None:
        for data in pending:
            delivery = target.start(Envelope(sender=SENDER, received_at=time.time()))
            await delivery.add_recipient(RECIPIENT)
            await delivery.body(io.BytesIO(data))
            await delivery.commit()

    started = time.perf_counter()
    await defer.gatherResults(
        [defer.ensureDeferred(worker()) for _ in range(concurrency)], consumeErrors=True
    )
    return time.perf_counter() - started


def list_ours(store: MaildirStore) -> list[FlagInfo]:
    """(uid, flags, modseq) of every message in the account's INBOX, through
    ``IMailbox.flags()``."""
    return list(store.account(ADDRESS).folder("INBOX").flags(1, None))


# -- peers --------------------------------------------------------------------------------


class StdlibMaildirPeer:
    """``mailbox.Maildir.add``: fsyncs the file, never the directory (not durable)."""

    name = "stdlib"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.maildir = mailbox.Maildir(str(path), factory=None, create=True)

    def deliver(self, data: bytes) -> None:
        for _attempt in range(10):
            try:
                self.maildir.add(data)
                return
            except mailbox.ExternalClashError:
                # Its names are time + pid + a class counter bumped without a lock, so two
                # threads in the same microsecond can pick the same one: retry as an LDA would.
                continue
        raise RuntimeError("mailbox.Maildir.add: name clash ten times in a row")


class DurableMaildirPeer:
    """What a careful simple LDA does per message: ``tmp/`` + fsync + rename into ``new/`` +
    fsync of ``new/``. No index, no parse, no ``cur/``."""

    name = "durable"

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._tmp = str(path / "tmp")
        self._new = str(path / "new")
        self._counter = itertools.count()
        self._host = platform.node().replace("/", "\\057").replace(":", "\\072") or "localhost"

    def deliver(self, data: bytes) -> None:
        now = time.time()
        name = (
            f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}"
            f"Q{next(self._counter)}T{threading.get_ident()}.{self._host}"
        )
        temporary = os.path.join(self._tmp, name)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, os.path.join(self._new, name))
        directory = os.open(self._new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def deliver_peer(
    deliver: Callable[[bytes], None], messages: list[bytes], concurrency: int
) -> float:
    """Run ``deliver`` over every message, in ``concurrency`` threads when above one."""
    if concurrency <= 1:
        started = time.perf_counter()
        for data in messages:
            deliver(data)
        return time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda _: None, range(concurrency)))  # warm the pool
        started = time.perf_counter()
        for _ in pool.map(deliver, messages):
            pass
        return time.perf_counter() - started


def list_maildir(path: Path) -> list[tuple[str, frozenset[str]]]:
    """The maildir peer: every (base name, flags) of ``cur/`` and ``new/`` from the names."""
    found = []
    for sub in ("cur", "new"):
        for name in os.listdir(os.path.join(path, sub)):
            base, sep, info = name.partition(":")
            flags: frozenset[str] = frozenset()
            if sep and info.startswith("2,"):
                flags = frozenset(PEER_LETTERS[c] for c in info[2:] if c in PEER_LETTERS)
            found.append((base, flags))
    return found


# -- the two measurements -----------------------------------------------------------------


def summarize(runs: list[tuple[float, float]], messages: int) -> dict[str, Any]:
    """Medians of (wall seconds, CPU seconds) runs of ``messages`` deliveries each."""
    rates = [messages / wall for wall, _cpu in runs]
    return {
        "messages": messages,
        "seconds": round(statistics.median(wall for wall, _cpu in runs), 4),
        "msgs_per_sec": round(statistics.median(rates), 1),
        "cpu_ms_per_msg": round(statistics.median(cpu for _w, cpu in runs) * 1000 / messages, 3),
        "runs_msgs_per_sec": [round(r, 1) for r in rates],
    }


async def bench_delivery(
    reactor: Any,
    workdir: Path,
    *,
    messages: int,
    concurrencies: list[int],
    repeat: int,
    warmup: int,
    log: Log,
) -> list[dict[str, Any]]:
    """Deliveries/s of ours and both peers at every concurrency: one row each."""
    ours = OurStore(reactor, workdir / "ours", fsync=True)
    try:
        await ours.provision()
        target = LocalDeliveryTarget(ours.store, ours.directory)
        stdlib = StdlibMaildirPeer(workdir / "peer-stdlib")
        durable = DurableMaildirPeer(workdir / "peer-durable")
        bodies = [make_message(n) for n in range(messages)]
        extra = [make_message(n) for n in range(warmup)]
        if warmup:
            log(f"warm-up: {warmup} messages each")
            await deliver_ours(target, extra, max(concurrencies))
            for peer in (stdlib, durable):
                deliver_peer(peer.deliver, extra, max(concurrencies))

        async def run_ours(concurrency: int) -> float:
            return await deliver_ours(target, bodies, concurrency)

        async def run_stdlib(concurrency: int) -> float:
            return deliver_peer(stdlib.deliver, bodies, concurrency)

        async def run_durable(concurrency: int) -> float:
            return deliver_peer(durable.deliver, bodies, concurrency)

        async def measure(run: Callable[[int], Any], concurrency: int) -> tuple[float, float]:
            gc.collect()
            cpu = machine.self_cpu_seconds()
            wall = await run(concurrency)
            return wall, machine.self_cpu_seconds() - cpu

        runners = [("ours", run_ours), ("stdlib", run_stdlib), ("durable", run_durable)]
        rows = []
        for concurrency in concurrencies:
            seconds: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in runners}
            for attempt in range(repeat):
                shift = attempt % len(runners)  # rotate the order: drift hits all alike
                for name, run in runners[shift:] + runners[:shift]:
                    log(
                        f"deliver {messages} x {len(bodies[0])} B, {concurrency} in flight "
                        f"-> {name} #{attempt + 1}"
                    )
                    seconds[name].append(await measure(run, concurrency))
            row: dict[str, Any] = {"concurrency": concurrency}
            for name, measured in seconds.items():
                row[name] = summarize(measured, messages)
            for peer_name in ("stdlib", "durable"):
                row[f"ratio_vs_{peer_name}"] = round(
                    row["ours"]["msgs_per_sec"] / row[peer_name]["msgs_per_sec"], 3
                )
            rows.append(row)
        delivered = len(os.listdir(ours.inbox_path() / "cur"))
        expected = warmup + messages * repeat * len(concurrencies)
        if (
            delivered != expected
            or ours.store.account(ADDRESS).folder("INBOX").info().exists != expected
        ):
            raise RuntimeError(f"ours holds {delivered} files, expected {expected}")
        return rows
    finally:
        await ours.close()


async def fill_listing(reactor: Any, path: Path, count: int, log: Log) -> dict[str, Any]:
    """Fill INBOX of a fresh store (fsync off) with ``count`` messages: up to FILL_APPEND
    distinct ones through ``IMailbox.append``, FILL_CONCURRENCY in flight, then the rest by
    ``IMailbox.copy`` of the folder's first messages into the folder itself (IMAP COPY: a
    hard link per message, one index transaction per COPY_CHUNK). Returns how it went."""
    filler = OurStore(reactor, path, fsync=False)
    try:
        await filler.provision()
        inbox = filler.store.account(ADDRESS).folder("INBOX")
        appended = min(count, FILL_APPEND, max(1, count // 2))
        numbers = iter(range(appended))
        started = time.perf_counter()

        async def worker() -> None:
            for n in numbers:
                await inbox.append(io.BytesIO(make_message(n)), listing_flags(n))

        await defer.gatherResults(
            [defer.ensureDeferred(worker()) for _ in range(FILL_CONCURRENCY)],
            consumeErrors=True,
        )
        append_seconds = time.perf_counter() - started
        log(f"  appended {appended} in {append_seconds:.1f} s; copying the rest")
        exists = appended
        while exists < count:
            take = min(exists, count - exists, COPY_CHUNK)
            await inbox.copy(range(1, take + 1), "INBOX")
            exists += take
        return {
            "fill_seconds": round(time.perf_counter() - started, 2),
            "fill_appended": appended,
            "fill_copied": count - appended,
        }
    finally:
        await filler.close()


def timed(listing: Callable[[], list[Any]]) -> float:
    """Seconds one listing takes, started from a collected heap (the previous result
    gone), so one run's garbage is not charged to the next."""
    gc.collect()
    started = time.perf_counter()
    result = listing()
    seconds = time.perf_counter() - started
    del result
    return seconds


async def bench_listing(
    reactor: Any, workdir: Path, *, count: int, repeat: int, log: Log
) -> dict[str, Any]:
    """Seconds to list ``count`` messages' flags: ours cold-ish and warm, the maildir peer."""
    path = workdir / "listing"
    log(f"filling one folder with {count} messages (fsync off)")
    fill = await fill_listing(reactor, path, count, log)
    log(f"  filled in {fill['fill_seconds']:.1f} s")

    cold: list[float] = []
    warm: list[float] = []
    for attempt in range(repeat):
        store = OurStore(reactor, path, fsync=True)  # reopened: a fresh environment
        try:
            log(f"list ours cold-ish, then warm #{attempt + 1}")
            cold.append(timed(lambda s=store: list_ours(s.store)))
            warm.extend(timed(lambda s=store: list_ours(s.store)) for _ in range(2))
            listed = collections.Counter(info.flags for info in list_ours(store.store))
            inbox = store.inbox_path()
        finally:
            await store.close()
    log("list maildir peer")
    peer = [timed(lambda: list_maildir(inbox)) for _ in range(repeat * 3)]
    found = collections.Counter(flags for _base, flags in list_maildir(inbox))

    ours_total, peer_total = sum(listed.values()), sum(found.values())
    if ours_total != count or peer_total != count:
        raise RuntimeError(f"listed {ours_total} (ours) and {peer_total} (peer), not {count}")
    if listed != found:
        raise RuntimeError(f"ours and the peer disagree about the flags: {listed} != {found}")
    ours_cold, ours_warm = statistics.median(cold), statistics.median(warm)
    peer_seconds = statistics.median(peer)
    return {
        "messages": count,
        **fill,
        "ours_cold_seconds": round(ours_cold, 5),
        "ours_warm_seconds": round(ours_warm, 5),
        "peer_seconds": round(peer_seconds, 5),
        "ratio_cold": round(peer_seconds / ours_cold, 3),
        "ratio_warm": round(peer_seconds / ours_warm, 3),
        "runs": {
            "ours_cold": [round(s, 5) for s in cold],
            "ours_warm": [round(s, 5) for s in warm],
            "peer": [round(s, 5) for s in peer],
        },
    }


# -- the report ---------------------------------------------------------------------------


def machine_facts(workdir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    import lmdb

    return {
        "cpus": os.cpu_count(),
        "cpu_model": machine.cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lmdb": ".".join(map(str, lmdb.version())),
        "filesystem": machine.filesystem_of(workdir),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def render(document: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    config = document["config"]
    lines = [
        f"deliveries into one account: {config['message_bytes']} B message, fsync on, "
        f"median of {config['repeat']} x {config['messages']} messages",
    ]
    header = (
        f"{'in flight':>9} {'ours msg/s':>11} {'stdlib msg/s':>13} {'durable msg/s':>14} "
        f"{'ours/stdlib':>12} {'ours/durable':>13}"
    )
    lines += [header, "-" * len(header)]
    for row in document["delivery"]:
        lines.append(
            f"{row['concurrency']:>9} {row['ours']['msgs_per_sec']:>11.1f} "
            f"{row['stdlib']['msgs_per_sec']:>13.1f} {row['durable']['msgs_per_sec']:>14.1f} "
            f"{row['ratio_vs_stdlib']:>11.2f}x {row['ratio_vs_durable']:>12.2f}x"
        )
    lines.append(
        "CPU ms per message (this process, all threads): "
        + "; ".join(
            f"{row['concurrency']} in flight: ours {row['ours']['cpu_ms_per_msg']:.2f}, "
            f"stdlib {row['stdlib']['cpu_ms_per_msg']:.2f}, "
            f"durable {row['durable']['cpu_ms_per_msg']:.2f}"
            for row in document["delivery"]
        )
    )
    listing = document.get("listing")
    if listing:
        lines += [
            "",
            f"listing the flags of {listing['messages']} messages in one folder (filled in "
            f"{listing['fill_seconds']:.1f} s: {listing['fill_appended']} appended, "
            f"{listing['fill_copied']} copied)",
        ]
        header = f"{'':<34} {'seconds':>9} {'peer s':>9} {'peer/ours':>10}"
        lines += [header, "-" * len(header)]
        for label, key, ratio in (
            ("ours, cold-ish (index reopened)", "ours_cold_seconds", "ratio_cold"),
            ("ours, warm", "ours_warm_seconds", "ratio_warm"),
        ):
            lines.append(
                f"{label:<34} {listing[key]:>9.4f} {listing['peer_seconds']:>9.4f} "
                f"{listing[ratio]:>9.2f}x"
            )
    facts = document["machine"]
    lines += [
        "",
        "ratios: above 1x ours is faster (peers: stdlib = mailbox.Maildir.add, not durable; "
        "durable = tmp+fsync+rename+fsync dir; peer s = listdir(cur, new) + parse ':2,' names)",
        f"machine: {facts['cpus']} x {facts['cpu_model']}, kernel {facts['kernel']}, "
        f"{facts['filesystem']}, Python {facts['python']}, LMDB {facts['lmdb']}, "
        f"load average {facts['loadavg'][0]}",
    ]
    return "\n".join(lines)


async def run_bench(reactor: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log: Log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if args.threadpool:
        reactor.suggestThreadPoolSize(args.threadpool)
    concurrencies = sorted({1, max(1, args.concurrency)})
    started = time.perf_counter()
    delivery = await bench_delivery(
        reactor,
        workdir,
        messages=args.messages,
        concurrencies=concurrencies,
        repeat=args.repeat,
        warmup=args.warmup,
        log=log,
    )
    listing = None
    if args.list_messages > 0:
        listing = await bench_listing(
            reactor, workdir, count=args.list_messages, repeat=args.repeat, log=log
        )
    return {
        "machine": machine_facts(workdir),
        "config": {
            "messages": args.messages,
            "message_bytes": len(make_message(0)),
            "concurrency": concurrencies,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "list_messages": args.list_messages,
            "fill_append": FILL_APPEND,
            "fill_concurrency": FILL_CONCURRENCY,
            "copy_chunk": COPY_CHUNK,
            "reactor_threadpool_max": reactor.getThreadPool().max,
        },
        "delivery": delivery,
        "listing": listing,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per delivery run")
    parser.add_argument("--concurrency", type=int, default=32, help="deliveries in flight")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--threadpool",
        type=int,
        help="size of the reactor's thread pool for ours (default: Twisted's, as the server)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="warm-up messages per target")
    parser.add_argument(
        "--list-messages", type=int, default=100_000, help="messages in the listed folder (0: skip)"
    )
    servers.add_run_options(
        parser,
        "smoke run: 50 messages, 500 listed, one run, 5 warm-up messages",
        "also write the results here",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, 50)
        args.list_messages = min(args.list_messages, 500)
        args.repeat, args.warmup = 1, min(args.warmup, 5)
    if args.messages < 1 or args.repeat < 1 or args.list_messages < 0:
        parser.error("--messages and --repeat must be positive, --list-messages not negative")

    workdir = Path(tempfile.mkdtemp(prefix="store-bench-", dir=args.workdir))
    result: dict[str, Any] = {}

    async def body(reactor: Any) -> None:
        try:
            result.update(await run_bench(reactor, args, workdir))
        except BaseException:
            traceback.print_exc()  # react() would only log it, and nothing logs to stderr
            raise

    try:
        task.react(lambda reactor: defer.ensureDeferred(body(reactor)))
    except SystemExit as stop:
        if stop.code not in (0, None):
            return 1
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
