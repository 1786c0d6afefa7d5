"""The work behind ``mailserver user app-password|totp|token``: the credential store on the
command's storage, scope lists, the tables of app passwords and tokens, and TOTP enrolment
on the terminal (:mod:`mailserver.auth.credentials` keeps the credentials themselves).

The verbs, their arguments and their handlers stay in :mod:`mailserver.cli.user` (the
permission and audit tables name the handlers ``mailserver.cli.user.<function>``); the
underscored names here are that module's helpers, and it re-exports them.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import segno
from twisted.internet.defer import Deferred

from mailserver.auth.credentials import (
    SCOPES,
    AppPassword,
    CredentialStore,
    TokenInfo,
    load_or_create_secret,
    secret_path,
)
from mailserver.auth.directory import LmdbDirectory
from mailserver.cli.storage import CommandError, address, run_with_storage, say_note
from mailserver.config import Config
from mailserver.errors import AlreadyExists, InvalidName
from mailserver.store.maildir_store import MaildirStore


def _require_user(directory: LmdbDirectory, user: str) -> None:
    if directory.get_user(user) is None:
        raise CommandError(f"no user {user}; see the users with: mailserver user list")


def _credentials(config: Config, store: MaildirStore) -> CredentialStore:
    """The credential store on the command's index, with the server's key (made if absent)."""
    from twisted.internet import reactor

    key = load_or_create_secret(secret_path(config.server.data_path))
    return CredentialStore(store.db, reactor, key, issuer=config.server.hostname)


def _scope_list(text: str) -> frozenset[str]:
    wanted = frozenset(s.strip().lower() for s in text.split(",") if s.strip())
    unknown = wanted - SCOPES
    if unknown or not wanted:
        raise CommandError(
            f"unknown scope {','.join(sorted(unknown)) or repr(text)}; "
            f"give some of {','.join(sorted(SCOPES))}, separated by commas"
        )
    return wanted


def _when(seconds: float | None, never: str = "never") -> str:
    if seconds is None:
        return never
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _with_credentials(
    args: argparse.Namespace, user: str, act: Callable[[CredentialStore], Awaitable[int]]
) -> int:
    """Open the storage, check that ``user`` exists, then run ``act`` on the credential store
    (the shape of every app-password, TOTP and token verb); the exit status."""

    def work(config: Config, directory: LmdbDirectory, store: MaildirStore) -> Awaitable[int]:
        _require_user(directory, user)
        return act(_credentials(config, store))

    return run_with_storage(args, work)


def _credential_table(entries: Sequence[AppPassword] | Sequence[TokenInfo]) -> None:
    """One line per app password or token: id, name, scopes, expiry, last use."""
    now = time.time()
    rows = [["ID", "NAME", "SCOPES", "EXPIRES", "LAST USED"]]
    for entry in entries:
        expires = "expired" if entry.expired(now) else _when(entry.expires)
        used = _when(entry.last_used)
        if entry.last_ip:
            used += f" from {entry.last_ip}"
        rows.append([entry.id, entry.name or "-", ",".join(sorted(entry.scopes)), expires, used])
    _table(rows)


async def _add_app_password(
    credentials: CredentialStore, user: str, name: str, scopes: frozenset[str], days: float | None
) -> int:
    expires = None if days is None else time.time() + days * 86400
    try:
        ident, password = await credentials.add_app_password(user, name, scopes, expires)
    except AlreadyExists:
        raise CommandError(
            f"{user} already has an app password named {name!r}; pick another name, or "
            f"revoke it first (see: mailserver user app-password list {user})"
        ) from None
    except InvalidName as error:
        raise CommandError(f"{error.text}; nothing added") from None
    print(
        f"added app password {ident} ({name}) for {user}: "
        f"{','.join(sorted(scopes))}, expires {_when(expires)}"
    )
    print(password)
    say_note("the password is shown only now: enter it in the mail client instead of the password")
    return 0


def _list_credentials(
    args: argparse.Namespace,
    user: str,
    entries_of: Callable[[CredentialStore, str], Sequence[AppPassword] | Sequence[TokenInfo]],
    nothing: str,
) -> int:
    """The verbs 'app-password list' and 'token list': a table, or the note ``nothing``."""

    async def act(credentials: CredentialStore) -> int:
        entries = entries_of(credentials, user)
        if entries:
            _credential_table(entries)
        else:
            say_note(nothing)
        return 0

    return _with_credentials(args, user, act)


def _revoke_credential(
    args: argparse.Namespace,
    revoke: Callable[[CredentialStore, str, str], Awaitable[bool]],
    what: str,
    noun: str,
) -> int:
    """The verbs 'app-password revoke' and 'token revoke': delete ``what`` ID of the user."""
    user = address(args.address)

    async def act(credentials: CredentialStore) -> int:
        if not await revoke(credentials, user, args.id):
            raise CommandError(
                f"{user} has no {what} {args.id}; see them with: mailserver user {noun} list {user}"
            )
        print(f"revoked {what} {args.id} of {user}")
        return 0

    return _with_credentials(args, user, act)


async def _start_totp(credentials: CredentialStore, user: str, ask: bool) -> int:
    enrolment = await credentials.enable_totp(user)
    print("Scan this QR code with an authenticator app, or type the key into it:")
    segno.make(enrolment.uri, error="m").terminal(out=sys.stdout, compact=True)
    print(enrolment.uri)
    print(f"key: {enrolment.secret}")
    if not ask:
        say_note(f"not on yet: confirm with a code: mailserver user totp enable {user} --code CODE")
        return 0
    code = await _ask("Code shown by the app: ")
    if not code:
        raise CommandError(
            f"no code given; two-factor authentication is not on. Confirm later: "
            f"mailserver user totp enable {user} --code CODE"
        )
    return await _confirm_totp(credentials, user, code)


async def _confirm_totp(credentials: CredentialStore, user: str, code: str) -> int:
    recovery = await credentials.confirm_totp(user, code)
    if recovery is None:
        raise CommandError(
            f"the code {code!r} is not the current one; check the device's clock and run "
            f"again with a fresh code: mailserver user totp enable {user} --code CODE"
        )
    print(f"two-factor authentication is on for {user}")
    print("Recovery codes (each works once, in place of a code; shown only now):")
    for line in recovery:
        print(f"  {line}")
    say_note(f"mail clients now need an app password: mailserver user app-password add {user} NAME")
    return 0


def _ask(prompt: str) -> Deferred[str]:
    """One line from the terminal, read on a daemon thread so the reactor keeps running
    (and Ctrl-C can still stop it)."""
    from twisted.internet import reactor

    answer: Deferred[str] = Deferred()

    def read() -> None:
        try:
            line = input(prompt)
        except EOFError:
            line = ""
        reactor.callFromThread(answer.callback, line.strip())

    threading.Thread(target=read, name="prompt", daemon=True).start()
    return answer
