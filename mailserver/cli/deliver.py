"""``mailserver deliver [--from SENDER] RECIPIENT...``: local delivery of a message on stdin.

For use as a mail delivery agent (e.g. from another MTA or a script). The message goes
through the store's final-delivery target in one transaction: either every recipient gets
it or none does. Exit statuses follow sysexits(3), so a calling MTA knows whether to retry:

==  ==============  =========================================================
0   EX_OK           delivered to every recipient
64  EX_USAGE        a malformed sender or recipient address
65  EX_DATAERR      the input is not a message (empty, or no header first)
67  EX_NOUSER       a recipient is not a local mailbox (nothing delivered)
69  EX_UNAVAILABLE  refused for good for another reason (e.g. mailbox full)
75  EX_TEMPFAIL     storage unavailable or another temporary error: try later
78  EX_CONFIG       the config file is wrong
==  ==============  =========================================================
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from typing import IO, Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import CommandError, run_with_storage, say_error
from mailserver.config import Config
from mailserver.errors import ConfigError, MailError, NoSuchDomain, NoSuchUser, RelayDenied
from mailserver.message.address import parse_address, parse_path
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import Address, Envelope

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: Messages up to this size stay in memory while read from stdin; larger ones spill to disk.
SPOOL_IN_MEMORY = 1 << 20

#: A header field's first line (RFC 5322 §2.2: printable US-ASCII but ":" then ":").
_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_REFUSED_RECIPIENT = (NoSuchUser, NoSuchDomain, RelayDenied)


def register(subparsers: Any) -> None:
    """Add the ``deliver`` command (a noun without verbs)."""
    parser = subparsers.add_parser(
        "deliver",
        help="deliver a message read from stdin to local mailboxes",
        description="Deliver the message on stdin to local mailboxes. Exit status: "
        "0 delivered, 64 bad address, 65 bad message, 67 unknown recipient, "
        "69 refused, 75 temporary failure (try again later), 78 bad config.",
    )
    parser.add_argument(
        "--from",
        dest="sender",
        metavar="SENDER",
        default="",
        help="envelope sender for the Return-Path header (default: <>, the null sender)",
    )
    parser.add_argument("recipients", metavar="RECIPIENT", nargs="+", help="local address")
    add_config_option(parser)
    parser.set_defaults(handler=deliver)


def parse_sender(text: str) -> Address | None:
    """``--from`` as an address; ``""`` or ``<>`` is the null sender. ValueError if bad."""
    text = text.strip()
    if text.startswith("<"):
        return parse_path(text)
    return parse_address(text) if text else None


def parse_recipient(text: str) -> Address:
    """A recipient given as ``local@domain`` or ``<local@domain>``. ValueError if bad."""
    text = text.strip()
    found = parse_path(text) if text.startswith("<") else parse_address(text)
    if found is None:
        raise ValueError("the null path <> is not a recipient")
    return found


def read_message(stream: IO[bytes]) -> IO[bytes]:
    """The message from ``stream`` in a seekable file at offset 0, without a leading mbox
    ``From `` line. CommandError (EX_DATAERR) when it does not start with a header field."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    first = stream.readline()
    if first.startswith(b"From "):  # mbox separator, not part of the message
        first = stream.readline()
    if not first.strip():
        raise CommandError(
            "the message on stdin is empty or starts with a blank line; "
            "pipe in a whole message (header fields, blank line, body)",
            EX_DATAERR,
        )
    if not _HEADER_FIELD.match(first):
        raise CommandError(
            "the message on stdin does not start with a header field (Name: value); "
            "pipe in a whole RFC 5322 message",
            EX_DATAERR,
        )
    spool.write(first)
    shutil.copyfileobj(stream, spool)
    spool.seek(0)
    return spool


def deliver(args: argparse.Namespace) -> int:
    """Deliver stdin to every recipient, or to none; the sysexits status."""
    try:
        sender = parse_sender(args.sender)
    except ValueError as error:
        say_error(f"bad --from address {args.sender!r}: {error}; give local@domain or '<>'")
        return EX_USAGE
    try:
        recipients = [parse_recipient(text) for text in args.recipients]
    except ValueError as error:
        say_error(f"bad recipient address: {error}; give local@domain")
        return EX_USAGE
    try:
        message = read_message(sys.stdin.buffer)
    except CommandError as error:
        say_error(error.message)
        return error.status
    with message:
        return _run(args, Envelope(sender=sender, received_at=time.time()), recipients, message)


def _run(
    args: argparse.Namespace, envelope: Envelope, recipients: list[Address], message: IO[bytes]
) -> int:
    """run_with_storage with every failure mapped to a sysexits status and one line."""

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        return await _deliver(LocalDeliveryTarget(store, directory), envelope, recipients, message)

    try:
        return run_with_storage(args, work)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EX_CONFIG
    except MailError as error:
        reason = error.detail or error.text
        if error.temporary:
            say_error(f"{reason}; nothing delivered, try again later")
            return EX_TEMPFAIL
        say_error(f"{reason}; nothing delivered")
        return EX_UNAVAILABLE
    except OSError as error:
        say_error(f"cannot write the message: {error}; nothing delivered, try again later")
        return EX_TEMPFAIL


async def _deliver(
    target: LocalDeliveryTarget,
    envelope: Envelope,
    recipients: list[Address],
    message: IO[bytes],
) -> int:
    """One transaction: every recipient accepted, then body and commit; else abort."""
    delivery = target.start(envelope)
    unknown = []
    for recipient in recipients:
        try:
            await delivery.add_recipient(recipient)
        except _REFUSED_RECIPIENT:
            unknown.append(str(recipient))
    if unknown:
        await delivery.abort()
        raise CommandError(
            f"no local mailbox for {', '.join(unknown)}; nothing delivered "
            "(check the address, or create it: mailserver user add ADDRESS)",
            EX_NOUSER,
        )
    try:
        await delivery.body(message)
        await delivery.commit()
    except BaseException:
        await delivery.abort()
        raise
    return EX_OK
