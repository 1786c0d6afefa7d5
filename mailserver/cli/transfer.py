"""``mailserver import USER PATH`` and ``mailserver export USER PATH``: one account's mail
in and out as Maildir++ or mbox.

- ``import USER PATH [--folder NAME]``: PATH is a Maildir++ tree, an mbox file or a directory
  of mbox files (found out by looking, see :mod:`mailserver.store.transfer`). Every message
  is appended through the store, so UIDs, quota and the index stay right; flags and internal
  dates are kept where the format carries them; missing folders are created. ``--folder``
  puts everything under that folder (a single mbox file goes into it; default INBOX).
  Importing a source twice appends its messages twice: nothing is de-duplicated.
- ``export USER PATH [--format maildir|mbox] [--folder NAME ...]``: PATH (a new directory)
  gets a Maildir++ tree that mutt, Dovecot and Python's ``mailbox.Maildir`` read, or one
  ``<folder>.mbox`` file per folder.

Progress goes to stderr as a bar; one summary line to stdout. An account over its quota
stops the import with what was done and what to do.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.spam import ProgressBar
from mailserver.cli.storage import CommandError, address, run_with_storage, say_note
from mailserver.config import Config
from mailserver.errors import InvalidName, NoSuchUser, QuotaExceeded
from mailserver.store.maildir_store import MaildirStore
from mailserver.store.transfer import (
    FORMATS,
    ImportReport,
    TransferError,
    export_account,
    import_sources,
    prepare_target,
    sources,
)

__all__ = ["register", "run_export", "run_import"]


def register(subparsers: Any) -> None:
    """Add the ``import`` and ``export`` commands."""
    importer = subparsers.add_parser(
        "import",
        help="import a maildir or mbox into an account",
        description="Append the messages of a Maildir++ tree, an mbox file or a directory "
        "of mbox files to USER's folders (created as needed), keeping flags and dates.",
    )
    importer.add_argument("address", metavar="USER", help="the account, e.g. alice@example.org")
    importer.add_argument("path", metavar="PATH", help="a maildir, an mbox file or a directory")
    importer.add_argument(
        "--folder",
        metavar="NAME",
        default=None,
        help="put everything under this folder (a single mbox: into it; default INBOX)",
    )
    add_config_option(importer)
    importer.set_defaults(handler=run_import)

    exporter = subparsers.add_parser(
        "export",
        help="export an account as a maildir or mbox files",
        description="Write USER's folders into PATH (a new directory) as a Maildir++ tree "
        "or one <folder>.mbox file per folder, keeping flags and internal dates.",
    )
    exporter.add_argument("address", metavar="USER", help="the account, e.g. alice@example.org")
    exporter.add_argument("path", metavar="PATH", help="a new directory")
    exporter.add_argument(
        "--format", choices=FORMATS, default="maildir", help="output format (default maildir)"
    )
    exporter.add_argument(
        "--folder",
        metavar="NAME",
        action="append",
        default=None,
        help="export only this folder (repeatable; default every folder)",
    )
    add_config_option(exporter)
    exporter.set_defaults(handler=run_export)


def _account(store: MaildirStore, who: str) -> Any:
    try:
        return store.account(who)
    except NoSuchUser:
        raise CommandError(
            f"{who} has no mailbox here; create it first: mailserver user add {who}"
        ) from None


def run_import(args: argparse.Namespace) -> int:
    """Import PATH into USER's account; a summary line on stdout."""
    who = address(args.address)
    path = os.path.abspath(args.path)
    try:
        found = sources(path, args.folder)
    except TransferError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        account = _account(store, who)
        total = sum(source.count for source in found)
        bar = ProgressBar("importing", total)
        report = ImportReport()
        try:
            await import_sources(account, found, bar.update, report, store.in_thread)
        except QuotaExceeded:
            raise CommandError(
                f"{who} is over quota after {report.messages} of {total} message(s); raise "
                f"it (mailserver user quota {who} SIZE) or free space, then import the rest"
            ) from None
        except InvalidName as error:
            raise CommandError(
                f"a folder name in {path} is not allowed here ({error.text}); rename it "
                f"in the source, or import with --folder NAME ({report.messages} imported)"
            ) from None
        finally:
            bar.finish()
        for name in report.folders_created:
            say_note(f"created folder {name}")
        folders = len({source.folder for source in found})
        print(f"imported {report.messages} message(s) into {folders} folder(s) of {who}")
        return 0

    return run_with_storage(args, work)


def run_export(args: argparse.Namespace) -> int:
    """Export USER's account into PATH; a summary line on stdout."""
    who = address(args.address)
    path = os.path.abspath(args.path)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        account = _account(store, who)
        try:
            prepare_target(path)
        except TransferError as error:
            raise CommandError(str(error)) from None
        total = sum(info.exists for info in account.list_folders())
        bar = ProgressBar("exporting", total)
        try:
            report = await store.in_thread(  # file work: off the reactor
                export_account,
                account,
                path,
                args.format,
                bar.update,
                args.folder,
                config.store.fsync,
            )
        except TransferError as error:
            raise CommandError(str(error)) from None
        finally:
            bar.finish()
        if report.keywords_dropped:
            say_note(
                f"{report.keywords_dropped} keyword(s) not kept: a maildir folder names at "
                "most 26; export with --format mbox to keep them all"
            )
        print(
            f"exported {report.messages} message(s) in {report.folders} folder(s) of {who} "
            f"to {path} ({args.format})"
        )
        return 0

    return run_with_storage(args, work)
