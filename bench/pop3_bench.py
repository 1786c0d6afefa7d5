"""POP3: STAT, UIDL, LIST and RETR of a 1,000-message maildrop through our server and through
a local Dovecot holding the same messages, measured line by line in the same run.

    .venv/bin/python bench/pop3_bench.py [--messages 1000] [--repeat 3] [--logins 20]
        [--listings 10] [--sessions 4] [--seed 1] [--json PATH] [--quick] [--workdir DIR] [--keep]
        [--set SECTION.KEY=VALUE ...] [--dovecot-set KEY=VALUE ...]

**The maildrops.** ``--messages`` messages generated deterministically (``--seed``) with
Python's ``email`` package, sizes drawn from a mix of 2-5 KB (40 %), 5-20 KB (30 %),
20-60 KB (18 %) and 60-200 KB (12 %): a text part (plain, quoted-printable or base64), a
third of them with an HTML alternative, the larger ones with an attachment of random bytes
making up the size; ~5 % have lines starting with ``.`` (dot-stuffed on the wire). CRLF line
ends on disk for both. ``alice@example.org`` gets all of them; ``--sessions`` more users
(``user1``...) each get one consecutive share, so the concurrent line moves the same bytes
as the single-session RETR line.

- **ours**: the messages go in through the store's own API (``IMailbox.append``, in order,
  no flags, fsync off for the fill only), then ``twistd -n mailserver`` serves the data
  directory with every listener off but ``pop3.tls_listen`` (implicit TLS, RFC 8314), store
  fsync on (the default). Passwords are bcrypt with cost 4 (the same for every line).
- **dovecot**: a private Dovecot 2.3 (``tests/peers/dovecot.py``) on 127.0.0.4 with POP3 over
  implicit TLS (``pop3s``) and the same kind of self-signed RSA 2048 certificate,
  ``maildir:~/Maildir``, the same bytes written into ``new/`` as its own delivery names them
  (``,S=<size>,W=<size>``, mtime = the date), ``{PLAIN}`` passwords; defaults otherwise (one
  pop3 process per session, one pop3-login process per TLS session acting as its proxy).

Both are read by the same client in this process: blocking sockets with TLS, one command at
a time (no pipelining, as most clients), a reader that only finds line ends and the
``CRLF . CRLF`` terminator with ``bytes.find`` (its CPU is reported apart). The lines:

1. ``--logins`` sessions one after another, each: connect, TLS handshake, ``USER``/``PASS``,
   ``STAT``, ``QUIT`` (what a mail client polling for new mail does); the rate is sessions/s.
   Ours loads the maildrop snapshot (UIDs and sizes from its index) at PASS; Dovecot syncs
   the maildir and its index.
2. ``UIDL`` and ``LIST`` of the whole maildrop, each ``--listings`` times in a row (one takes
   a few ms) on a session logged in before the clock.
3. ``RETR 1`` ... ``RETR N`` on that session, one at a time, every byte read.
4. ``--sessions`` sessions of different users at once (logged in before the clock), each
   ``RETR``-ing its whole maildrop one message at a time in its own thread; timed from a
   common start signal to the last byte.

The sessions of lines 2-4 end with ``QUIT`` after the clock stopped (both servers then mark
the retrieved messages ``\\Seen``; nothing is deleted, so every round sees the same maildrops).

Before measuring, every line runs once on each server (a warm-up: Dovecot moves ``new/`` into
``cur/`` and builds ``dovecot-uidlist`` and its index then; the figures of that pass are in the
JSON as ``first_pass``), and the answers are checked: STAT's count and octets, the LIST sizes
in order, one distinct UIDL per message, and every RETR'd message, un-stuffed, byte for byte
equal to what was stored; a difference is printed as a WARNING and kept in ``checks``. Then
``--repeat`` rounds: in each, every line runs on both servers back to back, the order
alternating between rounds. Figures are medians; every run is in the JSON. For each line:
seconds, the rate (messages or sessions per second), the ratio of the times ours/Dovecot
(**below 1x ours is faster**), the server's CPU seconds (ours: every twistd thread; Dovecot:
every process, login proxies, auth and the reaped ones included), this client's CPU, and
the CPU other processes used meanwhile; over all measured lines that gives
``foreign_cpu_share`` (warned above 10 %). No figure is a pass/fail threshold. Needs Debian's
``dovecot-core`` and ``dovecot-pop3d``; without them it exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.headerregistry
import email.policy
import email.utils
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

from bench import machine, servers  # noqa: E402
from tests.peers.dovecot import DovecotInstance, unavailable_reason  # noqa: E402

DOMAIN = "example.org"
MAIN_USER = f"alice@{DOMAIN}"
PASSWORD = "bench-password"
OUR_HOST = "127.0.0.1"
DOVECOT_HOST = "127.0.0.4"
START = 1_704_067_200.0  # 2024-01-01T00:00:00Z: the first message's date
#: (low, high, weight) of the message sizes in bytes.
SIZES = ((2_000, 5_000, 40), (5_000, 20_000, 30), (20_000, 60_000, 18), (60_000, 200_000, 12))
#: Seconds given to Dovecot to reap the pop3 processes that just quit before reading CPU.
SETTLE = 0.1


# --- the messages -----------------------------------------------------------------------------

WORDS = (
    "meeting report budget project review draft update schedule customer invoice contract "
    "team launch release server network backup storage policy account travel summary "
    "agenda notes request approval feedback design roadmap planning migration security "
    "the a of and to in is for on with that this be by are as at from it was will have not "
    "we you they our your please thanks regards best hello see attached below above today"
).split()
NAMES = ("Alice Archer", "Bob Baker", "Carol Chen", "Dan Dorsey", "Jürgen Groß", "Zoë Lefèvre")


def _paragraphs(rng: random.Random, size: int, dotted: bool) -> str:
    """About ``size`` characters of sentences in paragraphs; with ``dotted``, some lines
    start with a dot (``.signature``-like), which POP3 must byte-stuff."""
    lines: list[str] = []
    length = 0
    while length < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 13))]
        line = " ".join(words).capitalize() + "."
        if dotted and rng.random() < 0.1:
            line = "." + line
        lines.append(line)
        length += len(line) + 2
        if rng.random() < 0.2:
            lines.append("")
    if dotted:
        lines += ["", ".", "..", ".end of quote"]
    return "\n".join(lines) + "\n"


def generate(rng: random.Random, index: int) -> bytes:
    """Message ``index`` (see the module docstring for the mix), CRLF line ends."""
    low, high, _weight = rng.choices(SIZES, weights=[w for _l, _h, w in SIZES])[0]
    target = rng.randint(low, high)
    when = START + index * 600
    msg = EmailMessage()
    msg["Return-Path"] = f"<sender{index % 97}@example.net>"
    msg["Received"] = (
        f"from relay.example.net (relay.example.net [192.0.2.1]) by mx.{DOMAIN} with ESMTPS "
        f"id {index:08x}; {email.utils.formatdate(when - 1, usegmt=True)}"
    )
    msg["From"] = email.headerregistry.Address(rng.choice(NAMES), f"s{index % 97}", "example.net")
    msg["To"] = email.headerregistry.Address("Alice", "alice", DOMAIN)
    msg["Subject"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))).capitalize()
    msg["Date"] = email.utils.formatdate(when)
    msg["Message-ID"] = f"<{index}.{rng.getrandbits(40):x}@example.net>"
    dotted = rng.random() < 0.05
    # The text carries up to 20 KB; an attachment makes up the rest of a larger message.
    text = _paragraphs(rng, min(target, 20_000) * 2 // 3, dotted)
    msg.set_content(text, charset="utf-8", cte=rng.choice(("7bit", "quoted-printable", "base64")))
    if rng.random() < 0.33:
        html = "".join(f"<p>{line}</p>\n" for line in text.splitlines() if line)
        msg.add_alternative(f"<html><body>\n{html}</body></html>\n", subtype="html")
    rest = target - len(msg.as_bytes(policy=email.policy.SMTP))
    if rest > 1_000:
        kind = rng.choice((("application", "pdf"), ("image", "jpeg"), ("application", "zip")))
        msg.add_attachment(
            rng.randbytes(rest * 3 // 4),  # base64 makes 4 of 3
            maintype=kind[0],
            subtype=kind[1],
            filename=f"file{index}.{kind[1]}",
        )
    for number, part in enumerate(msg.walk()):
        if part.is_multipart():  # the email package draws boundaries from the global random
            part.set_boundary(f"=_part{number}_{index}_{rng.getrandbits(32):08x}")
    data = msg.as_bytes(policy=email.policy.SMTP)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def generated_messages(count: int, seed: int) -> list[bytes]:
    """``count`` messages, each from its own seeded generator (deterministic for a seed)."""
    return [generate(random.Random(seed * 1_000_003 + index), index) for index in range(count)]


def shares(count: int, parts: int) -> list[range]:
    """``parts`` consecutive ranges of message indexes covering ``range(count)``."""
    return [range(i * count // parts, (i + 1) * count // parts) for i in range(parts)]


# --- filling both servers ---------------------------------------------------------------------


async def fill_ours(data_dir: Path, maildrops: dict[str, list[bytes]]) -> None:
    """example.org, every user (password :data:`PASSWORD`) and their INBOXes with the
    messages appended in order through ``IMailbox.append`` (fsync off for the fill: the
    server runs with it on)."""
    from io import BytesIO

    users = dict.fromkeys(maildrops, PASSWORD)
    async with servers.provisioned(data_dir, DOMAIN, users, durable=False) as store:
        for user, messages in maildrops.items():
            inbox = store.account(user).folder("INBOX")
            for index, data in enumerate(messages):
                await inbox.append(BytesIO(data), (), START + index * 600)


def fill_dovecot(dovecot: DovecotInstance, maildrops: dict[str, list[bytes]]) -> None:
    """The same messages in the same order as files in each user's ``new/``."""
    for user, messages in maildrops.items():
        for index, data in enumerate(messages):
            dovecot.add_message(user, data, (), START + index * 600)


# --- our server -------------------------------------------------------------------------------


class OurServer(servers.ImplicitTLSServer):
    """Our server with POP3 over implicit TLS only."""

    def __init__(self, directory: Path, *, sessions: int, overrides: dict[str, Any]) -> None:
        limits = {"max_connections_per_ip": max(20, sessions * 2)}
        super().__init__(directory, "pop3", limits, overrides, host=OUR_HOST)


# --- the client -------------------------------------------------------------------------------


class POP3Failure(RuntimeError):
    """A command got ``-ERR`` (or the connection ended)."""


class Connection:
    """One POP3 session over implicit TLS with a minimal reader: status lines and the
    multi-line terminator found with ``bytes.find``, nothing parsed beyond that."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection((host, port), timeout=900)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw)
        self.buffer = bytearray()
        self.position = 0
        self._status()  # the greeting

    def _fill(self) -> None:
        data = self.sock.recv(1 << 18)
        if not data:
            raise POP3Failure("connection closed by the server")
        self.buffer += data

    def _status(self) -> bytes:
        """The next line (a status line), without its CRLF; POP3Failure on ``-ERR``."""
        end = self.buffer.find(b"\r\n", self.position)
        while end < 0:
            self._fill()
            end = self.buffer.find(b"\r\n", self.position)
        line = bytes(self.buffer[self.position : end])
        self.position = end + 2
        if not line.startswith(b"+OK"):
            raise POP3Failure(line.decode(errors="replace"))
        return line

    def _body(self, keep: bool) -> tuple[int, bytes]:
        """The multi-line body after a ``+OK`` (up to, without, ``.`` CRLF): its length as
        sent (dot-stuffed) and, with ``keep``, its bytes."""
        start = self.position
        while len(self.buffer) - start < 3:
            self._fill()
        if self.buffer[start : start + 3] == b".\r\n":
            self.position = start + 3
            return 0, b""
        search = start
        while True:
            end = self.buffer.find(b"\r\n.\r\n", search)
            if end >= 0:
                break
            search = max(start, len(self.buffer) - 4)
            self._fill()
        self.position = end + 5
        length = end + 2 - start
        return length, bytes(self.buffer[start : end + 2]) if keep else b""

    def command(self, text: str) -> bytes:
        """Send a one-line command; its ``+OK`` status line."""
        del self.buffer[: self.position]
        self.position = 0
        self.sock.sendall(text.encode() + b"\r\n")
        return self._status()

    def multiline(self, text: str, keep: bool = False) -> tuple[bytes, int, bytes]:
        """Send a command with a multi-line answer: (status line, body length, body)."""
        status = self.command(text)
        length, body = self._body(keep)
        return status, length, body

    def login(self, user: str, password: str) -> None:
        self.command(f"USER {user}")
        self.command(f"PASS {password}")

    def stat(self) -> tuple[int, int]:
        fields = self.command("STAT").split()
        return int(fields[1]), int(fields[2])

    def quit(self) -> None:
        try:
            self.command("QUIT")
        except (OSError, POP3Failure):
            pass
        self.sock.close()


def unstuff(body: bytes) -> bytes:
    """A multi-line body as the message was stored (RFC 1939 §3 byte-stuffing undone)."""
    body = body.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


# --- the servers as the bench sees them -------------------------------------------------------


@dataclasses.dataclass
class Side:
    """One server under test, and its session for the UIDL/LIST/RETR lines of a round."""

    name: str
    host: str
    port: int
    cpu: Callable[[], float]
    main: Connection | None = None

    def session(self, context: ssl.SSLContext, user: str) -> Connection:
        connection = Connection(self.host, self.port, context)
        connection.login(user, PASSWORD)
        return connection


def measure(side: Side, work: Callable[[], dict[str, Any]], settle: float = 0.0) -> dict[str, Any]:
    """Run ``work`` once on ``side`` (see :func:`bench.machine.measure`)."""
    return machine.measure(side.cpu, work, settle)


@dataclasses.dataclass(frozen=True)
class Line:
    """One measured line: its key, its label, and what its rate counts."""

    key: str
    label: str
    unit: str  # "msgs" or "sessions"


def lines_for(messages: int, logins: int, listings: int, sessions: int) -> list[Line]:
    share = messages // sessions
    return [
        Line("login_stat", f"{logins} x (TLS connect, USER/PASS, STAT, QUIT)", "sessions"),
        Line("uidl", f"{listings} x UIDL of all {messages}", "msgs"),
        Line("list", f"{listings} x LIST of all {messages}", "msgs"),
        Line("retr", f"RETR 1..{messages}, one session", "msgs"),
        Line("retr_concurrent", f"{sessions} users x ~{share} RETR, concurrent", "msgs"),
    ]


@dataclasses.dataclass
class Workload:
    """What the lines need: the users, their messages, and what the answers must be."""

    maildrops: dict[str, list[bytes]]
    logins: int
    listings: int
    context: ssl.SSLContext

    @property
    def main(self) -> list[bytes]:
        return self.maildrops[MAIN_USER]

    @property
    def others(self) -> list[str]:
        return [user for user in self.maildrops if user != MAIN_USER]


def login_stat(side: Side, work: Workload, check: bool) -> Callable[[], dict[str, Any]]:
    expected = (len(work.main), sum(len(data) for data in work.main))

    def run() -> dict[str, Any]:
        wrong = 0
        for _ in range(work.logins):
            connection = side.session(work.context, MAIN_USER)
            wrong += connection.stat() != expected
            connection.quit()
        return {"count": work.logins, "stat_wrong": wrong if check else 0}

    return run


def listing(side: Side, work: Workload, command: str, check: bool) -> Callable[[], dict[str, Any]]:
    assert side.main is not None
    main = side.main

    def run() -> dict[str, Any]:
        length, body = 0, b""
        for _ in range(work.listings):
            _status, length, body = main.multiline(command, keep=check)
        result: dict[str, Any] = {"count": len(work.main) * work.listings, "bytes": length}
        if check:
            rows = [line.split() for line in body.split(b"\r\n") if line]
            result["answers"] = len(rows)
            if command == "LIST":
                result["sizes_match"] = [int(r[1]) for r in rows] == [len(d) for d in work.main]
            else:
                result["ids_distinct"] = len({r[1] for r in rows}) == len(work.main)
        return result

    return run


def retrieve(connection: Connection, messages: list[bytes], check: bool) -> tuple[int, int, int]:
    """RETR every message one at a time: (messages, bytes received, wrong messages)."""
    received = wrong = 0
    for number, data in enumerate(messages, 1):
        _status, length, body = connection.multiline(f"RETR {number}", keep=check)
        received += length
        if check and unstuff(body) != data:
            wrong += 1
    return len(messages), received, wrong


def retr_all(side: Side, work: Workload, check: bool) -> Callable[[], dict[str, Any]]:
    assert side.main is not None
    main = side.main

    def run() -> dict[str, Any]:
        count, received, wrong = retrieve(main, work.main, check)
        return {"count": count, "bytes": received, "retr_wrong": wrong}

    return run


def retr_concurrent(side: Side, work: Workload, check: bool) -> Callable[[], dict[str, Any]]:
    """Sessions of every other user (logged in now), and the work that RETRs their
    maildrops at once, a thread per session."""
    users = work.others
    connections = [side.session(work.context, user) for user in users]
    go = threading.Event()
    results: list[tuple[int, int, int]] = [(0, 0, 0)] * len(users)
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            go.wait()
            results[index] = retrieve(connections[index], work.maildrops[users[index]], check)
        except BaseException as error:  # reported after the join
            errors.append(error)

    def run() -> dict[str, Any]:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(users))]
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join()
        for connection in connections:
            connection.quit()
        if errors:
            raise errors[0]
        return {
            "count": sum(r[0] for r in results),
            "bytes": sum(r[1] for r in results),
            "retr_wrong": sum(r[2] for r in results),
        }

    return run


def run_line(line: Line, side: Side, work: Workload, check: bool = False) -> dict[str, Any]:
    """Measure ``line`` once on ``side``; the main session is opened before UIDL and closed
    (QUIT) after RETR, outside the clock."""
    if line.key == "login_stat":
        return measure(side, login_stat(side, work, check), settle=SETTLE)
    if line.key == "retr_concurrent":
        return measure(side, retr_concurrent(side, work, check), settle=SETTLE)
    if side.main is None:
        side.main = side.session(work.context, MAIN_USER)
        side.main.stat()
    if line.key == "retr":
        row = measure(side, retr_all(side, work, check))
        side.main.quit()
        side.main = None
        return row
    return measure(side, listing(side, work, line.key.upper(), check))


def check_pass(first: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """What the first pass found wrong in the servers' answers, as text."""
    notes = []
    for name, rows in first.items():
        if rows["login_stat"]["stat_wrong"]:
            notes.append(f"{name}: STAT gave the wrong count or octets")
        if not rows["list"].get("sizes_match"):
            notes.append(f"{name}: LIST sizes differ from the messages stored")
        if not rows["uidl"].get("ids_distinct"):
            notes.append(f"{name}: UIDL did not give one distinct id per message")
        for key in ("retr", "retr_concurrent"):
            if rows[key]["retr_wrong"]:
                notes.append(f"{name}: {key}: {rows[key]['retr_wrong']} messages came back altered")
    return notes


# --- the whole run ----------------------------------------------------------------------------


def run_bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    run = machine.BenchRun()
    machine.log(f"generating {args.messages} messages")
    messages = generated_messages(args.messages, args.seed)
    total_bytes = sum(len(data) for data in messages)
    machine.log(f"  {total_bytes / 1e6:.1f} MB in {time.monotonic() - run.started:.1f} s")
    maildrops = {MAIN_USER: messages}
    for number, share in enumerate(shares(args.messages, args.sessions), 1):
        maildrops[f"user{number}@{DOMAIN}"] = [messages[i] for i in share]

    ours = OurServer(workdir / "ours", sessions=args.sessions, overrides=args.overrides)
    dovecot = DovecotInstance(
        workdir,
        users=dict.fromkeys(maildrops, PASSWORD),
        host=DOVECOT_HOST,
        tls=True,
        pop3=True,
        settings=args.dovecot_overrides,
        keep=args.keep,
    )
    fill: dict[str, float] = {}
    try:
        machine.log("filling ours through the store API")
        began = time.monotonic()
        servers.run_on_reactor(lambda: fill_ours(ours.data_dir, maildrops))
        fill["ours_seconds"] = round(time.monotonic() - began, 2)
        machine.log(f"  {fill['ours_seconds']} s; filling Dovecot's maildirs")
        began = time.monotonic()
        dovecot.configure()
        fill_dovecot(dovecot, maildrops)
        fill["dovecot_seconds"] = round(time.monotonic() - began, 2)
        machine.log(f"  {fill['dovecot_seconds']} s; starting both")
        ours.start()
        dovecot.start()
        sides = [
            Side("ours", OUR_HOST, ours.port, ours.cpu_seconds),
            Side("dovecot", DOVECOT_HOST, dovecot.pop3s_port or 0, dovecot.cpu_seconds),
        ]
        work = Workload(maildrops, args.logins, args.listings, servers.client_context())
        lines = lines_for(args.messages, args.logins, args.listings, args.sessions)
        first = machine.first_pass(
            sides,
            lines,
            lambda line, side: run_line(line, side, work, check=True),
            "warm-up, answers checked",
        )
        notes = check_pass(first)
        for note in notes:
            machine.log(f"WARNING: {note}")
        runs = machine.rounds(
            sides, lines, args.repeat, lambda line, side: run_line(line, side, work)
        )
    finally:
        ours.stop()
        dovecot.stop()
    results = machine.compare(lines, runs, ("key", "label", "unit"))
    for row in results:
        for side in sides:
            seconds = row[side.name]["seconds"]
            row[side.name]["per_second"] = (
                round(row[side.name]["count"] / seconds, 1) if seconds else 0.0
            )
        cpu = row["dovecot"]["server_cpu_seconds"]
        row["cpu_ratio"] = round(row["ours"]["server_cpu_seconds"] / cpu, 3) if cpu > 0 else None
    return run.document(
        workdir,
        "dovecot",
        runs,
        config={
            "messages": args.messages,
            "bytes": total_bytes,
            "seed": args.seed,
            "repeat": args.repeat,
            "logins": args.logins,
            "listings": args.listings,
            "sessions": args.sessions,
            "ours_config": {k: v for k, v in ours.config.items() if k != "server"},
            "dovecot_settings": dovecot.settings,
            "tls": "implicit TLS for both (ours pop3.tls_listen, Dovecot pop3s)",
        },
        fill=fill,
        first_pass=first,
        checks=notes,
        results=results,
    )


# --- output -----------------------------------------------------------------------------------


def render(document: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    config, out = document["config"], []
    out.append(
        f"POP3: {config['messages']} messages ({config['bytes'] / 1e6:.1f} MB, seed "
        f"{config['seed']}); implicit TLS for both; median of {config['repeat']} runs; "
        "time ratio ours/dovecot (below 1x ours is faster)"
    )
    header = (
        f"{'line':<46} {'ours s':>8} {'dovecot s':>9} {'ours/dc':>8} {'ours /s':>8} "
        f"{'dc /s':>8} {'ours CPU':>8} {'dc CPU':>7} {'CPU o/dc':>8} {'client':>7}"
    )
    out += [header, "-" * len(header)]
    for row in document["results"]:
        o, d, ratio, cpu = row["ours"], row["dovecot"], row["ratio"], row["cpu_ratio"]
        out.append(
            f"{row['label']:<46} {o['seconds']:>8.3f} {d['seconds']:>9.3f} "
            f"{'n/a' if ratio is None else f'{ratio:.2f}x':>8} {o['per_second']:>8.0f} "
            f"{d['per_second']:>8.0f} {o['server_cpu_seconds']:>8.3f} "
            f"{d['server_cpu_seconds']:>7.3f} {'n/a' if cpu is None else f'{cpu:.2f}x':>8} "
            f"{o['client_cpu_seconds']:>7.3f}"
        )
    out.append(
        "/s: sessions per second on the first line, messages per second on the others; "
        "CPU in seconds (ours: twistd; dc: every Dovecot process) and its ratio"
    )
    for row in document["results"]:
        if row["key"].startswith("retr"):
            rates = {
                name: row[name]["bytes"] / row[name]["seconds"] / 1e6 if row[name]["seconds"] else 0
                for name in ("ours", "dovecot")
            }
            out.append(
                f"{row['label']}: ours {rates['ours']:.1f} MB/s, "
                f"dovecot {rates['dovecot']:.1f} MB/s"
            )
    for note in document["checks"]:
        out.append(f"WARNING: {note}")
    out += machine.noisy_warning(document["foreign_cpu_share"])
    out.append(machine.machine_line(document["machine"], "Dovecot", document["seconds"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages in the maildrop")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds (median)")
    parser.add_argument("--logins", type=int, default=20, help="sessions of the login line")
    parser.add_argument(
        "--listings", type=int, default=10, help="UIDL (and LIST) commands per measured run"
    )
    parser.add_argument("--sessions", type=int, default=4, help="users RETR-ing at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the messages")
    servers.add_run_options(parser, "smoke run: 100 messages, one round, 3 logins, 2 listings")
    servers.add_config_options(
        parser, "--dovecot-set", "extra dovecot.conf setting, e.g. mail_fsync=never"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = min(args.messages, 100), 1
        args.logins, args.listings = min(args.logins, 3), min(args.listings, 2)
    if min(args.messages, args.repeat, args.logins, args.listings, args.sessions) < 1:
        parser.error("--messages, --repeat, --logins, --listings and --sessions must be positive")
    if args.sessions > args.messages:
        parser.error("--sessions must not exceed --messages")
    args.overrides = servers.parse_overrides(args.set, parser)
    args.dovecot_overrides = servers.parse_settings(args.dovecot_set, parser, "--dovecot-set")

    reason = unavailable_reason(pop3=True)
    if reason:
        print(f"pop3_bench: {reason}", file=sys.stderr)
        return 2

    with servers.temporary_workdir("pop3-bench-", args.workdir, args.keep) as workdir:
        document = run_bench(args, workdir)
    servers.report(document, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
