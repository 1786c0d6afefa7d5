"""An app serving its own account store through mailserver's IMAP server.

The store is a dict: ``{user: {"password": ..., "folders": {name: [message bytes, ...]}}}``.
:class:`DictAccount` and :class:`DictMailbox` provide ``IAccount`` and ``IMailbox`` over it:
the messages are fixed (APPEND, COPY, MOVE, EXPUNGE and folder changes are refused with
``NO [CANNOT]``), while flags live in memory so that clients can mark mail read. The app's
own checker and realm put it behind ``IMAPFactory``. ``MessageInfo`` carries the results of
:func:`mailserver.message.mime.parse` (SEARCH reads the envelope from it), made once per
message.

Run it: ``python examples/imap_dict_store/app.py`` and log in to 127.0.0.1:1143 as
``alice@example.org`` / ``secret``.
"""

from __future__ import annotations

import argparse
import hmac
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, BinaryIO

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from zope.interface import implementer

from mailserver.errors import MailError, NoSuchFolder, NoSuchMessage, NoSuchUser
from mailserver.imap import IMAPFactory, IMAPPolicy
from mailserver.interfaces import IAccount, IMailbox, IMessage
from mailserver.message.mime import ParsedMessage, parse
from mailserver.types import FlagInfo, FlagMode, FolderInfo, MessageInfo, QuotaUsage

#: One UIDVALIDITY for every folder: the messages (and so their UIDs) never change.
UIDVALIDITY = 1


class ReadOnly(MailError):
    code = 550
    enhanced = "5.7.0"
    text = "This store is read-only"


def refuse() -> Deferred[Any]:
    return fail(ReadOnly())


@implementer(IMessage)
class DictMessage:
    def __init__(self, data: bytes, info: MessageInfo) -> None:
        self.data = data
        self.info = info

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def set_spam_verdict(self, verdict: object) -> Deferred[None]:
        return refuse()


@implementer(IMailbox)
class DictMailbox:
    """Message ``n`` of the folder's list has UID ``n + 1``."""

    def __init__(self, account: DictAccount, name: str) -> None:
        self.account = account
        self.name = name
        self.data: list[bytes] = account.folders[name]

    def _flags(self, uid: int) -> frozenset[str]:
        return self.account.flags.get((self.name, uid), frozenset())

    def _modseq(self, uid: int) -> int:
        return self.account.modseqs.get((self.name, uid), 1)

    def info(self) -> FolderInfo:
        return FolderInfo(
            name=self.name,
            uidvalidity=UIDVALIDITY,
            uidnext=len(self.data) + 1,
            highestmodseq=max([1, *(self._modseq(u) for u in self.uids())]),
            exists=len(self.data),
            unseen=sum(1 for u in self.uids() if "\\Seen" not in self._flags(u)),
            size=sum(len(d) for d in self.data),
            subscribed=True,
            mailbox_id="F" + self.name.encode().hex()[:60],
        )

    def uids(self, first: int = 1, last: int | None = None) -> Iterator[int]:
        stop = len(self.data) if last is None else min(last, len(self.data))
        return iter(range(max(first, 1), stop + 1))

    def flags(self, first: int = 1, last: int | None = None) -> Iterator[FlagInfo]:
        return (FlagInfo(u, self._flags(u), self._modseq(u)) for u in self.uids(first, last))

    def changed_since(self, modseq: int) -> Iterator[FlagInfo]:
        changed = [i for i in self.flags() if i.modseq > modseq]
        return iter(sorted(changed, key=lambda i: (i.modseq, i.uid)))

    def expunged_since(self, modseq: int) -> list[int]:
        return []  # nothing is ever removed

    def message(self, uid: int) -> DictMessage:
        if not 1 <= uid <= len(self.data):
            raise NoSuchMessage(detail=f"{self.name} uid {uid}")
        return self._message(uid, True)

    def _message(self, uid: int, meta: bool | str) -> DictMessage:
        data = self.data[uid - 1]
        info = MessageInfo(
            uid=uid,
            flags=self._flags(uid),
            modseq=self._modseq(uid),
            size=len(data),
            internaldate=0.0,
            object_id=f"{self.name}-{uid}",
        )
        if meta:  # SEARCH reads the envelope, FETCH ENVELOPE/BODYSTRUCTURE the rest
            parsed = self.account.parsed(self.name, uid, data)
            info = replace(
                info,
                envelope=parsed.envelope,
                bodystructure=parsed.bodystructure if meta is True else {},
                attachments=tuple(parsed.attachments) if meta is True else (),
            )
        return DictMessage(data, info)

    def messages(self, uids: Iterable[int], meta: bool | str = True) -> Iterator[DictMessage]:
        return (self._message(u, meta) for u in uids if 1 <= u <= len(self.data))

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> Deferred[list[FlagInfo]]:
        return succeed(self._store(uids, flags, mode, None)[0])

    def conditional_store(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode, unchangedsince: int
    ) -> Deferred[tuple[list[FlagInfo], list[int]]]:
        return succeed(self._store(uids, flags, mode, unchangedsince))

    def _store(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode, since: int | None
    ) -> tuple[list[FlagInfo], list[int]]:
        given = frozenset(flags) - {"\\Recent"}
        modseq = self.info().highestmodseq + 1
        changed, refused = [], []
        for uid in sorted(set(uids)):
            if not 1 <= uid <= len(self.data):
                continue
            if since is not None and self._modseq(uid) > since:
                refused.append(uid)
                continue
            old = self._flags(uid)
            new = {
                FlagMode.ADD: old | given,
                FlagMode.REMOVE: old - given,
                FlagMode.REPLACE: given,
            }[mode]
            if new != old:
                self.account.flags[(self.name, uid)] = new
                self.account.modseqs[(self.name, uid)] = modseq
                changed.append(FlagInfo(uid, new, modseq))
        return changed, refused

    def append(
        self, source: BinaryIO, flags: object = (), internaldate: float | None = None
    ) -> Deferred[int]:
        return refuse()

    def expunge(self, uids: object = None) -> Deferred[list[int]]:
        return refuse()

    def copy(self, uids: object, destination: str) -> Deferred[list[tuple[int, int]]]:
        return refuse()

    def move(self, uids: object, destination: str) -> Deferred[list[tuple[int, int]]]:
        return refuse()


@implementer(IAccount)
class DictAccount:
    def __init__(self, address: str, folders: dict[str, list[bytes]]) -> None:
        self.address = address
        self.folders = folders
        #: (folder, uid) -> flags and modseq; a message not listed has no flags, modseq 1.
        self.flags: dict[tuple[str, int], frozenset[str]] = {}
        self.modseqs: dict[tuple[str, int], int] = {}
        self._parsed: dict[tuple[str, int], ParsedMessage] = {}

    def parsed(self, folder: str, uid: int, data: bytes) -> ParsedMessage:
        """The message's MIME parse (envelope, structure, attachments), made once."""
        key = (folder, uid)
        if key not in self._parsed:
            self._parsed[key] = parse(data)
        return self._parsed[key]

    def _name(self, name: str) -> str:
        return "INBOX" if name.upper() == "INBOX" else name

    def list_folders(self) -> list[FolderInfo]:
        infos = [DictMailbox(self, name).info() for name in self.folders]
        return sorted(infos, key=lambda i: (i.name != "INBOX", i.name))

    def folder(self, name: str) -> DictMailbox:
        name = self._name(name)
        if name not in self.folders:
            raise NoSuchFolder(detail=name)
        return DictMailbox(self, name)

    def create_folder(self, name: str, special_use: object = None) -> Deferred[FolderInfo]:
        return refuse()

    def delete_folder(self, name: str) -> Deferred[None]:
        return refuse()

    def rename_folder(self, old: str, new: str) -> Deferred[None]:
        return refuse()

    def subscribe(self, name: str, subscribed: bool = True) -> Deferred[None]:
        return refuse()

    def unsubscribe(self, name: str) -> Deferred[None]:
        return refuse()

    def subscriptions(self) -> list[str]:
        return sorted(self.folders, key=lambda n: (n != "INBOX", n))

    def labels(self, object_id: str) -> list[tuple[str, int]]:
        name, _, uid = object_id.rpartition("-")
        return [(name, int(uid))] if name in self.folders else []

    def quota(self) -> QuotaUsage:
        messages = [m for folder in self.folders.values() for m in folder]
        return QuotaUsage(sum(len(m) for m in messages), len(messages))

    def watch(self, name: str, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # the messages never change; flag changes are the session's own


class DictStore:
    """The accounts of the dict; one DictAccount per user for the process's lifetime."""

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users
        self._accounts: dict[str, DictAccount] = {}

    def account(self, address: str) -> DictAccount:
        if address not in self.users:
            raise NoSuchUser(detail=address)
        if address not in self._accounts:
            self._accounts[address] = DictAccount(address, self.users[address]["folders"])
        return self._accounts[address]


@implementer(ICredentialsChecker)
class DictPasswords:
    """User name and password against the dict (a real app would keep hashes)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, dict[str, Any]]) -> None:
        self.users = users

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:  # the address, a str
        user = credentials.username.decode("utf-8", "replace")
        record = self.users.get(user)
        password = record["password"].encode() if record else b"\0"
        if record is None or not hmac.compare_digest(password, credentials.password):
            return fail(UnauthorizedLogin("authentication failed"))
        return succeed(user)


@implementer(IRealm)
class DictRealm:
    """A logged-in IMAP session gets the user's DictAccount."""

    def __init__(self, store: DictStore) -> None:
        self.store = store

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IAccount in interfaces and isinstance(avatarId, str):
            return IAccount, self.store.account(avatarId), lambda: None
        raise NotImplementedError("this realm only hands out accounts")


def build(users: dict[str, dict[str, Any]], reactor: Any = None) -> IMAPFactory:
    """The IMAP factory over the dict. No TLS, so passwords are accepted in the clear
    (``auth_needs_tls=False``): a loopback demo. Give real TLS options in production."""
    store = DictStore(users)
    portal = Portal(DictRealm(store), [DictPasswords(users)])
    policy = IMAPPolicy(hostname="localhost", auth_needs_tls=False)
    return IMAPFactory(portal, policy, None, reactor=reactor)


SAMPLE: dict[str, dict[str, Any]] = {
    "alice@example.org": {
        "password": "secret",
        "folders": {
            "INBOX": [
                b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: Lunch?\r\n\r\n"
                b"Noon at the usual place.\r\n",
                b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: Minutes\r\n\r\n"
                b"Attached, as promised.\r\n",
            ],
            "Archive": [
                b"From: dave@example.com\r\nTo: alice@example.org\r\nSubject: Old news\r\n\r\n"
                b"From last year.\r\n",
            ],
        },
    }
}


ENDPOINT = "a Twisted endpoint string (default: %(default)s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a dict of accounts over IMAP.")
    parser.add_argument("--imap", default="tcp:1143:interface=127.0.0.1", help=ENDPOINT)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    serverFromString(reactor, args.imap).listen(build(SAMPLE, reactor))
    print(f"IMAP on {args.imap}: alice@example.org / secret")
    reactor.run()


if __name__ == "__main__":
    main()
