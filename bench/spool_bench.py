"""Outbound spool: relay throughput and the time to drain a full queue, against a local Postfix
relaying the same load to the same sink in the same run.

    .venv/bin/python bench/spool_bench.py [--messages 2000] [--sessions 20] [--size 4096]
        [--repeat 3] [--warmup 100] [--drain 10000] [--per-domain 20] [--json PATH]
        [--quick] [--workdir DIR] [--keep] [--set SECTION.KEY=VALUE ...]
        [--postfix-set KEY=VALUE ...]

Every message goes to ``sink@remote.test``; both MTAs relay it to one Postfix ``smtp-sink``
(``smtp-sink -c``: it takes every message, throws it away and prints running counters, which
the bench reads) on 127.0.0.3, shared by both, so the sink side is identical.

- **ours**: ``twistd -n mailserver`` with ``[store] fsync = true`` (a 250 means the spool file,
  its directory entry and the LMDB entry are on disk). Clients submit on the submission port
  with STARTTLS and AUTH PLAIN (the only way ours relays: there is no relay-by-IP); the spool
  finds the MX of remote.test through a real DNS server (``tests/dns_server.py``, in this
  process) pointing at the sink, and delivers with ``[delivery] port`` = the sink's port.
  ``max_per_domain`` is set to Postfix's ``default_destination_concurrency_limit`` (20).
- **postfix**: a private instance (``tests/peers/postfix.py``) on 127.0.0.2, relaying
  remote.test to ``[127.0.0.3]:PORT`` (``relay_settings``; 127.0.0.1 is in ``mynetworks``, so
  no AUTH), STARTTLS offered with a self-signed certificate, otherwise Postfix defaults.
  Its 250 means cleanup fsynced the queue file.

1. **Throughput.** N messages of ``--size`` payload bytes from ``--sessions`` concurrent SMTP
   sessions, each sending many messages on one connection (no PIPELINING). Rows:

   - ``ours``: the bench's asyncio client (EHLO, STARTTLS, EHLO, AUTH PLAIN once per session,
     then MAIL/RCPT/DATA per message);
   - ``postfix``: the same client, same messages, STARTTLS but no AUTH;
   - ``postfix/smtp-source``: Postfix's own ``smtp-source -d -s K -m N -l SIZE`` (plain text,
     no TLS), the reference load for Postfix.

   Figures: submitted msgs/s (the client got every 250), delivered msgs/s (from the first
   connection until the sink has all N), and CPU per message of the MTA (ours: every thread
   of twistd from ``/proc``; Postfix: ``PostfixInstance.cpu_seconds()``: master, live daemons
   and reaped ones), measured until its queue is empty again. The rows run interleaved
   ``--repeat`` times after a warm-up; figures are medians, every run is in the JSON.

2. **Drain.** ``--drain`` messages already queued, then the MTA is started and timed until
   its queue is empty and the sink has them all:

   - ours: the spool of ours' data directory is filled offline through the spool's own API
     (``LmdbSpool.start`` / ``add_recipient`` / ``body`` / ``commit``, fsync off for the fill,
     256 in flight), then twistd is started; the scheduler finds them all due;
   - postfix: a second instance is filled by smtp-source while its queue manager is off
     (``master_service_disable = qmgr/unix``, ``in_flow_delay = 0``), so every message waits
     in ``incoming/``, never tried, like ours; it is stopped, the two settings are dropped and
     it is started again.

   Both times start just before the MTA's start command, so both include start-up (ours: the
   Python interpreter, imports and the spool's recovery scan; Postfix: ``postfix start``'s
   checks); ``first delivery`` and the ``span`` from the first to the last message at the
   sink are reported apart.

Ratios are ours over Postfix for rates (above 1x ours is faster) and for CPU per message
(above 1x ours uses more). Absolute figures depend on the machine and its load; compare the
same-run ratios. Needs root and Debian's ``postfix`` package (smtp-source, smtp-sink).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

from bench import machine, servers  # noqa: E402
from tests.peers.postfix import (  # noqa: E402
    PostfixInstance,
    free_port,
    relay_settings,
    unavailable_reason,
    which,
)

LOCAL_DOMAIN = "example.org"
USER = f"alice@{LOCAL_DOMAIN}"
PASSWORD = "bench-password"
REMOTE_DOMAIN = "remote.test"
RECIPIENT = f"sink@{REMOTE_DOMAIN}"
OUR_HOSTNAME = "mail.example.org"
CLIENT_HELO = "bench-client.example.net"
SINK_HOST = "127.0.0.3"
OUR_HOST = "127.0.0.1"
#: Postfix's default_destination_concurrency_limit; ours' max_per_domain is set to it.
POSTFIX_DESTINATION_CONCURRENCY = 20
FILL_IN_FLIGHT = 256
POLL = 0.01


# --- the message ----------------------------------------------------------------------------


def make_message(size: int) -> bytes:
    """A plain RFC 5322 message: a few headers, then ``size`` bytes of 78-column lines (the
    payload ``smtp-source -l SIZE`` sends is shaped alike), CRLF line ends, no line starting
    with a dot. From is the authenticated user, as our submission port requires."""
    headers = (
        f"From: Alice <{USER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        "Subject: spool bench\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        f"Message-ID: <spool-bench@{LOCAL_DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"La la la, the spool bench sings its song to the sink, over and over again.."
    body = bytearray()
    while len(body) < size:
        body += line[: max(0, min(len(line), size - len(body) - 2))] + b"\r\n"
    return headers + bytes(body[:size])


# --- the sink ---------------------------------------------------------------------------------


class Sink:
    """``smtp-sink -c`` on ``host:port``: accepts and discards, counting messages.

    With ``-c`` it writes ``sess=N quit=N mesg=N`` + CR after every session end, QUIT and
    end of data; stdout goes to a file whose tail :meth:`count` reads."""

    PATTERN = re.compile(rb"mesg=(\d+)")

    def __init__(self, directory: Path, host: str = SINK_HOST) -> None:
        self.host = host
        self.port = free_port(host)
        self.output = directory / "smtp-sink.out"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        command = [which("smtp-sink") or "smtp-sink", "-c", "-4", "-h", f"mx.{REMOTE_DOMAIN}"]
        if os.geteuid() == 0:
            command += ["-u", "postfix"]  # required when started as root
        command += [f"{self.host}:{self.port}", "1024"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {self.output.read_text(errors='replace')}")
            try:
                socket.create_connection((self.host, self.port), 1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("smtp-sink is not listening") from None
                time.sleep(0.02)

    def count(self) -> int:
        """Messages received so far (the last complete counter line)."""
        try:
            with open(self.output, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256))
                tail = f.read()
        except OSError:
            return 0
        for record in reversed(tail.split(b"\r")[:-1]):  # the last piece may be partial
            found = self.PATTERN.search(record)
            if found:
                return int(found.group(1))
        return 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- a reactor in a thread (DNS server, provisioning, the offline fill) -----------------------


async def _provision(data_dir: Path) -> None:
    """example.org with alice (password :data:`PASSWORD`), before the server starts."""
    async with servers.provisioned(data_dir, LOCAL_DOMAIN, {USER: PASSWORD}):
        pass


async def _fill_spool(data_dir: Path, count: int, message: bytes) -> None:
    """Queue ``count`` copies of ``message`` for :data:`RECIPIENT` through the spool's API
    (the path a submission takes after the checks), ``FILL_IN_FLIGHT`` at a time."""
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList, DeferredSemaphore, ensureDeferred

    from mailserver.db import Database
    from mailserver.spool.queue import LmdbSpool
    from mailserver.types import Address, Envelope

    db = Database.open(str(data_dir / "index"), map_size=1024 << 20, reactor=reactor, sync=False)
    spool = LmdbSpool(db, str(data_dir / "spool"), reactor, fsync=False)
    sender = Address("alice", LOCAL_DOMAIN)
    recipient = Address("sink", REMOTE_DOMAIN)

    async def one() -> None:
        delivery = spool.start(Envelope(sender=sender, authenticated_as=USER))
        await delivery.add_recipient(recipient)
        await delivery.body(BytesIO(message))
        await delivery.commit()

    semaphore = DeferredSemaphore(FILL_IN_FLIGHT)
    try:
        results = await DeferredList(
            [semaphore.run(lambda: ensureDeferred(one())) for _ in range(count)],
            consumeErrors=True,
        )
        for ok, value in results:
            if not ok:
                value.raiseException()
        if spool.count() != count:
            raise RuntimeError(f"spool holds {spool.count()} entries, not {count}")
    finally:
        await db.close()


# --- our server -------------------------------------------------------------------------------


class OurServer(servers.TwistdServer):
    """Our server with submission only."""

    def __init__(
        self,
        directory: Path,
        *,
        dns: str,
        sink_port: int,
        sessions: int,
        per_domain: int,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.data_dir = directory / "var"
        port = free_port(OUR_HOST)
        base: dict[str, dict[str, Any]] = {
            "server": {"hostname": OUR_HOSTNAME, "data_dir": str(self.data_dir)},
            "store": {"fsync": True},
            "auth": {"bcrypt_cost": 4},
            "smtp": {
                "max_connections": max(200, sessions * 2),
                "max_connections_per_ip": max(100, sessions * 2),
            },
            "delivery": {
                "nameservers": [dns],
                "port": sink_port,
                "max_per_domain": per_domain,
            },
            # every listener off but submission with STARTTLS
            "submission": {"listen": [f"tcp:{port}:interface={OUR_HOST}"]},
        }
        super().__init__(
            directory, servers.server_config(base, overrides), host=OUR_HOST, port=port
        )

    def reactor_cpu_seconds(self) -> float:
        """On-CPU seconds of twistd's main thread (the reactor) so far."""
        assert self.process is not None
        pid = self.process.pid
        try:
            return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def queued(self) -> int:
        """Message files in the spool (``tmp/`` aside)."""
        try:
            names = os.listdir(self.data_dir / "spool")
        except FileNotFoundError:
            return 0
        return sum(1 for name in names if name != "tmp" and not name.startswith("."))


# --- Postfix ----------------------------------------------------------------------------------


def postfix_relay(
    directory: Path,
    sink: Sink,
    extra: dict[str, str],
    *,
    tls: bool,
    keep: bool = False,
) -> PostfixInstance:
    """A private Postfix (not started) relaying remote.test to the sink, STARTTLS offered with
    a self-signed certificate when ``tls``."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = relay_settings(REMOTE_DOMAIN, sink.host, sink.port)
    settings.update(extra)
    instance = PostfixInstance(directory, settings=settings, keep=keep)
    if tls:
        from mailserver.tls import ensure_self_signed

        cert, key = ensure_self_signed(str(instance.root / "tls"), "postfix-peer.test")
        instance.settings.update(
            smtpd_tls_security_level="may", smtpd_tls_cert_file=cert, smtpd_tls_key_file=key
        )
    return instance


def postfix_mta(instance: PostfixInstance) -> MTA:
    """What the bench watches of a running Postfix instance."""
    return MTA(
        instance.cpu_seconds,
        instance.queued,
        lambda: instance.master_pid() is not None,
        lambda: f"postfix: {instance.queued()} queued\n{instance.maillog_text()[-4000:]}",
    )


# --- load generators --------------------------------------------------------------------------


class SMTPFailure(RuntimeError):
    """The server did not give the expected reply."""


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) SMTP reply: code and the last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPFailure("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, expect: int
) -> None:
    writer.write(data)
    code, line = await _reply(reader)
    if code != expect:
        raise SMTPFailure(f"{data[:40]!r} -> {line!r}")


async def _session(
    host: str,
    port: int,
    take: Callable[[], bool],
    message: bytes,
    *,
    tls: ssl.SSLContext | None,
    login: tuple[str, str] | None,
) -> None:
    """One SMTP session sending messages while ``take()`` grants one."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        code, line = await _reply(reader)
        if code != 220:
            raise SMTPFailure(f"greeting {line!r}")
        ehlo = f"EHLO {CLIENT_HELO}\r\n".encode()
        await _command(reader, writer, ehlo, 250)
        if tls is not None:
            await _command(reader, writer, b"STARTTLS\r\n", 220)
            await writer.start_tls(tls)
            await _command(reader, writer, ehlo, 250)
        if login is not None:
            token = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode()).decode()
            await _command(reader, writer, f"AUTH PLAIN {token}\r\n".encode(), 235)
        mail = f"MAIL FROM:<{USER}>\r\n".encode()
        rcpt = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
        data = message + b".\r\n"
        while take():
            await _command(reader, writer, mail, 250)
            await _command(reader, writer, rcpt, 250)
            await _command(reader, writer, b"DATA\r\n", 354)
            await _command(reader, writer, data, 250)
        await _command(reader, writer, b"QUIT\r\n", 221)
    finally:
        writer.close()


def python_client(
    host: str,
    port: int,
    *,
    messages: int,
    sessions: int,
    message: bytes,
    login: tuple[str, str] | None,
) -> None:
    """``messages`` messages over ``sessions`` concurrent sessions (asyncio, one thread),
    STARTTLS always, AUTH PLAIN once per session when ``login``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    left = [messages]

    def take() -> bool:
        if left[0] <= 0:
            return False
        left[0] -= 1
        return True

    async def run() -> None:
        await asyncio.gather(
            *(
                _session(host, port, take, message, tls=context, login=login)
                for _ in range(min(sessions, messages))
            )
        )

    asyncio.run(run())


def smtp_source(host: str, port: int, *, messages: int, sessions: int, size: int) -> None:
    """Postfix's load generator: ``-d`` keeps each session for many messages; plain text."""
    command = [
        which("smtp-source") or "smtp-source",
        "-4",
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-M",
        CLIENT_HELO,
        "-f",
        USER,
        "-t",
        RECIPIENT,
        f"{host}:{port}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source exited {result.returncode}: {result.stderr}")


# --- measuring --------------------------------------------------------------------------------


def own_cpu() -> tuple[float, float]:
    """(this process, its reaped children) user+system CPU seconds."""
    return machine.self_cpu_seconds(), machine.children_cpu_seconds()


@dataclasses.dataclass
class MTA:
    """What the bench watches of one running MTA."""

    cpu: Callable[[], float]  # its CPU seconds so far
    queued: Callable[[], int]  # messages in its queue
    alive: Callable[[], bool]  # False once it has died
    describe: Callable[[], str]  # its state and log tail, for errors
    #: CPU seconds of the reactor (main) thread alone, where there is one.
    reactor_cpu: Callable[[], float] | None = None


def wait_until(
    predicate: Callable[[], bool],
    deadline: float,
    mta: MTA,
    what: Callable[[], str],
    interval: float,
) -> float:
    """Poll ``predicate`` every ``interval`` s; the monotonic time it first held. Raises when
    ``mta`` dies or at ``deadline``."""
    while not predicate():
        if not mta.alive():
            raise RuntimeError(f"the MTA died while waiting ({what()}):\n{mta.describe()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting: {what()}\n{mta.describe()}")
        time.sleep(interval)
    return time.monotonic()


@dataclasses.dataclass
class Target:
    """One throughput row: a load against one MTA."""

    name: str
    load: Callable[[int], None]  # send N messages
    mta: MTA
    client: str  # "self" (this process) or "children" (smtp-source)


def run_throughput(target: Target, sink: Sink, messages: int) -> dict[str, Any]:
    """Send ``messages``; time until all are submitted, delivered at the sink, and gone from
    the MTA's queue; CPU per message of the MTA and of the client."""
    mta = target.mta
    before = sink.count()
    cpu_before = mta.cpu()
    reactor_before = mta.reactor_cpu() if mta.reactor_cpu else 0.0
    self_before, children_before = own_cpu()
    started = time.monotonic()
    target.load(messages)
    submitted = time.monotonic()
    self_after, children_after = own_cpu()
    deadline = submitted + max(60.0, messages * 0.2)
    delivered = wait_until(
        lambda: sink.count() - before >= messages,
        deadline,
        mta,
        lambda: f"{sink.count() - before}/{messages} at the sink",
        POLL,
    )
    empty = wait_until(
        lambda: mta.queued() == 0, deadline, mta, lambda: f"{mta.queued()} still queued", 0.05
    )
    cpu = mta.cpu() - cpu_before
    reactor = mta.reactor_cpu() - reactor_before if mta.reactor_cpu else None
    client = (
        self_after - self_before if target.client == "self" else children_after - children_before
    )
    return {
        "messages": messages,
        "submit_seconds": round(submitted - started, 4),
        "submitted_per_sec": round(messages / (submitted - started), 2),
        "delivered_seconds": round(delivered - started, 4),
        "delivered_per_sec": round(messages / (delivered - started), 2),
        "empty_seconds": round(empty - started, 4),
        "cpu_ms_per_msg": round(cpu * 1000 / messages, 3),
        "client_cpu_ms_per_msg": round(client * 1000 / messages, 3),
        "sink_extra": sink.count() - before - messages,
        **_reactor_share(reactor, messages),
    }


def time_drain(start: Callable[[], None], mta: MTA, sink: Sink, messages: int) -> dict[str, Any]:
    """Call ``start`` (which launches an MTA whose queue holds ``messages``) and time until
    the sink has them all and the queue is empty."""
    before = sink.count()
    started = time.monotonic()
    start()
    deadline = started + max(120.0, messages * 0.1)
    first = wait_until(
        lambda: sink.count() > before, deadline, mta, lambda: "nothing at the sink", POLL
    )
    last = wait_until(
        lambda: sink.count() - before >= messages,
        deadline,
        mta,
        lambda: f"{sink.count() - before}/{messages} at the sink",
        POLL,
    )
    empty = wait_until(
        lambda: mta.queued() == 0, deadline, mta, lambda: f"{mta.queued()} still queued", 0.05
    )
    seconds = empty - started
    span = max(last - first, 1e-6)
    used = mta.cpu()
    reactor = mta.reactor_cpu() if mta.reactor_cpu else None
    return {
        "messages": messages,
        "drain_seconds": round(seconds, 4),
        "msgs_per_sec": round(messages / seconds, 2),
        "first_delivery_seconds": round(first - started, 4),
        "last_delivery_seconds": round(last - started, 4),
        "span_seconds": round(span, 4),
        "span_msgs_per_sec": round(messages / span, 2),
        "cpu_seconds": round(used, 3),
        "cpu_ms_per_msg": round(used * 1000 / messages, 3),
        "sink_extra": sink.count() - before - messages,
        **_reactor_share(reactor, messages),
    }


def _reactor_share(seconds: float | None, messages: int) -> dict[str, float]:
    """``reactor_cpu_ms_per_msg`` when the MTA has a reactor thread (ours), else nothing."""
    return (
        {} if seconds is None else {"reactor_cpu_ms_per_msg": round(seconds * 1000 / messages, 3)}
    )


# --- the whole run ----------------------------------------------------------------------------


def run_bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Sink, DNS, both MTAs; throughput rows, then the drains. The result document."""
    from tests.dns_server import Zone, start_dns_server

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    message = make_message(args.size)
    sink = Sink(workdir)
    reactor_thread = servers.ReactorThread()
    reactor = reactor_thread.reactor
    zone = Zone(
        "test",
        {
            REMOTE_DOMAIN: [("MX", (10, f"mx.{REMOTE_DOMAIN}"))],
            f"mx.{REMOTE_DOMAIN}": [("A", SINK_HOST)],
        },
    )
    dns = reactor_thread.call(start_dns_server, reactor, zone)
    ours = OurServer(
        workdir / "ours",
        dns=dns.address,
        sink_port=sink.port,
        sessions=args.sessions,
        per_domain=args.per_domain,
        overrides=args.overrides,
    )
    relay = postfix_relay(workdir / "postfix", sink, args.postfix_overrides, tls=True)
    drain_peer: PostfixInstance | None = None
    throughput: dict[str, Any] = {}
    drain: dict[str, Any] = {}
    try:
        sink.start()
        reactor_thread.run(lambda: _provision(ours.data_dir))
        ours.spawn()
        ours.wait_ready()
        relay.start()

        ours_mta = MTA(
            ours.cpu_seconds,
            ours.queued,
            ours.alive,
            lambda: f"ours: {ours.queued()} queued\n{ours.log_tail()}",
            ours.reactor_cpu_seconds,
        )
        relay_mta = postfix_mta(relay)
        targets = [
            Target(
                "ours",
                lambda n: python_client(
                    OUR_HOST,
                    ours.port,
                    messages=n,
                    sessions=args.sessions,
                    message=message,
                    login=(USER, PASSWORD),
                ),
                ours_mta,
                "self",
            ),
            Target(
                "postfix",
                lambda n: python_client(
                    relay.smtpd_host,
                    relay.smtpd_port,
                    messages=n,
                    sessions=args.sessions,
                    message=message,
                    login=None,
                ),
                relay_mta,
                "self",
            ),
            Target(
                "postfix/smtp-source",
                lambda n: smtp_source(
                    relay.smtpd_host,
                    relay.smtpd_port,
                    messages=n,
                    sessions=args.sessions,
                    size=args.size,
                ),
                relay_mta,
                "children",
            ),
        ]
        if args.warmup:
            for target in targets:
                machine.log(f"warm-up: {args.warmup} messages -> {target.name}")
                run_throughput(target, sink, args.warmup)
        runs: dict[str, list[dict[str, Any]]] = {target.name: [] for target in targets}
        for attempt in range(args.repeat):
            order = targets[attempt % len(targets) :] + targets[: attempt % len(targets)]
            for target in order:  # interleaved, rotating, so drift hits all alike
                machine.log(f"throughput #{attempt + 1}: {args.messages} messages -> {target.name}")
                runs[target.name].append(run_throughput(target, sink, args.messages))
        throughput = {
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "message_bytes": len(message),
        }
        for name, measured in runs.items():
            throughput[name] = machine.median_of(measured, places=4)
        ours_row, peer_row = throughput["ours"], throughput["postfix"]
        reference = throughput["postfix/smtp-source"]
        throughput["ratio_submitted"] = _ratio(
            ours_row["submitted_per_sec"], peer_row["submitted_per_sec"]
        )
        throughput["ratio_delivered"] = _ratio(
            ours_row["delivered_per_sec"], peer_row["delivered_per_sec"]
        )
        throughput["ratio_delivered_vs_smtp_source"] = _ratio(
            ours_row["delivered_per_sec"], reference["delivered_per_sec"]
        )
        throughput["cpu_ratio"] = _ratio(ours_row["cpu_ms_per_msg"], peer_row["cpu_ms_per_msg"])
        relay.stop()
        ours.stop()

        if args.drain:
            machine.log(f"drain: filling our spool with {args.drain} messages (offline)")
            filling = time.monotonic()
            reactor_thread.run(lambda: _fill_spool(ours.data_dir, args.drain, message))
            ours_fill = time.monotonic() - filling
            machine.log(f"drain: ours ({ours.queued()} queued, filled in {ours_fill:.1f} s)")
            ours_drain = time_drain(ours.spawn, ours_mta, sink, args.drain)
            ours_drain["fill_seconds"] = round(ours_fill, 3)
            ours.stop()

            drain_peer = postfix_relay(
                workdir / "postfix-drain",
                sink,
                {
                    **args.postfix_overrides,
                    "master_service_disable": "qmgr/unix",
                    "in_flow_delay": "0",
                },
                tls=False,
                keep=True,
            )
            machine.log(f"drain: filling Postfix's queue with {args.drain} messages (qmgr off)")
            drain_peer.start()
            sink_before = sink.count()
            filling = time.monotonic()
            smtp_source(
                drain_peer.smtpd_host,
                drain_peer.smtpd_port,
                messages=args.drain,
                sessions=args.sessions,
                size=args.size,
            )
            peer_fill = time.monotonic() - filling
            drain_peer.stop()
            waiting = drain_peer.queued()
            if waiting != args.drain or sink.count() != sink_before:
                raise RuntimeError(
                    f"Postfix holds {waiting} messages, not {args.drain} (and delivered "
                    f"{sink.count() - sink_before} while its queue manager was off)"
                )
            for key in ("master_service_disable", "in_flow_delay"):
                drain_peer.settings.pop(key)
            drain_peer.settings.update(args.postfix_overrides)
            machine.log(f"drain: postfix ({waiting} queued, filled in {peer_fill:.1f} s)")
            peer = drain_peer
            peer_drain = time_drain(peer.start, postfix_mta(peer), sink, args.drain)
            peer_drain["fill_seconds"] = round(peer_fill, 3)
            drain = {
                "messages": args.drain,
                "ours": ours_drain,
                "postfix": peer_drain,
                "ratio": _ratio(ours_drain["msgs_per_sec"], peer_drain["msgs_per_sec"]),
                "span_ratio": _ratio(
                    ours_drain["span_msgs_per_sec"], peer_drain["span_msgs_per_sec"]
                ),
                "cpu_ratio": _ratio(ours_drain["cpu_ms_per_msg"], peer_drain["cpu_ms_per_msg"]),
            }
    finally:
        ours.stop()
        relay.stop()
        if drain_peer is not None:
            drain_peer.keep = args.keep
            drain_peer.stop()
        sink.stop()
        try:
            reactor_thread.call(dns.stop)
        finally:
            reactor_thread.stop()
    return {
        "machine": {
            **machine.machine_facts(workdir, {"postfix": machine.peer_version("postfix")}),
            "loadavg_at_start": load_at_start,
        },
        "config": {
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "drain": args.drain,
            "per_domain": args.per_domain,
            "ours_config": {k: v for k, v in ours.config.items() if k != "server"},
            "postfix_overrides": args.postfix_overrides,
            "sink": "smtp-sink -c (discards)",
        },
        "throughput": throughput,
        "drain": drain,
    }


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs > 0 else None


# --- facts and output -------------------------------------------------------------------------


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _split(row: dict[str, Any]) -> str:
    """Ours' CPU per message split into the reactor thread and the others."""
    reactor = row.get("reactor_cpu_ms_per_msg", 0.0)
    return (
        f"ours' CPU ms/msg by thread: reactor {reactor:.2f}, "
        f"others (thread pool, LMDB writer) {row['cpu_ms_per_msg'] - reactor:.2f}"
    )


def render(document: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    lines = []
    t = document["throughput"]
    if t:
        config = document["config"]
        lines.append(
            f"relay throughput: {t['messages']} x {t['message_bytes']} B to the sink, "
            f"{t['sessions']} sessions, median of {config['repeat']} runs"
        )
        header = (
            f"{'MTA (client)':<32} {'submit msg/s':>12} {'delivered msg/s':>15} "
            f"{'CPU ms/msg':>10} {'client ms/msg':>13}"
        )
        lines += [header, "-" * len(header)]
        labels = {
            "ours": "ours (asyncio, STARTTLS+AUTH)",
            "postfix": "postfix (asyncio, STARTTLS)",
            "postfix/smtp-source": "postfix (smtp-source, plain)",
        }
        for name, label in labels.items():
            r = t[name]
            lines.append(
                f"{label:<32} {r['submitted_per_sec']:>12.1f} {r['delivered_per_sec']:>15.1f} "
                f"{r['cpu_ms_per_msg']:>10.2f} {r['client_cpu_ms_per_msg']:>13.2f}"
            )
        lines.append(
            f"ours/postfix (same client): submitted {_x(t['ratio_submitted'])}, "
            f"delivered {_x(t['ratio_delivered'])}, CPU per message {_x(t['cpu_ratio'])}; "
            f"delivered vs smtp-source row {_x(t['ratio_delivered_vs_smtp_source'])}"
        )
        lines.append(_split(t["ours"]))
    d = document["drain"]
    if d:
        lines.append("")
        lines.append(
            f"drain: {d['messages']} queued messages; MTA started, timed until its queue is empty"
        )
        header = (
            f"{'MTA':<8} {'fill s':>7} {'drain s':>8} {'msgs/s':>8} {'1st deliv s':>11} "
            f"{'span s':>7} {'span msg/s':>10} {'CPU ms/msg':>10}"
        )
        lines += [header, "-" * len(header)]
        for name in ("ours", "postfix"):
            r = d[name]
            lines.append(
                f"{name:<8} {r['fill_seconds']:>7.1f} {r['drain_seconds']:>8.2f} "
                f"{r['msgs_per_sec']:>8.1f} {r['first_delivery_seconds']:>11.2f} "
                f"{r['span_seconds']:>7.2f} {r['span_msgs_per_sec']:>10.1f} "
                f"{r['cpu_ms_per_msg']:>10.2f}"
            )
        lines.append(
            f"ours/postfix: drain {_x(d['ratio'])}, first-to-last delivery {_x(d['span_ratio'])}, "
            f"CPU per message {_x(d['cpu_ratio'])}"
        )
        lines.append(_split(d["ours"]))
    m = document["machine"]
    lines.append("")
    lines.append(
        f"machine: {m['cpus']} x {m['cpu_model']}, kernel {m['kernel']}, {m['filesystem']}, "
        f"Python {m['python']}, Postfix {m['postfix']}, code {m['code']}; load average "
        f"{m['loadavg_at_start'][0]} at start, {m['loadavg_at_end'][0]} at end"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions")
    parser.add_argument("--size", type=int, default=4096, help="payload bytes per message")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per row (median)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up messages per row")
    parser.add_argument(
        "--drain", type=int, default=10_000, help="messages in the drained queues (0: skip)"
    )
    parser.add_argument(
        "--per-domain",
        type=int,
        default=POSTFIX_DESTINATION_CONCURRENCY,
        help="ours' [delivery] max_per_domain (default: Postfix's destination limit, 20)",
    )
    servers.add_run_options(
        parser, "smoke run: 40 messages, 4 sessions, one run, 5 warm-up, 100 drained"
    )
    servers.add_config_options(
        parser,
        "--postfix-set",
        "extra main.cf setting for both Postfix instances, e.g. in_flow_delay=0",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.sessions, args.repeat = min(args.messages, 40), 4, 1
        args.warmup, args.drain = min(args.warmup, 5), min(args.drain, 100)
    if args.messages < 1 or args.sessions < 1 or args.repeat < 1 or args.drain < 0:
        parser.error("--messages, --sessions and --repeat must be positive, --drain >= 0")
    args.overrides = servers.parse_overrides(args.set, parser)
    args.postfix_overrides = servers.parse_settings(args.postfix_set, parser, "--postfix-set")

    reason = unavailable_reason()
    for tool in ("smtp-source", "smtp-sink"):
        if reason is None and which(tool) is None:
            reason = f"{tool} not found (Debian package postfix)"
    if reason:
        print(f"spool_bench: {reason}", file=sys.stderr)
        return 2

    with servers.temporary_workdir("spool-bench-", args.workdir, args.keep) as workdir:
        document = run_bench(args, workdir)
    servers.report(document, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
