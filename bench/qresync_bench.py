"""QRESYNC: resynchronising a 10,000-message mailbox after changes, through our server and a
local Dovecot holding the same messages, in the same run.

    .venv/bin/python bench/qresync_bench.py [--messages 10000] [--changes 1000] [--repeat 3]
        [--seed 1] [--json PATH] [--quick] [--workdir DIR] [--keep]

The mailbox and both servers are set up as in ``bench/imap_bench.py`` (whose fill, server
and client code this reuses): ``--messages`` generated messages in alice's INBOX, ours
served by ``twistd mailserver`` over implicit TLS (store fsync on), Dovecot 2.3 with
``maildir:~/Maildir`` over implicit TLS. A client that synced the mailbox remembers its
UIDVALIDITY and HIGHESTMODSEQ; then another session expunges ``--changes`` messages and
flags ``--changes`` others (the same seeded UIDs on both servers). The lines, each on a
session that ran ``ENABLE QRESYNC``:

1. ``SELECT INBOX (QRESYNC (uidvalidity modseq))``: what the client must learn, as one
   ``VANISHED (EARLIER)`` and a FETCH per flagged message (RFC 7162 §3.2.5);
2. ``UID FETCH 1:* (FLAGS) (CHANGEDSINCE modseq VANISHED)`` on the selected mailbox (what
   mutt does, §3.2.6);
3. for comparison, the resync a client without CONDSTORE does: ``UID FETCH 1:* (FLAGS)``.

Before measuring, each line runs once on each server and the answers are compared: the same
number of FETCH responses, and the same VANISHED (EARLIER) UIDs as the changes made (a
difference is reported as a warning in the output and the JSON). Then ``--repeat`` rounds in a
rotating order; figures are medians, the ratio is ours/Dovecot (**below 1x ours is
faster**), with the servers' CPU seconds. Nothing here is a pass/fail threshold. Needs
Debian's ``dovecot-core`` and ``dovecot-imapd``; without them it exits 2.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imap_bench as ib

from bench import machine, servers

LINES = (
    ("select_qresync", "SELECT INBOX (QRESYNC (uidvalidity modseq))"),
    ("fetch_vanished", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE modseq VANISHED)"),
    ("fetch_all_flags", "UID FETCH 1:* (FLAGS) (no CONDSTORE: every message)"),
)


def _code(kept: bytes, name: bytes) -> int:
    found = re.search(rb"\[" + name + rb" (\d+)\]", kept)
    if found is None:
        raise ib.IMAPFailure(f"no {name.decode()} in the SELECT response")
    return int(found.group(1))


def _vanished(kept: bytes) -> set[int]:
    """The UIDs of every ``VANISHED (EARLIER)`` response in ``kept``."""
    uids: set[int] = set()
    for found in re.finditer(rb"\* VANISHED \(EARLIER\) ([0-9:,]+)", kept):
        for part in found.group(1).split(b","):
            first, _, last = part.partition(b":")
            uids.update(range(int(first), int(last or first) + 1))
    return uids


def prepare(side: ib.Side, context: Any, gone: list[int], flagged: list[int]) -> dict[str, int]:
    """Sync point, then the changes by another session: (uidvalidity, modseq) remembered."""
    client = side.login(context)
    client.command("ENABLE QRESYNC")
    kept = client.command("SELECT INBOX", keep=True).kept
    point = {"uidvalidity": _code(kept, b"UIDVALIDITY"), "modseq": _code(kept, b"HIGHESTMODSEQ")}
    client.close()
    other = side.login(context)
    other.command("SELECT INBOX")
    uids = ",".join(str(uid) for uid in gone)
    other.command(f"UID STORE {uids} +FLAGS.SILENT (\\Deleted)")
    other.command(f"UID EXPUNGE {uids}")
    other.command(f"UID STORE {','.join(str(u) for u in flagged)} +FLAGS.SILENT ($Bench)")
    other.close()
    return point


def run_line(
    key: str, side: ib.Side, context: Any, point: dict[str, int], keep: bool = False
) -> dict[str, Any]:
    """One measured line on a fresh session (login, ENABLE and SELECT are not timed, except
    the SELECT that is the line); with ``keep`` the responses' bytes are in ``kept``."""
    client = side.login(context)
    replies: list[ib.Reply] = []
    try:
        if key != "fetch_all_flags":
            client.command("ENABLE QRESYNC")
        if key == "select_qresync":
            text = f"SELECT INBOX (QRESYNC ({point['uidvalidity']} {point['modseq']}))"
        else:
            client.command("SELECT INBOX")
            text = "UID FETCH 1:* (FLAGS)"
            if key == "fetch_vanished":
                text += f" (CHANGEDSINCE {point['modseq']} VANISHED)"

        def work() -> ib.Reply:
            replies.append(client.command(text, keep=keep))
            return replies[-1]

        row = ib.measure(side, work)
    finally:
        client.close()
    if keep:
        row["kept"] = replies[0].kept
    return row


def run_bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    samples = ib.generated_messages(args.messages, args.seed)
    ours = ib.OurServer(workdir / "ours", connections=10, overrides={})
    dovecot = ib.DovecotInstance(
        workdir, users={ib.USER: ib.PASSWORD}, host=ib.DOVECOT_HOST, tls=True, keep=True
    )
    reactor_thread = servers.ReactorThread()
    try:
        machine.log(f"filling both with {args.messages} messages")
        reactor_thread.run(lambda: ib.fill_ours(ours.data_dir, samples))
        dovecot.configure()
        ib.fill_dovecot(dovecot, samples)
    finally:
        reactor_thread.stop()
    rng = random.Random(args.seed + 2)
    chosen = rng.sample(range(1, args.messages + 1), 2 * args.changes)
    gone, flagged = sorted(chosen[: args.changes]), sorted(chosen[args.changes :])
    context = servers.client_context()
    ours.start()
    dovecot.start()
    sides = [
        ib.Side("ours", ib.OUR_HOST, lambda: ours.port, ours.start, ours.cpu_seconds,
                ours.memory_kib),
        ib.Side("dovecot", ib.DOVECOT_HOST, lambda: dovecot.imaps_port or 0, dovecot.start,
                dovecot.cpu_seconds, dovecot.memory_kib),
    ]  # fmt: skip
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        key: {side.name: [] for side in sides} for key, _ in LINES
    }
    checks: list[str] = []
    try:
        points = {side.name: prepare(side, context, gone, flagged) for side in sides}
        for side in sides:  # first pass: answers compared, figures not kept
            for key, label in LINES:
                row = run_line(key, side, context, points[side.name], keep=True)
                kept = row.pop("kept", b"")
                expected = args.messages - args.changes if key == "fetch_all_flags" else None
                if key != "fetch_all_flags" and _vanished(kept) != set(gone):
                    checks.append(f"{side.name} {label}: VANISHED differs from the expunges")
                if expected is None and row["fetches"] < len(flagged):
                    checks.append(f"{side.name} {label}: {row['fetches']} FETCH responses")
                if expected is not None and row["fetches"] != expected:
                    checks.append(f"{side.name} {label}: {row['fetches']} != {expected}")
        for attempt in range(args.repeat):
            order = sides[attempt % 2 :] + sides[: attempt % 2]
            for key, _label in LINES:
                for side in order:
                    runs[key][side.name].append(run_line(key, side, context, points[side.name]))
    finally:
        ours.stop()
        dovecot.stop(remove=not args.keep)
    results = []
    for key, label in LINES:
        row: dict[str, Any] = {"key": key, "label": label}
        for side in sides:
            measured = runs[key][side.name]
            row[side.name] = {
                "seconds": statistics.median(r["seconds"] for r in measured),
                "server_cpu_seconds": statistics.median(r["server_cpu_seconds"] for r in measured),
                "fetches": measured[-1]["fetches"],
                "runs": measured,
            }
        theirs = row["dovecot"]["seconds"]
        row["ratio"] = round(row["ours"]["seconds"] / theirs, 3) if theirs else None
        results.append(row)
    return {
        "config": {"messages": args.messages, "changes": args.changes, "repeat": args.repeat,
                   "seed": args.seed},
        "checks": checks,
        "results": results,
    }  # fmt: skip


def render(document: dict[str, Any]) -> str:
    config = document["config"]
    lines = [
        f"QRESYNC: {config['messages']} messages, {config['changes']} expunged and "
        f"{config['changes']} flagged since the client's modseq; median of {config['repeat']} "
        "runs; ratio ours/dovecot (below 1x ours is faster)"
    ]
    header = f"{'line':<56} {'ours s':>8} {'dovecot s':>9} {'ours/dc':>8} {'FETCHes':>8}"
    lines += [header, "-" * len(header)]
    for row in document["results"]:
        ours, dovecot, ratio = row["ours"], row["dovecot"], row["ratio"]
        lines.append(
            f"{row['label']:<56} {ours['seconds']:>8.4f} {dovecot['seconds']:>9.4f} "
            f"{'n/a' if ratio is None else f'{ratio:.2f}x':>8} {ours['fetches']:>8}"
        )
    lines += [f"WARNING: {note}" for note in document["checks"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the INBOX")
    parser.add_argument("--changes", type=int, default=1000, help="expunged, and flagged")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds (median)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the messages and changes")
    servers.add_run_options(parser, "smoke run: 300 messages, 30 changes")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.changes, args.repeat = min(args.messages, 300), 30, 1
    if min(args.messages, args.changes, args.repeat) < 1 or 2 * args.changes > args.messages:
        parser.error("--messages, --changes and --repeat must be positive, changes <= half")
    reason = ib.unavailable_reason()
    if reason:
        print(f"qresync_bench: {reason}", file=sys.stderr)
        return 2
    with servers.temporary_workdir("qresync-bench-", args.workdir, args.keep) as workdir:
        document = run_bench(args, workdir)
    servers.report(document, render, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
