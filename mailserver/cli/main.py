"""``mailserver NOUN VERB [options]``: the administration command line.

Each noun is a module in :data:`NOUNS` exposing ``register(subparsers)``, which adds its
sub-parser and sets ``handler`` (a function ``(args) -> int``) as a default. To add a noun,
write ``mailserver/cli/<noun>.py`` and append its module name to :data:`NOUNS`.

Expected errors (a bad config, a missing user, ...) end with one line on stderr and a
non-zero exit status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from mailserver import __version__
from mailserver.cli import auditing, permissions
from mailserver.errors import ConfigError, MailError

#: Modules providing ``register(subparsers)``, one per noun, in ``--help`` order.
NOUNS = [
    "mailserver.cli.config_cmd",
    "mailserver.cli.domain",
    "mailserver.cli.user",
    "mailserver.cli.alias",
    "mailserver.cli.reindex",
    "mailserver.cli.deliver",
    "mailserver.cli.queue",
    "mailserver.cli.audit",
    "mailserver.cli.dkim",
    "mailserver.cli.dns",
    "mailserver.cli.dmarc",
    "mailserver.cli.filter",
    "mailserver.cli.spam",
    "mailserver.cli.backup",
    "mailserver.cli.replicate",
    "mailserver.cli.transfer",
]

#: Exit statuses: a usage or config problem, and any other expected failure.
EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every noun in :data:`NOUNS` registered."""
    parser = argparse.ArgumentParser(
        prog="mailserver", description="Administer a mailserver installation."
    )
    parser.add_argument("--version", action="version", version=f"mailserver {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="TOML config file (default: the embedded defaults)",
    )
    parser.add_argument(
        "--as",
        dest="acting_as",
        metavar="ADDRESS",
        default=None,
        help="act with this account's roles instead of as the operator (delegated admins)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="NOUN")
    for name in NOUNS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    status = _run(permissions.check, args)
    if status == 0:
        status = _run(handler, args)
    if status != EXIT_USAGE:
        auditing.record(args, sys.argv[1:] if argv is None else list(argv), status)
    return status


def _run(handler: Any, args: argparse.Namespace) -> int:
    """The handler's exit status; expected errors become one line on stderr."""
    try:
        return int(handler(args))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except MailError as error:
        print(f"error: {error.detail or error.text}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
