"""``mailserver backup DEST``, ``mailserver restore SRC`` and ``mailserver verify [SRC]``.

- ``backup DEST [--link]``: an online, consistent snapshot of the data directory (the index
  copied with compaction in one read transaction, the message and spool files it references,
  the other files such as certificates and keys, and a manifest of SHA-256 checksums) into a
  new directory, while the server keeps accepting mail. ``--link`` hard-links message files
  instead of copying them when DEST is on the same file system (fast, but not a copy of the
  bytes: keep such a backup only until it has been copied elsewhere).
- ``restore SRC``: verify the backup, then copy it into the configured ``server.data_dir``,
  which must be absent or empty. Start the server afterwards. A backup made by an older
  version (an older index schema) is restored too: its index is upgraded as the server
  would upgrade it, then checked; one made by a newer version is refused.
- ``verify SRC``: check every file of a backup against its manifest and every index entry
  against the files (an older schema's index in an upgraded temporary copy). ``verify`` with
  no SRC checks the live data directory (index vs files).

Progress goes to stderr as bars; problems one per line on stdout; the exit status is 0 when
all is well, 1 when there is a problem (each is named) or the command could not run.
See :mod:`mailserver.store.backup` for what a backup guarantees.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mailserver.cli.common import add_config_option, load_config
from mailserver.cli.spam import ProgressBar
from mailserver.cli.storage import EXIT_FAILED, say_note
from mailserver.db import schema
from mailserver.store.backup import BackupError, take_backup
from mailserver.store.backup_check import backup_schema, restore, verify_backup, verify_live

__all__ = ["Bars", "register", "run_backup", "run_restore", "run_verify"]


def register(subparsers: Any) -> None:
    """Add the ``backup``, ``restore`` and ``verify`` commands (nouns without verbs)."""
    backup = subparsers.add_parser(
        "backup",
        help="take a consistent backup of the data directory (the server may run)",
        description="Copy the index (one consistent snapshot, compacted), the message and "
        "queue files it references and the other data files into DEST, with a manifest of "
        "checksums. Mail keeps flowing meanwhile.",
    )
    backup.add_argument("dest", metavar="DEST", help="a new (or empty) directory")
    backup.add_argument(
        "--link",
        action="store_true",
        help="hard-link message files instead of copying them (same file system only)",
    )
    add_config_option(backup)
    backup.set_defaults(handler=run_backup)

    restore_parser = subparsers.add_parser(
        "restore",
        help="restore a backup into an empty data directory",
        description="Verify the backup in SRC, then copy it into server.data_dir, which "
        "must be absent or empty. A backup made by an older mailserver version has its index "
        "upgraded (then checked); one made by a newer version is refused. Start the server "
        "afterwards.",
    )
    restore_parser.add_argument("src", metavar="SRC", help="a directory made by 'backup'")
    add_config_option(restore_parser)
    restore_parser.set_defaults(handler=run_restore)

    verify = subparsers.add_parser(
        "verify",
        help="check a backup against its manifest, or the live index against its files",
        description="With SRC: check every file of the backup against its manifest and "
        "every index entry against the files. Without: check the data directory's index "
        "against its message files. Problems are printed one per line; exit status 1 if any.",
    )
    verify.add_argument("src", metavar="SRC", nargs="?", default=None, help="a backup")
    add_config_option(verify)
    verify.set_defaults(handler=run_verify)


class Bars:
    """The progress callback of the store's backup functions: one bar per phase, on stderr."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.bar: ProgressBar | None = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase:
            self.finish()
            self.phase, self.bar = phase, ProgressBar(phase, total)
        assert self.bar is not None
        self.bar.update(done, total)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.finish()
            self.bar = None


def run_backup(args: argparse.Namespace) -> int:
    """Take the backup; a summary line on stdout."""
    config = load_config(args)
    dest = os.path.abspath(args.dest)
    bars = Bars()
    try:
        report = take_backup(
            config.server.data_path,
            dest,
            map_size=config.store.map_size_mb * 1024 * 1024,
            link=args.link,
            fsync=config.store.fsync,
            progress=bars,
        )
    finally:
        bars.finish()
    linked = f" ({report.linked} hard-linked)" if report.linked else ""
    print(
        f"backup in {dest}: {report.messages} message(s), {report.queued} queued, "
        f"{report.files} file(s){linked}, {report.bytes} bytes"
    )
    return 0


def run_restore(args: argparse.Namespace) -> int:
    """Restore SRC into the configured data directory; a summary line on stdout."""
    config = load_config(args)
    src = os.path.abspath(args.src)
    _require_dir(src)
    data_dir = config.server.data_path
    bars = Bars()
    try:
        restored = restore(
            src,
            data_dir,
            fsync=config.store.fsync,
            progress=bars,
            map_size=config.store.map_size_mb * 1024 * 1024,
        )
    finally:
        bars.finish()
    upgraded = (
        ""
        if restored.upgraded_from is None
        else f"; its index was upgraded from schema {restored.upgraded_from} to "
        f"{schema.SCHEMA_VERSION}"
    )
    print(
        f"restored {restored.files} file(s) from {src} into {data_dir}{upgraded}; "
        "start the server now"
    )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Verify a backup (SRC) or the live data directory; each problem on stdout."""
    config = load_config(args)
    bars = Bars()
    try:
        if args.src is not None:
            where = os.path.abspath(args.src)
            _require_dir(where)
            _note_older(where)
            problems = verify_backup(
                where, progress=bars, map_size=config.store.map_size_mb * 1024 * 1024
            )
        else:
            where = config.server.data_path
            problems = verify_live(
                where, config.store.map_size_mb * 1024 * 1024, progress=bars
            )
    finally:
        bars.finish()
    for problem in problems:
        print(problem)
    if problems:
        print(f"error: {len(problems)} problem(s) in {where}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{where}: OK")
    return 0


def _note_older(root: str) -> None:
    """Say on stderr when the backup in ``root`` was made with an older index schema."""
    version = backup_schema(root)
    if version is not None and 0 < version < schema.SCHEMA_VERSION:
        say_note(
            f"the backup's index has schema {version}, older than this program's "
            f"{schema.SCHEMA_VERSION}: it is checked in a temporary copy upgraded to "
            f"{schema.SCHEMA_VERSION} (restore upgrades it the same way)"
        )


def _require_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise BackupError(f"{path} is not a directory; give the directory 'backup' made")
