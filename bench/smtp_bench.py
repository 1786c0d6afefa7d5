"""Inbound SMTP throughput: our server against a local Postfix, both durable, same run.

    .venv/bin/python bench/smtp_bench.py [--messages N] [--sessions 20] [--sizes 4096,102400]
        [--repeat 3] [--warmup 40] [--json PATH] [--quick] [--workdir DIR] [--keep]
        [--set SECTION.KEY=VALUE ...] [--postfix-set KEY=VALUE ...] [--skip-postfix]
        [--workers 1,2] [--full-workers 2|none] [--base-code DIR]

For every message size, Postfix's ``smtp-source`` (``-s SESSIONS -m N -l SIZE``, one message
per connection, no PIPELINING, no TLS) sends N messages for alice@example.org to

- **ours**: ``twistd -n mailserver`` on 127.0.0.1 with ``[store] fsync = true`` (a 250 after
  DATA means the file, its directory entry and the index commit are on disk), and
- **postfix**: a private Postfix instance (``tests/peers/postfix.py``) on 127.0.0.2 whose
  ``virtual`` agent delivers example.org into a Maildir (the queue file is fsynced before
  the 250, the Maildir file before its rename into ``new/``),

and measures the wall time from the start of smtp-source until smtp-source has exited *and*
all N messages are files in the recipient's Maildir (``new/`` + ``cur/``): accepted-and-stored
messages per second. Runs are interleaved (ours, postfix, ours, ...) ``--repeat`` times after
a warm-up; the medians are reported and every run is kept in the JSON.

CPU per message comes from ``/proc``: for ours, the on-CPU time of every twistd thread
(``schedstat``, split into the reactor thread and the others); for Postfix, its live daemons
(by name: smtpd, cleanup, qmgr, trivial-rewrite, virtual, postlogd, ...), the master, and the
daemons the master reaped during the run (cutime+cstime, clock ticks). smtp-source's own CPU
is reported apart (the same load generator for both), so is the kernel's time in its own
threads and interrupts (``kernel_cpu_ms_per_msg``: journal commits for fsync, loopback TCP;
shared by everything running, so only indicative), and so is the share of all CPUs that went
to other processes during a run (``foreign_cpu_share``; the output warns above 10 %).

Our server runs in two configurations (:data:`PROFILES`), each with a given ``[smtp]
workers`` count, and every row says which: **ours wN** does the work the Postfix peer does
(``filter.enabled = false``, ``msgauth.enabled = false``: no content filter, no
SPF/DKIM/ARC/DMARC, everything else at its default, trace log and metrics included) with N
processes; **full wN** is our full defaults (spam filter, rate limits, message
authentication), so the cost of the checks stays visible. ``--workers`` gives the N of the
``ours`` rows (default ``1,2``: the machine has two cores and Postfix uses both),
``--full-workers`` those of the ``full`` rows (default ``2``; ``none`` for no such row).

The result is a table (and ``--json``) with msgs/s for every row, each row's ratio to
Postfix and the issue's targets (>= 1.5x at 4 KB, >= 1.0x at 100 KB), judged on the
``ours`` row with the most workers (``ratio`` in the JSON; ``ratios`` has every row). Needs
root and Debian's ``postfix`` package (smtp-source is in it); with ``--skip-postfix`` only
our server is measured.
``--set`` changes our config in every row, on top of its profile (e.g. ``--set
log.level=warn``), ``--postfix-set`` Postfix's main.cf (e.g. ``--postfix-set
in_flow_delay=0``). Every server of ours runs interleaved with Postfix in the same run; the
CPU of the worker processes counts as ours ("worker processes" in the parts), and a server
is measured only once all its workers serve.
``--base-code DIR`` (an A/B of two versions of the code) adds a ``base wN`` row beside each
``ours wN`` row: the same settings, but its server imports ``mailserver`` from ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))

from bench import machine, servers  # noqa: E402
from tests.peers.postfix import (  # noqa: E402
    PostfixInstance,
    child_pids,
    free_port,
    process_cpu_seconds,
    unavailable_reason,
    virtual_maildir_settings,
    which,
)

DOMAIN = "example.org"
RECIPIENT = f"alice@{DOMAIN}"
SENDER = "sender@example.net"
CLIENT_HELO = "bench-client.example.net"
#: The issue's targets: minimum ratio ours/postfix per message size.
TARGETS = {4096: 1.5, 102400: 1.0}
DEFAULT_SIZES = (4096, 102400)

#: Our configurations: row prefix -> (settings on top of the bench's base config, what it is).
PROFILES: dict[str, tuple[dict[str, Any], str]] = {
    "ours": (
        {"filter.enabled": False, "msgauth.enabled": False},
        "the peer's work: no content filter, no SPF/DKIM/ARC/DMARC (filter.enabled = false, "
        "msgauth.enabled = false), everything else default",
    ),
    "full": ({}, "our full defaults: spam filter, rate limits, SPF/DKIM/ARC/DMARC"),
    "base": (
        {"filter.enabled": False, "msgauth.enabled": False},
        "A/B: the 'ours' settings, with the mailserver package of --base-code",
    ),
}


def row_name(profile: str, workers: int) -> str:
    """The table's name for our server in ``profile`` with ``workers`` processes."""
    return f"{profile} w{workers}"


def our_rows(
    workers: tuple[int, ...], full_workers: tuple[int, ...], base: bool = False
) -> list[tuple[str, str, int]]:
    """(row name, profile, workers) of every server of ours, ``ours`` rows first (each
    followed by its ``base`` row when ``base``: an A/B of two versions of the code)."""
    rows = []
    for count in dict.fromkeys(workers):
        rows += [("ours", count), ("base", count)] if base else [("ours", count)]
    rows += [("full", count) for count in dict.fromkeys(full_workers)]
    return [(row_name(profile, count), profile, count) for profile, count in rows]


def default_messages(size: int) -> int:
    """Messages per run when --messages is not given: 500 small, 200 large."""
    return 500 if size <= 16 * 1024 else 200


def count_maildir(maildir: Path) -> int:
    """Files in ``maildir/new`` and ``maildir/cur`` (0 while the Maildir does not exist)."""
    total = 0
    for sub in ("new", "cur"):
        try:
            total += len(os.listdir(maildir / sub))
        except FileNotFoundError:
            pass
    return total


class OurServer(servers.TwistdServer):
    """Our server, SMTP only."""

    def __init__(
        self,
        directory: Path,
        *,
        max_connections_per_ip: int = 200,
        overrides: dict[str, Any] | None = None,
        workers: int = 1,
        code: Path | None = None,
    ) -> None:
        self.workers = workers
        self.code = code
        self.data_dir = directory / "var"
        port = free_port("127.0.0.1")
        base: dict[str, dict[str, Any]] = {
            "server": {"hostname": "mx.bench.test", "data_dir": str(self.data_dir)},
            "store": {"fsync": True},
            "auth": {"bcrypt_cost": 4},
            "smtp": {  # only the SMTP listener: runs never collide
                "listen": [f"tcp:{port}:interface=127.0.0.1"],
                "max_connections": max(200, max_connections_per_ip),
                "max_connections_per_ip": max_connections_per_ip,
                "workers": workers,
            },
        }
        super().__init__(
            directory, servers.server_config(base, overrides), host="127.0.0.1", port=port
        )

    def spawn(self) -> None:
        """Start twistd; with ``code``, twistd and its workers import ``mailserver`` from
        that directory (PYTHONPATH) instead of this checkout."""
        if self.code is None:
            super().spawn()
            return
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(self.code)
        try:
            super().spawn()
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved

    def provision(self) -> None:
        """Create example.org, alice and her store account (before the server starts)."""
        servers.run_on_reactor(lambda: _provision(self.data_dir))

    def start(self, timeout: float = 30.0) -> None:
        """Start twistd; with workers, also wait until every worker process serves."""
        super().start(timeout)
        if self.workers <= 1:
            return
        assert self.process is not None
        deadline = time.monotonic() + 60.0
        while (
            len(child_pids(self.process.pid)) < self.workers - 1
            or self.log().count(" listening socket(s) of the server") < self.workers - 1
        ):
            if time.monotonic() > deadline or not self.alive():
                raise RuntimeError(f"smtp workers not serving:\n{self.log_tail()}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """On-CPU seconds of twistd and of its live worker processes so far."""
        if self.process is None:
            return 0.0
        pid = self.process.pid
        return process_cpu_seconds(pid) + sum(process_cpu_seconds(c) for c in child_pids(pid))

    def cpu_parts(self) -> CpuSnapshot:
        """Per live thread (by tid): "reactor thread" (twistd's main one), "other threads"
        (twistd's others) or "worker processes" (every thread of every worker)."""
        assert self.process is not None
        pid = self.process.pid
        parts = {
            tid: ("reactor thread" if tid == pid else "other threads", seconds)
            for tid, seconds in thread_cpu_seconds(pid).items()
        }
        for child in child_pids(pid):
            for tid, seconds in thread_cpu_seconds(child).items():
                parts[tid] = ("worker processes", seconds)
        return parts

    def stored(self) -> int:
        """Messages in alice's INBOX Maildir (new/ + cur/)."""
        return count_maildir(self.data_dir / "mail" / DOMAIN / "alice")

    def describe_failure(self) -> str:
        """The tail of the server log."""
        return self.log_tail()


async def _provision_all(data_dirs: list[Path]) -> None:
    """:func:`_provision` each data directory in turn."""
    for data_dir in data_dirs:
        await _provision(data_dir)


async def _provision(data_dir: Path) -> None:
    """The provisioning itself (runs inside the reactor)."""
    async with servers.provisioned(
        data_dir, DOMAIN, {RECIPIENT: "bench-password"}, map_size=64 << 20
    ):
        pass


class PostfixTarget:
    """A private Postfix delivering example.org with ``virtual`` into a Maildir."""

    def __init__(
        self, directory: Path, keep: bool = False, overrides: dict[str, str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.mail_base = directory / "maildirs"
        self.mail_base.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(self.mail_base, nobody.pw_uid, nobody.pw_gid)
        settings = virtual_maildir_settings(
            DOMAIN, RECIPIENT, self.mail_base, nobody.pw_uid, nobody.pw_gid
        )
        settings.update(overrides or {})
        self.settings = settings
        self.instance = PostfixInstance(directory, settings=settings, keep=keep)
        self.port = self.instance.smtpd_port
        self.host = self.instance.smtpd_host

    def start(self) -> None:
        self.instance.start()

    def stop(self) -> None:
        self.instance.stop()

    def cpu_seconds(self) -> float:
        return self.instance.cpu_seconds()

    def cpu_parts(self) -> CpuSnapshot:
        """Per live daemon (by pid, named by its command: smtpd, cleanup, ...), the master,
        and under :data:`REAPED` everything the master has reaped so far."""
        pid = self.instance.master_pid()
        if pid is None:
            return {}
        parts: CpuSnapshot = {}
        for child in child_pids(pid):
            try:
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            parts[child] = (name, process_cpu_seconds(child))
        own = process_cpu_seconds(pid, children=False)
        parts[pid] = ("master", own)
        parts[REAPED] = ("exited daemons", process_cpu_seconds(pid, children=True) - own)
        return parts

    def stored(self) -> int:
        return count_maildir(self.mail_base / DOMAIN / "alice")

    def describe_failure(self) -> str:
        return f"{self.instance.queued()} queued\n{self.instance.maillog_text()[-4000:]}"


#: A CPU snapshot: process or thread id (or :data:`REAPED`) -> (part name, CPU seconds).
CpuSnapshot = dict[int, tuple[str, float]]
#: Snapshot key for the CPU of children already reaped (their full lifetimes).
REAPED = -1


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per part name used between two snapshots.

    A process in ``before`` that is gone in ``after`` shows up again, with its whole life,
    in the :data:`REAPED` total, so its ``before`` value is taken off that total: every
    process contributes only what it used in between, whichever part it ends up in."""
    parts: dict[str, float] = {}
    for key, (name, seconds) in after.items():
        previous = before.get(key, (name, 0.0))[1]
        parts[name] = parts.get(name, 0.0) + seconds - previous
    for key, (_name, seconds) in before.items():
        if key not in after and REAPED in after:
            reaped = after[REAPED][0]
            parts[reaped] = parts.get(reaped, 0.0) - seconds
    return parts


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """On-CPU seconds of each live thread of ``pid`` (``/proc/PID/task/*/schedstat``)."""
    found = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found[int(task)] = (
                int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0]) / 1e9
            )
        except (OSError, ValueError, IndexError):
            continue
    return found


def run_one(
    target: Any, host: str, port: int, *, size: int, messages: int, sessions: int
) -> dict[str, Any]:
    """One smtp-source run against ``target``; timings and CPU."""
    smtp_source = which("smtp-source")
    assert smtp_source is not None
    before = target.stored()
    cpu_before = target.cpu_seconds()
    parts_before = target.cpu_parts()
    client_before = machine.children_cpu_seconds()
    tasks_before, interrupts_before = machine.system_cpu_parts()
    kernel_before, self_before = machine.kernel_threads_seconds(), machine.self_cpu_seconds()
    command = [
        smtp_source,
        "-4",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-M",
        CLIENT_HELO,
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"{host}:{port}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    accepted = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"smtp-source exited {result.returncode}: {result.stdout}{result.stderr}\n"
            f"{target.describe_failure()}"
        )
    deadline = time.monotonic() + max(60.0, messages * 0.5)
    while target.stored() - before < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {target.stored() - before}/{messages} stored\n{target.describe_failure()}"
            )
        time.sleep(0.005)
    stored = time.monotonic() - started
    cpu = target.cpu_seconds() - cpu_before
    parts = {
        name: round(seconds * 1000 / messages, 3)
        for name, seconds in cpu_delta(parts_before, target.cpu_parts()).items()
    }
    client = machine.children_cpu_seconds() - client_before
    tasks_after, interrupts_after = machine.system_cpu_parts()
    kernel = machine.kernel_threads_seconds() - kernel_before + interrupts_after - interrupts_before
    # CPU that went to other processes (other jobs on the machine, steal), as a share of all
    # CPUs over the run: task time minus the MTA, smtp-source, this bench and kernel threads.
    foreign = (
        tasks_after
        - tasks_before
        - cpu
        - client
        - (machine.self_cpu_seconds() - self_before)
        - (machine.kernel_threads_seconds() - kernel_before)
    )
    foreign_share = max(0.0, foreign) / (stored * (os.cpu_count() or 1))
    return {
        "messages": messages,
        "accept_seconds": round(accepted, 4),
        "stored_seconds": round(stored, 4),
        "msgs_per_sec": round(messages / stored, 2),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_msg": round(cpu * 1000 / messages, 3),
        "client_cpu_ms_per_msg": round(client * 1000 / messages, 3),
        "kernel_cpu_ms_per_msg": round(kernel * 1000 / messages, 3),
        "foreign_cpu_share": round(foreign_share, 3),
        "cpu_ms_per_msg_by_part": {k: v for k, v in sorted(parts.items()) if abs(v) >= 0.001},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over ``runs`` (each taken separately), plus the runs."""
    summary: dict[str, Any] = {"messages": runs[0]["messages"]}
    for key, value in runs[0].items():
        if key != "messages" and isinstance(value, int | float):
            summary[key] = round(statistics.median(run[key] for run in runs), 4)
    names = sorted({name for run in runs for name in run["cpu_ms_per_msg_by_part"]})
    summary["cpu_ms_per_msg_by_part"] = {
        name: round(
            statistics.median(run["cpu_ms_per_msg_by_part"].get(name, 0.0) for run in runs), 3
        )
        for name in names
    }
    summary["runs"] = runs
    return summary


def run_bench(
    sizes: list[int],
    messages: int | None,
    sessions: int,
    workdir: Path,
    *,
    warmup: int,
    repeat: int = 1,
    skip_postfix: bool,
    keep: bool = False,
    overrides: dict[str, Any] | None = None,
    postfix_overrides: dict[str, str] | None = None,
    workers: tuple[int, ...] = (1, 2),
    full_workers: tuple[int, ...] = (2,),
    base_code: Path | None = None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Start both MTAs, warm them up, measure every size; the result document. One server
    of ours per row of :func:`our_rows`; ``ratio`` is the one of the ``ours`` row with the
    most workers (the first row when there is none), ``ratios`` has each row's."""
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    rows = our_rows(workers, full_workers, base_code is not None)
    if not rows:
        raise ValueError("no server of ours to measure: give --workers or --full-workers")
    ours_all = {
        name: OurServer(
            workdir / name.replace(" ", "-"),
            max_connections_per_ip=max(100, sessions * 2),
            overrides={**PROFILES[profile][0], **(overrides or {})},
            workers=count,
            code=base_code if profile == "base" else None,
        )
        for name, profile, count in rows
    }
    configurations = {
        name: {
            "profile": profile,
            "description": PROFILES[profile][1],
            "workers": count,
            "settings": {**PROFILES[profile][0], **(overrides or {}), "smtp.workers": count},
            "config": {k: v for k, v in ours_all[name].config.items() if k != "server"},
        }
        for name, profile, count in rows
    }
    same_work = [(count, name) for name, profile, count in rows if profile == "ours"]
    judged = max(same_work)[1] if same_work else rows[0][0]
    data_dirs = [server.data_dir for server in ours_all.values()]
    servers.run_on_reactor(lambda: _provision_all(data_dirs))  # the reactor runs only once
    peer = (
        None
        if skip_postfix
        else PostfixTarget(workdir / "postfix", keep=keep, overrides=postfix_overrides)
    )
    results = []
    try:
        for server in ours_all.values():
            server.start()
        if peer is not None:
            peer.start()
        targets: list[tuple[str, Any, str, int]] = [
            (name, server, "127.0.0.1", server.port) for name, server in ours_all.items()
        ]
        if peer is not None:
            targets.append(("postfix", peer, peer.host, peer.port))
        if warmup:
            for name, target, host, port in targets:
                log(f"warm-up: {warmup} x {sizes[0]} B -> {name}")
                run_one(target, host, port, size=sizes[0], messages=warmup, sessions=sessions)
        for size in sizes:
            count = messages or default_messages(size)
            row: dict[str, Any] = {"size": size, "messages": count, "sessions": sessions}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
            for attempt in range(repeat):  # interleaved, so drift hits both alike
                for name, target, host, port in targets:
                    log(f"{count} x {size} B, {sessions} sessions -> {name} #{attempt + 1}")
                    runs[name].append(
                        run_one(target, host, port, size=size, messages=count, sessions=sessions)
                    )
            for name, measured in runs.items():
                row[name] = summarize(measured)
                if name in configurations:
                    row[name]["configuration"] = {
                        k: configurations[name][k] for k in ("profile", "workers", "settings")
                    }
            if peer is not None:
                theirs = row["postfix"]["cpu_ms_per_msg"]
                target_ratio = TARGETS.get(size)
                row["target_ratio"] = target_ratio
                row["ratios"] = {}
                for name in ours_all:
                    ratio = round(row[name]["msgs_per_sec"] / row["postfix"]["msgs_per_sec"], 3)
                    cpu_ratio = (
                        round(row[name]["cpu_ms_per_msg"] / theirs, 3) if theirs > 0 else None
                    )
                    row["ratios"][name] = {
                        "ratio": ratio,
                        "cpu_ratio": cpu_ratio,
                        "target_met": None if target_ratio is None else ratio >= target_ratio,
                    }
                first = row["ratios"][judged]
                row["judged"] = judged
                row["ratio"] = first["ratio"]
                row["cpu_ratio"] = first["cpu_ratio"]
                row["target_met"] = first["target_met"]
            results.append(row)
    finally:
        for server in ours_all.values():
            server.stop()
        if peer is not None:
            peer.stop()
    return {
        "machine": {
            **machine.machine_facts(workdir, {"postfix": machine.peer_version("postfix")}),
            "loadavg_at_start": load_at_start,
        },
        "config": {
            "sessions": sessions,
            "sizes": sizes,
            "warmup": warmup,
            "repeat": repeat,
            "workers": list(dict.fromkeys(workers)),
            "full_workers": list(dict.fromkeys(full_workers)),
            "judged": judged,
            "rows": configurations,
            "postfix_overrides": postfix_overrides or {},
            "client": "smtp-source (one message per connection)",
        },
        "results": results,
    }


#: Width of the MTA column.
NAME = 9


def _mtas(row: dict[str, Any]) -> list[str]:
    """The measured MTAs of a result row, in run order (ours first, then postfix)."""
    return [k for k, v in row.items() if isinstance(v, dict) and "msgs_per_sec" in v]


def render(document: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    header = (
        f"{'size':>7} {'MTA':<{NAME}} {'msgs':>5} {'accept s':>9} {'stored s':>9} {'msgs/s':>8} "
        f"{'CPU ms/msg':>10} {'client ms/msg':>13}"
    )
    lines = [header, "-" * len(header)]
    for row in document["results"]:
        for name in _mtas(row):
            r = row[name]
            lines.append(
                f"{row['size']:>7} {name:<{NAME}} {r['messages']:>5} {r['accept_seconds']:>9.2f} "
                f"{r['stored_seconds']:>9.2f} {r['msgs_per_sec']:>8.1f} "
                f"{r['cpu_ms_per_msg']:>10.2f} {r['client_cpu_ms_per_msg']:>13.2f}"
            )
        target = row.get("target_ratio")
        for name, ratios in row.get("ratios", {}).items():
            verdict = (
                ""
                if target is None
                else f" (target >= {target}x: {'met' if ratios['target_met'] else 'NOT met'})"
            )
            cpu = "n/a" if ratios["cpu_ratio"] is None else f"{ratios['cpu_ratio']:.2f}x"
            lines.append(
                f"{row['size']:>7} ratio {name}/postfix {ratios['ratio']:.2f}x msgs/s{verdict}; "
                f"CPU per message {name}/postfix {cpu}"
            )
    lines.append("CPU ms per message by part (medians):")
    for row in document["results"]:
        for name in _mtas(row):
            if name in row:
                parts = row[name]["cpu_ms_per_msg_by_part"]
                text = ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v >= 0.005)
                lines.append(f"{row['size']:>7} {name:<{NAME}} {text}")
    lines.append("rows (the target is judged on the 'ours' row with the most workers):")
    for name, described in document["config"].get("rows", {}).items():
        settings = " ".join(f"{k}={json.dumps(v)}" for k, v in described["settings"].items())
        lines.append(f"  {name:<{NAME}} {described['description']}; {settings}")
    facts = document["machine"]
    foreign = max(
        (
            row[name]["foreign_cpu_share"]
            for row in document["results"]
            for name in _mtas(row)
        ),
        default=0.0,
    )
    if foreign > machine.NOISY:
        lines.append(
            f"WARNING: up to {foreign:.0%} of all CPU time went to other processes (or steal) "
            "during a measured run: the machine was busy, these figures are not reliable"
        )
    lines.append(
        f"machine: {facts['cpus']} x {facts['cpu_model']}, kernel {facts['kernel']}, "
        f"{facts['filesystem']}, Python {facts['python']}, Postfix {facts['postfix']}; "
        f"load average {facts['loadavg_at_start'][0]} at start, "
        f"{facts['loadavg_at_end'][0]} at end"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="messages per size (default 500 / 200)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated message payload sizes in bytes",
    )
    parser.add_argument("--warmup", type=int, default=40, help="warm-up messages per MTA")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per size and MTA (interleaved); medians are reported",
    )
    parser.add_argument("--skip-postfix", action="store_true", help="measure our server only")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated [smtp] workers values of the 'ours' rows (the peer's work: "
        "filter and msgauth off), one server each",
    )
    parser.add_argument(
        "--full-workers",
        default="2",
        help="comma-separated [smtp] workers values of the 'full' rows (our full defaults), "
        "or 'none'",
    )
    parser.add_argument(
        "--base-code",
        type=Path,
        help="A/B: also run a 'base wN' row beside each 'ours wN' row, same settings, whose "
        "server imports the mailserver package from this directory (e.g. an export of an "
        "older commit)",
    )
    servers.add_run_options(
        parser,
        "smoke run: 10 messages, 5 sessions, one run, no warm-up",
        "also write the results here",
    )
    servers.add_config_options(
        parser, "--postfix-set", "extra main.cf setting for the Postfix peer, e.g. in_flow_delay=0"
    )
    args = parser.parse_args(argv)

    reason = unavailable_reason()
    if reason and not args.skip_postfix:
        print(f"smtp_bench: {reason}", file=sys.stderr)
        return 2
    if which("smtp-source") is None:
        print("smtp_bench: smtp-source not found (Debian package postfix)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    workers = _counts(parser, "--workers", args.workers)
    full_workers = _counts(parser, "--full-workers", args.full_workers)
    if not workers and not full_workers:
        parser.error("--workers and --full-workers are both 'none': nothing of ours to measure")
    messages, sessions, warmup, repeat = args.messages, args.sessions, args.warmup, args.repeat
    if args.quick:
        messages, sessions, warmup, repeat = messages or 10, min(sessions, 5), 0, 1

    if args.base_code and not (args.base_code / "mailserver" / "__init__.py").is_file():
        parser.error(f"--base-code: no mailserver package in {args.base_code}")
    overrides = servers.parse_overrides(args.set, parser)
    postfix_overrides = servers.parse_settings(args.postfix_set, parser, "--postfix-set")
    with servers.temporary_workdir("smtp-bench-", args.workdir, args.keep) as workdir:
        document = run_bench(
            sizes,
            messages,
            sessions,
            workdir,
            warmup=warmup,
            repeat=max(1, repeat),
            skip_postfix=args.skip_postfix,
            keep=args.keep,
            overrides=overrides,
            postfix_overrides=postfix_overrides,
            workers=workers,
            full_workers=full_workers,
            base_code=args.base_code.resolve() if args.base_code else None,
            log=lambda text: print(text, file=sys.stderr),
        )
    servers.report(document, render, args.json)
    return 0


def _counts(parser: argparse.ArgumentParser, option: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of worker counts (each >= 1); ``none`` or empty is none."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        counts = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        parser.error(f"{option}: not a comma-separated list of numbers: {text!r}")
    if not counts or min(counts) < 1:
        parser.error(f"{option}: give counts of at least 1 (e.g. 1,2), or none")
    return counts


if __name__ == "__main__":
    sys.exit(main())
