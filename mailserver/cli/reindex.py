"""``mailserver reindex [ADDRESS...] [--adopt]``: rebuild the index from the maildir files.

The files are the truth (see :mod:`mailserver.store.reindex`): messages get their system
flags from their file names, files the index does not know are added, and index entries
whose file is gone are dropped. Progress goes to stderr (``[2/5] alice@example.org: INBOX``),
one summary line per account to stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import CommandError, address, run_with_storage, say_note
from mailserver.config import Config
from mailserver.store.maildir_store import MaildirStore
from mailserver.store.reindex import ReindexReport, adopt_accounts, reindex


def register(subparsers: Any) -> None:
    """Add the ``reindex`` command (a noun without verbs)."""
    parser = subparsers.add_parser(
        "reindex",
        help="rebuild the index of mailboxes from their maildir files",
        description="Rebuild the index of mailboxes from their maildir files "
        "(best run while the server is stopped).",
    )
    parser.add_argument(
        "addresses",
        metavar="ADDRESS",
        nargs="*",
        help="mailboxes to reindex (default: every mailbox in the index)",
    )
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="first add mailboxes found on disk that the index does not know "
        "(e.g. after losing the index)",
    )
    add_config_option(parser)
    parser.set_defaults(handler=run_reindex)


def summary(account: str, report: ReindexReport) -> str:
    """One line describing what reindexing ``account`` changed."""
    return (
        f"{account}: {report.files_seen} file(s); messages +{report.messages_added} "
        f"-{report.messages_dropped}; flags fixed {report.flags_fixed}; "
        f"folders +{report.folders_added} -{report.folders_dropped}; "
        f"header index fixed {report.header_index_fixed}"
    )


def run_reindex(args: argparse.Namespace) -> int:
    """Adopt (with ``--adopt``), then reindex the given or all mailboxes."""
    wanted = list(dict.fromkeys(address(text) for text in args.addresses))

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if args.adopt:
            adopted = await adopt_accounts(store)
            for account in adopted:
                print(f"adopted mailbox {account}", file=sys.stderr)
                if directory.get_user(account) is None:
                    say_note(
                        f"{account} has mail but no user; to let it log in and receive: "
                        f"mailserver user add {account}"
                    )
        accounts = wanted or sorted(store.accounts())
        missing = [account for account in accounts if not store.has_account(account)]
        if missing:
            hint = "" if args.adopt else "; if its maildir is on disk, add --adopt"
            raise CommandError(f"no mailbox for {', '.join(missing)} in the index{hint}")
        if not accounts:
            say_note("no mailboxes in the index; to pick up maildirs on disk, add --adopt")
        for number, account in enumerate(accounts, 1):
            prefix = f"[{number}/{len(accounts)}] {account}"

            def progress(folder: str, prefix: str = prefix) -> None:
                print(f"{prefix}: {folder}", file=sys.stderr, flush=True)

            report = await reindex(store, account, progress)
            print(summary(account, report), flush=True)
        return 0

    return run_with_storage(args, work)
