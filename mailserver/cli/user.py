"""``mailserver user add|passwd|del|list``: mail accounts (directory user + mailbox).

Passwords are never taken from the command line (it shows in ``ps`` and shell history):
they are asked for twice on the terminal, or read as one line from stdin with
``--password-stdin``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Awaitable
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.common import add_config_option
from mailserver.cli.storage import (
    CommandError,
    address,
    domain_name,
    require_domain,
    run_with_storage,
    say_note,
)
from mailserver.config import Config
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import Role

ROLES = [role.value for role in Role]


def register(subparsers: Any) -> None:
    """Add the ``user`` noun and its verbs."""
    parser = subparsers.add_parser("user", help="add, change, delete or list mail accounts")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="create a user and their mailbox", allow_abbrev=False)
    add.add_argument("address", metavar="ADDRESS", help="the new user, e.g. alice@example.org")
    _add_password_option(add)
    add.add_argument(
        "--role", choices=ROLES, default=Role.USER.value, help="the user's role (default: user)"
    )
    add_config_option(add)
    add.set_defaults(handler=add_user)

    passwd = verbs.add_parser("passwd", help="set a user's password", allow_abbrev=False)
    passwd.add_argument("address", metavar="ADDRESS", help="the user")
    _add_password_option(passwd)
    add_config_option(passwd)
    passwd.set_defaults(handler=change_password)

    delete = verbs.add_parser("del", help="delete a user and (unless --keep-mail) their mail")
    delete.add_argument("address", metavar="ADDRESS", help="the user")
    delete.add_argument(
        "--keep-mail",
        action="store_true",
        help="keep the mailbox (a later 'user add' of the same address reuses it)",
    )
    add_config_option(delete)
    delete.set_defaults(handler=delete_user)

    listing = verbs.add_parser("list", help="list users with their roles")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", help="only this domain's users")
    add_config_option(listing)
    listing.set_defaults(handler=list_users)


def _add_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password as one line from stdin instead of asking on the terminal",
    )


def read_password(user: str, from_stdin: bool) -> str:
    """The new password for ``user``: one line of stdin, or asked twice on the terminal.

    CommandError when stdin is not a terminal (and ``from_stdin`` is false), when the two
    entries differ, or when the password is empty.
    """
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise CommandError(
            "stdin is not a terminal, so the password cannot be asked for; "
            "pipe it in as one line and add --password-stdin"
        )
    else:
        password = getpass.getpass(f"New password for {user}: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise CommandError("the two passwords differ; nothing changed, run the command again")
    if not password:
        raise CommandError("the password is empty; give a non-empty password")
    return password


def _require_user(directory: LmdbDirectory, user: str) -> None:
    if directory.get_user(user) is None:
        raise CommandError(f"no user {user}; see the users with: mailserver user list")


def add_user(args: argparse.Namespace) -> int:
    """Create the directory user and their mailbox; undo the user if the mailbox fails."""
    user = address(args.address)

    def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> Awaitable[int]:
        require_domain(directory, user.rpartition("@")[2])
        if directory.get_user(user) is not None:
            raise CommandError(
                f"user {user} exists already; to change the password: mailserver user passwd {user}"
            )
        if any(alias.source == user for alias in directory.aliases(user.rpartition("@")[2])):
            raise CommandError(f"{user} is an alias; delete it first: mailserver alias del {user}")
        password = read_password(user, args.password_stdin)
        return _create(directory, store, user, password, Role(args.role))

    return run_with_storage(args, work)


async def _create(
    directory: LmdbDirectory, store: MaildirStore, user: str, password: str, role: Role
) -> int:
    await directory.add_user(user, password, [role])
    if store.has_account(user):
        say_note(f"{user} already has a mailbox (kept by 'user del --keep-mail'); reusing it")
    else:
        try:
            await store.create_account(user)
        except Exception:
            await directory.remove_user(user)  # roll back: no user without a mailbox
            raise
    print(f"added user {user} ({role.value})")
    return 0


def change_password(args: argparse.Namespace) -> int:
    """Set a new password for an existing user."""
    user = address(args.address)

    def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> Awaitable[int]:
        _require_user(directory, user)
        password = read_password(user, args.password_stdin)
        return _set_password(directory, user, password)

    return run_with_storage(args, work)


async def _set_password(directory: LmdbDirectory, user: str, password: str) -> int:
    await directory.set_password(user, password)
    print(f"changed the password of {user}")
    return 0


def delete_user(args: argparse.Namespace) -> int:
    """Delete the user, then (unless ``--keep-mail``) their mailbox and every message in it.

    A mailbox left without a user (by ``--keep-mail`` or an interrupted delete) is deleted
    too when its address is given."""
    user = address(args.address)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        has_mail = store.has_account(user)
        if directory.get_user(user) is not None:
            await directory.remove_user(user)
        elif not has_mail or args.keep_mail:
            raise CommandError(f"no user {user}; see the users with: mailserver user list")
        if args.keep_mail and has_mail:
            print(f"deleted user {user}; their mailbox is kept")
        elif has_mail:
            await store.delete_account(user)
            print(f"deleted user {user} and their mail")
        else:
            print(f"deleted user {user} (they had no mailbox)")
        pointing = sorted(a.source for a in directory.aliases() if user in a.targets)
        if pointing:
            say_note(
                f"alias(es) {', '.join(pointing)} still point at {user}; "
                "change them with: mailserver alias del SOURCE, then alias add"
            )
        return 0

    return run_with_storage(args, work)


def list_users(args: argparse.Namespace) -> int:
    """Print ``address  role(s)`` for every user (of ``DOMAIN`` when given), sorted."""
    domain = None if args.domain is None else domain_name(args.domain)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if domain is not None:
            require_domain(directory, domain)
        users = sorted(directory.users(domain), key=lambda u: u.address)
        width = max((len(u.address) for u in users), default=0)
        for user in users:
            roles = ",".join(sorted(role.value for role in user.roles))
            print(f"{user.address:<{width}}  {roles}")
        if not users:
            say_note("no users yet; add one: mailserver user add ADDRESS")
        return 0

    return run_with_storage(args, work)
