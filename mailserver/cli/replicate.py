"""``mailserver replicate DEST``: ship the data directory to a replica, continuously.

- ``replicate DEST [--interval S]``: run a cycle every S seconds (start to start; at once
  again when a cycle took longer) until SIGTERM or Ctrl-C, which let the cycle in progress
  finish. One line per cycle on stdout; a failed cycle is one ``error:`` line on stderr and
  in ``DEST/status.json``, and the next cycle tries again. The first cycle (a full copy)
  shows progress bars on stderr.
- ``replicate DEST --once``: one cycle with progress bars; exit status 1 if it failed.
- ``replicate DEST --status [--max-lag S]``: print the replica's status; exit status 1 when
  the last finished cycle's snapshot is older than S seconds (for monitoring).

DEST is a directory on another disk, or on another host mounted here (NFS, sshfs); after a
cycle ``DEST/current`` is a complete data directory and a backup. The recovery point
objective is ``--interval`` plus one cycle's duration. See :mod:`mailserver.store.replica`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from mailserver.cli.backup import Bars
from mailserver.cli.common import add_config_option, load_config
from mailserver.cli.storage import EXIT_FAILED
from mailserver.errors import MailError
from mailserver.store.replica import CycleReport, Replica, ReplicaError, read_status

__all__ = ["register", "run_replicate"]

#: Seconds between cycle starts unless --interval says otherwise.
DEFAULT_INTERVAL = 60.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def register(subparsers: Any) -> None:
    """Add the ``replicate`` command."""
    parser = subparsers.add_parser(
        "replicate",
        help="ship the data directory to a replica directory, continuously",
        description="Every --interval seconds, take a consistent snapshot of the index, "
        "ship the message and queue files the replica lacks, and switch DEST/current to the "
        "new copy atomically. DEST/current is always a complete data directory (and a "
        "backup) as of the last finished cycle: the recovery point objective is the "
        "interval plus one cycle's duration.",
    )
    parser.add_argument(
        "dest", metavar="DEST", help="the replica: a new directory, or one made by 'replicate'"
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between cycle starts (default {DEFAULT_INTERVAL:g})",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one cycle and exit")
    mode.add_argument(
        "--status", action="store_true", help="print the replica's status and exit"
    )
    parser.add_argument(
        "--max-lag",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="with --status: exit 1 when the last snapshot is older than this",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run_replicate)


def run_replicate(args: argparse.Namespace) -> int:
    """Run the command (see the module docstring)."""
    dest = os.path.abspath(args.dest)
    if args.status:
        return _print_status(dest, args.max_lag)
    if args.max_lag is not None:
        raise ReplicaError("--max-lag goes with --status")
    config = load_config(args)
    replica = Replica(
        config.server.data_path,
        dest,
        map_size=config.store.map_size_mb * 1024 * 1024,
        fsync=config.store.fsync,
    )
    try:
        replica.open()
    except OSError as error:
        raise ReplicaError(f"cannot open the replica {dest}: {error}") from None
    try:
        if args.once:
            report = _cycle(replica, Bars())
            _print_cycle(report, dest)
            return 0
        return _loop(replica, dest, args.interval)
    finally:
        replica.close()


def _cycle(replica: Replica, bars: Bars | None) -> CycleReport:
    """One cycle; a failure is recorded in the status and raised as ReplicaError."""
    try:
        return replica.cycle(progress=bars) if bars is not None else replica.cycle()
    except (MailError, OSError) as error:
        text = (error.detail or error.text) if isinstance(error, MailError) else str(error)
        try:
            replica.record_failure(error)
        except OSError:
            pass  # the replica's disk is the problem: the error line says so
        raise ReplicaError(
            f"replication cycle failed: {text}; the replica keeps its last finished cycle"
        ) from None
    finally:
        if bars is not None:
            bars.finish()


def _loop(replica: Replica, dest: str, interval: float) -> int:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    print(f"replicating to {dest} every {interval:g}s (SIGTERM or Ctrl-C stops)", flush=True)
    try:
        first = replica.current_generation() == 0
        while not stop.is_set():
            began = time.monotonic()
            try:
                report = _cycle(replica, Bars() if first else None)
            except ReplicaError as error:
                print(f"error: {error.detail or error.text}", file=sys.stderr, flush=True)
            else:
                first = False
                _print_cycle(report, dest)
            stop.wait(max(0.0, began + interval - time.monotonic()))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("replication stopped", flush=True)
    return 0


def _print_cycle(report: CycleReport, dest: str) -> None:
    print(
        f"cycle {report.generation}: {report.messages} message(s), {report.queued} queued; "
        f"shipped {report.shipped} file(s) ({report.shipped_bytes} bytes), removed "
        f"{report.removed}; took {report.duration:.2f}s; {dest}/current is complete as of "
        f"{_when(report.started)}",
        flush=True,
    )


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _print_status(dest: str, max_lag: float | None) -> int:
    if not os.path.isdir(dest):
        raise ReplicaError(f"{dest} is not a directory; give the replica's directory")
    status = read_status(dest)
    if "generation" not in status:
        print(f"{dest}: no cycle has finished yet")
        print(f"last error: {status.get('last_error')}")
        return EXIT_FAILED
    lag = time.time() - float(status["snapshot_at"])
    print(f"replica:       {dest}/current -> generation {status['generation']}")
    print(f"source:        {status.get('source')}")
    print(f"last cycle:    began {_when(status['started'])}, took {status['duration']:.2f}s")
    print(f"lag:           {lag:.1f}s since its snapshot")
    print(
        f"holds:         {status['messages']} message(s), {status['queued']} queued, "
        f"{status['files']} file(s), {status['bytes']} bytes"
    )
    print(
        f"shipped:       {status['shipped']} file(s), {status['shipped_bytes']} bytes; "
        f"removed {status['removed']}"
    )
    if status.get("last_error"):
        print(f"last error:    {_when(status['last_error_at'])}: {status['last_error']}")
    if max_lag is not None and lag > max_lag:
        print(f"error: the replica lags {lag:.0f}s, more than {max_lag:g}s", file=sys.stderr)
        return EXIT_FAILED
    return 0
