"""``mailserver user add|passwd|del|list|role|quota|pop3``: mail accounts (directory user +
mailbox), and their second credentials: ``user app-password add|list|revoke``, ``user totp
enable|disable`` and ``user token issue|list|revoke`` (:mod:`mailserver.auth.credentials`).

Passwords are never taken from the command line (it shows in ``ps`` and shell history):
they are asked for twice on the terminal, or read as one line from stdin with
``--password-stdin``. Generated secrets (app passwords, tokens, recovery codes) are printed
once, on stdout, and cannot be shown again.

The credential verbs' helpers (the credential store, the tables, TOTP enrolment on the
terminal) are in :mod:`mailserver.cli.user_credentials`; the handlers stay here, where the
permission and audit tables name them.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from collections.abc import Awaitable
from typing import Any

from mailserver.auth.credentials import (
    MAIL_SCOPES,
    SCOPES,
    CredentialStore,
    forget_user,
)
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

# The credential verbs' helpers live there.
from mailserver.cli.user_credentials import (
    _add_app_password,
    _confirm_totp,
    _list_credentials,
    _require_user,
    _revoke_credential,
    _scope_list,
    _start_totp,
    _when,
    _with_credentials,
)
from mailserver.config import Config
from mailserver.errors import InvalidName
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import Role, User

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

    role = verbs.add_parser(
        "role",
        help="set a user's role (user, domain-admin of --domain D..., or admin)",
        allow_abbrev=False,
    )
    role.add_argument("address", metavar="ADDRESS", help="the user")
    role.add_argument("role", metavar="ROLE", choices=ROLES, help=f"one of {', '.join(ROLES)}")
    role.add_argument(
        "--domain",
        dest="domains",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="a domain a domain-admin manages (repeat for several)",
    )
    add_config_option(role)
    role.set_defaults(handler=set_role)

    limit = verbs.add_parser(
        "quota",
        help="set a user's quota (RFC 9208): 500M, 2G, a byte count, default or unlimited",
        allow_abbrev=False,
    )
    limit.add_argument("address", metavar="ADDRESS", help="the user")
    limit.add_argument(
        "size",
        metavar="SIZE",
        help="bytes, or with K/M/G/T (1024-based); 'default' = [store] quota_mb; 'unlimited'",
    )
    add_config_option(limit)
    limit.set_defaults(handler=set_quota)

    pop3 = verbs.add_parser(
        "pop3",
        help="what POP3 deletions do for a user: keep (leave on server), delete or default",
        allow_abbrev=False,
    )
    pop3.add_argument("address", metavar="ADDRESS", help="the user")
    pop3.add_argument(
        "mode",
        choices=("keep", "delete", "default"),
        help="keep: DELE only hides mail (QUIT marks it \\Seen); delete: QUIT removes it;"
        " default: [pop3] leave_on_server",
    )
    add_config_option(pop3)
    pop3.set_defaults(handler=set_pop3)

    listing = verbs.add_parser("list", help="list users with their roles")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?", help="only this domain's users")
    add_config_option(listing)
    listing.set_defaults(handler=list_users)

    _register_app_passwords(verbs)
    _register_totp(verbs)
    _register_tokens(verbs)


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
            await forget_user(store.db, user)  # app passwords, TOTP, tokens
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


def set_role(args: argparse.Namespace) -> int:
    """Replace the user's role; a domain admin needs the domains they manage."""
    user = address(args.address)
    domains = [domain_name(d) for d in args.domains]

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        _require_user(directory, user)
        for domain in domains:
            require_domain(directory, domain)
        wanted = Role(args.role)
        if wanted is Role.DOMAIN_ADMIN and not domains:
            raise CommandError("a domain-admin manages some domains: add --domain DOMAIN")
        if domains and wanted is not Role.DOMAIN_ADMIN:
            raise CommandError("--domain is only for the domain-admin role")
        changed = await directory.set_roles(user, [wanted], domains)
        print(f"{user} is now {_describe_roles(changed)}")
        return 0

    return run_with_storage(args, work)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"([0-9]+)\s*([KMGT]?)(?:I?B)?")


def quota_size(text: str) -> int:
    """A SIZE argument in bytes: ``500M``, ``2GiB``, ``1048576``; ``default`` is 0 (the
    configured default applies), ``unlimited`` is -1."""
    word = text.strip().upper()
    if word == "DEFAULT":
        return 0
    if word == "UNLIMITED":
        return -1
    match = _SIZE.fullmatch(word)
    if match is None or int(match.group(1)) == 0:
        raise CommandError(
            f"invalid size {text!r}: give e.g. 500M, 2G, a byte count, default or unlimited"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def _size(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``200.0 MiB``, ``2.0 GiB``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def set_quota(args: argparse.Namespace) -> int:
    """Set the user's own quota; show it with the usage the store counts."""
    user = address(args.address)
    size = quota_size(args.size)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        _require_user(directory, user)
        await directory.set_quota(user, size)
        if store.has_account(user):
            usage = store.account(user).quota()
            used, limit = _size(usage.used_bytes), usage.limit_bytes
            shown = "unlimited" if limit is None else _size(limit)
            print(f"{user}: quota {shown}, using {used} in {usage.used_messages} message(s)")
        else:
            print(f"{user}: quota set")
        return 0

    return run_with_storage(args, work)


def set_pop3(args: argparse.Namespace) -> int:
    """Set what a POP3 client's deletions do for the user (see mailserver.pop3.maildrop)."""
    user = address(args.address)
    leave = {"keep": True, "delete": False, "default": None}[args.mode]

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        _require_user(directory, user)
        await directory.set_pop3_leave_on_server(user, leave)
        effective = config.pop3.leave_on_server if leave is None else leave
        what = "kept on the server" if effective else "deleted at QUIT"
        source = "the [pop3] default" if leave is None else "this account's setting"
        print(f"{user}: mail a POP3 client deletes is {what} ({source})")
        return 0

    return run_with_storage(args, work)


def _describe_roles(user: User) -> str:
    roles = ",".join(sorted(role.value for role in user.roles))
    if user.admin_domains:
        roles += f" ({', '.join(sorted(user.admin_domains))})"
    return roles


def list_users(args: argparse.Namespace) -> int:
    """Print ``address  role(s)`` for every user (of ``DOMAIN`` when given), sorted."""
    domain = None if args.domain is None else domain_name(args.domain)

    async def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> int:
        if domain is not None:
            require_domain(directory, domain)
        users = sorted(directory.users(domain), key=lambda u: u.address)
        width = max((len(u.address) for u in users), default=0)
        for user in users:
            print(f"{user.address:<{width}}  {_describe_roles(user)}")
        if not users:
            say_note("no users yet; add one: mailserver user add ADDRESS")
        return 0

    return run_with_storage(args, work)


# -- second credentials: app passwords, TOTP, tokens ------------------------------------------


def _register_app_passwords(verbs: Any) -> None:
    parser = verbs.add_parser(
        "app-password", help="add, list or revoke a user's app passwords (for mail clients)"
    )
    sub = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    add = sub.add_parser("add", help="make an app password and print it once")
    add.add_argument("address", metavar="ADDRESS", help="the user")
    add.add_argument("name", metavar="NAME", help="what it is for, e.g. 'laptop Thunderbird'")
    add.add_argument(
        "--scope",
        default=",".join(sorted(MAIL_SCOPES)),
        help=f"comma-separated protocols it works for, of {','.join(sorted(SCOPES))} "
        "(default: %(default)s)",
    )
    add.add_argument(
        "--expires", metavar="DAYS", type=float, help="stop working after DAYS (default: never)"
    )
    add_config_option(add)
    add.set_defaults(handler=add_app_password)

    listing = sub.add_parser("list", help="list a user's app passwords (never the passwords)")
    listing.add_argument("address", metavar="ADDRESS", help="the user")
    add_config_option(listing)
    listing.set_defaults(handler=list_app_passwords)

    revoke = sub.add_parser("revoke", help="delete an app password")
    revoke.add_argument("address", metavar="ADDRESS", help="the user")
    revoke.add_argument("id", metavar="ID", help="its id, as 'app-password list' shows it")
    add_config_option(revoke)
    revoke.set_defaults(handler=revoke_app_password)


def _register_totp(verbs: Any) -> None:
    parser = verbs.add_parser("totp", help="switch two-factor authentication (TOTP) on or off")
    sub = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    enable = sub.add_parser(
        "enable",
        help="show a new TOTP key (URI and QR code), then switch it on with a first code",
    )
    enable.add_argument("address", metavar="ADDRESS", help="the user")
    enable.add_argument(
        "--code",
        help="a code from the app for the key shown by an earlier 'totp enable': switch "
        "two-factor authentication on (without it, a new key is shown and, on a terminal, "
        "a code asked for)",
    )
    add_config_option(enable)
    enable.set_defaults(handler=enable_totp)

    disable = sub.add_parser("disable", help="switch two-factor authentication off")
    disable.add_argument("address", metavar="ADDRESS", help="the user")
    add_config_option(disable)
    disable.set_defaults(handler=disable_totp)


def _register_tokens(verbs: Any) -> None:
    parser = verbs.add_parser("token", help="issue, list or revoke a user's bearer tokens")
    sub = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    issue = sub.add_parser("issue", help="make a bearer token and print it once")
    issue.add_argument("address", metavar="ADDRESS", help="the user")
    issue.add_argument(
        "--scope",
        default="api",
        help=f"comma-separated scopes, of {','.join(sorted(SCOPES))} (default: %(default)s)",
    )
    issue.add_argument(
        "--ttl", metavar="HOURS", type=float, default=24.0, help="lifetime (default: 24)"
    )
    issue.add_argument("--name", default="", help="what it is for (shown by 'token list')")
    add_config_option(issue)
    issue.set_defaults(handler=issue_token)

    listing = sub.add_parser("list", help="list a user's tokens (never the tokens)")
    listing.add_argument("address", metavar="ADDRESS", help="the user")
    add_config_option(listing)
    listing.set_defaults(handler=list_tokens)

    revoke = sub.add_parser("revoke", help="delete a token")
    revoke.add_argument("address", metavar="ADDRESS", help="the user")
    revoke.add_argument("id", metavar="ID", help="its id, as 'token list' shows it")
    add_config_option(revoke)
    revoke.set_defaults(handler=revoke_token)


def add_app_password(args: argparse.Namespace) -> int:
    """Make an app password and print it (the only time it can be seen)."""
    user = address(args.address)
    scopes = _scope_list(args.scope)
    if args.expires is not None and args.expires <= 0:
        raise CommandError("--expires takes a positive number of days")

    def act(credentials: CredentialStore) -> Awaitable[int]:
        return _add_app_password(credentials, user, args.name, scopes, args.expires)

    return _with_credentials(args, user, act)


def list_app_passwords(args: argparse.Namespace) -> int:
    """One line per app password: id, name, scopes, expiry, last use."""
    user = address(args.address)
    nothing = f"{user} has no app passwords; add one: mailserver user app-password add"
    return _list_credentials(args, user, CredentialStore.list_app_passwords, nothing)


def revoke_app_password(args: argparse.Namespace) -> int:
    """Delete one app password; clients using it fail from their next login."""
    return _revoke_credential(args, CredentialStore.revoke, "app password", "app-password")


def enable_totp(args: argparse.Namespace) -> int:
    """Without ``--code``: a new pending key, shown as URI + QR code; on a terminal, a code is
    then asked for. With ``--code``: confirm the pending key. Confirmation prints the
    recovery codes."""
    user = address(args.address)

    def act(credentials: CredentialStore) -> Awaitable[int]:
        if credentials.totp_enabled(user):
            raise CommandError(
                f"{user} has two-factor authentication on already; to start again: "
                f"mailserver user totp disable {user}"
            )
        if args.code is not None:
            if not credentials.totp_pending(user):
                raise CommandError(
                    f"no key of {user} is waiting for a code; show one first: "
                    f"mailserver user totp enable {user}"
                )
            return _confirm_totp(credentials, user, args.code)
        return _start_totp(credentials, user, ask=sys.stdin.isatty())

    return _with_credentials(args, user, act)


def disable_totp(args: argparse.Namespace) -> int:
    """Switch TOTP off: the account password works again in mail clients."""
    user = address(args.address)

    async def act(credentials: CredentialStore) -> int:
        if not await credentials.disable_totp(user):
            raise CommandError(f"{user} does not use two-factor authentication")
        print(f"two-factor authentication is off for {user}")
        return 0

    return _with_credentials(args, user, act)


def issue_token(args: argparse.Namespace) -> int:
    """Make a bearer token and print it (the only time it can be seen)."""
    user = address(args.address)
    scopes = _scope_list(args.scope)
    if args.ttl <= 0:
        raise CommandError("--ttl takes a positive number of hours")

    async def act(credentials: CredentialStore) -> int:
        try:
            token = await credentials.issue_token(user, scopes, args.ttl * 3600, args.name)
        except InvalidName as error:
            raise CommandError(f"{error.text}; nothing issued") from None
        print(
            f"issued token {credentials.token_id(token)} for {user}: "
            f"{','.join(sorted(scopes))}, expires {_when(time.time() + args.ttl * 3600)}"
        )
        print(token)
        say_note("the token is shown only now")
        return 0

    return _with_credentials(args, user, act)


def list_tokens(args: argparse.Namespace) -> int:
    """One line per token: id, name, scopes, expiry, last use."""
    user = address(args.address)
    return _list_credentials(args, user, CredentialStore.list_tokens, f"{user} has no tokens")


def revoke_token(args: argparse.Namespace) -> int:
    """Delete one token."""
    return _revoke_credential(args, CredentialStore.revoke_token_id, "token", "token")
