"""Final delivery into local accounts: the store's IDeliveryTarget.

One transaction writes the message once (``tmp`` of the first recipient's INBOX, fsynced),
hard-links it into every other recipient's INBOX (one copy of the bytes for any number of
local recipients), and commits all index entries in one write, so the message is durable
for every recipient or for none before the commit's Deferred fires.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from zope.interface import implementer

from mailserver import durable
from mailserver.db import Txn
from mailserver.errors import MailError, NoSuchUser
from mailserver.interfaces import IDelivery, IDeliveryTarget, IUserDirectory
from mailserver.store import index, maildir
from mailserver.store.mailbox import MaildirMailbox, deliver_file, message_meta
from mailserver.store.maildir_store import MaildirStore
from mailserver.types import Address, Envelope


def return_path(envelope: Envelope) -> bytes:
    """RFC 5321 §4.4: final delivery records the reverse-path in a Return-Path header."""
    sender = "" if envelope.sender is None else str(envelope.sender)
    return f"Return-Path: <{sender}>\r\n".encode()


@implementer(IDeliveryTarget)
class LocalDeliveryTarget:
    """Delivers to the INBOX of each local account that a recipient resolves to."""

    def __init__(self, store: MaildirStore, directory: IUserDirectory) -> None:
        self.store = store
        self.directory = directory

    def start(self, envelope: Envelope) -> LocalDelivery:
        return LocalDelivery(self, envelope)


def _write_once(
    first: MaildirMailbox, others: list[MaildirMailbox], data: bytes, fsync: bool
) -> list[str]:
    """Write ``data`` into the first INBOX's new/ and hard-link it into the others'."""
    base = deliver_file(first.path, data, fsync)
    bases = [base]
    source = os.path.join(first.path, "new", base)
    for mailbox in others:
        other = maildir.unique_name()
        durable.link_into(source, os.path.join(mailbox.path, "new", other), fsync=fsync)
        bases.append(other)
    return bases


@implementer(IDelivery)
class LocalDelivery:
    def __init__(self, target: LocalDeliveryTarget, envelope: Envelope) -> None:
        self.target = target
        self.envelope = envelope
        self._accounts: dict[str, None] = {}
        self._data: bytes | None = None
        self._meta: index.Record | None = None
        self._done = False

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        def check() -> None:
            local = [
                a
                for a in self.target.directory.resolve(str(address))
                if self.target.store.has_account(a)
            ]
            if not local:
                raise NoSuchUser(detail=str(address))
            for account in local:
                self._accounts[account] = None

        return maybeDeferred(check)

    @inlineCallbacks
    def body(self, source: BinaryIO) -> Any:
        if not self._accounts:
            raise MailError("no valid recipients", detail="body before any accepted recipient")
        def read() -> tuple[bytes, index.Record]:
            data = return_path(self.envelope) + source.read()
            return data, message_meta(data)

        self._data, self._meta = yield self.target.store.in_thread(read)

    @inlineCallbacks
    def commit(self) -> Any:
        if self._done:
            raise MailError("transaction already finished")
        self._done = True
        if self._data is None:
            raise MailError("no message body", detail="commit before body")
        store = self.target.store
        inboxes = [store.account(a).folder("INBOX") for a in self._accounts]
        data, meta = self._data, self._meta
        bases = yield store.in_thread(_write_once, inboxes[0], inboxes[1:], data, store.fsync)
        object_id = index.new_object_id()
        received = self.envelope.received_at or None

        def op(txn: Txn) -> list[int]:
            return [
                mailbox._add(txn, base, frozenset(), len(data), received, meta, object_id)
                for mailbox, base in zip(inboxes, bases)
            ]

        uids = yield store.write(op)
        return uids

    def abort(self) -> Deferred[None]:
        self._done = True
        self._data = None
        return succeed(None)
