"""Per-account quota (RFC 9208 STORAGE and MESSAGE): usage counters kept in the index with
every change, limits from the rules, refusals that change nothing, and SMTP delivery into
a full mailbox refused with 452 4.2.2 (552 5.2.2 when the message can never fit).

The behaviour both providers guarantee runs against the maildir + LMDB store and the
in-memory one; the counters, their upgrade and ``reindex`` are the LMDB index's own.
"""

from __future__ import annotations

import io
import os
import socket

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.errors import MailboxFull, QuotaExceeded
from mailserver.smtp.codes import reply_for_error
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store import quota
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.quota import QuotaRules
from mailserver.store.reindex import reindex
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import DELETED, FlagMode, QuotaUsage

ALICE = "alice@example.org"
BOB = "bob@example.org"


def data(size: int = 100) -> io.BytesIO:
    head = b"From: carol@example.net\r\nSubject: q\r\n\r\n"
    return io.BytesIO(head + b"x" * (size - len(head)))


async def make_store(kind: str, request, rules: QuotaRules):
    if kind == "maildir":
        store = request.getfixturevalue("storage").store
        store.quota_rules = rules
    else:
        store = MemoryStore(rules)
    await store.create_account(ALICE)
    await store.create_account(BOB)
    return store


@pytest.fixture(params=["maildir", "memory"])
def kind(request):
    return request.param


def new_files(store, address: str = ALICE) -> list[str]:
    """Files left in any new/ directory of a maildir account."""
    if isinstance(store, MemoryStore):
        return []
    root = store.account(address).path
    return [name for d, _, names in os.walk(root) if d.endswith("/new") for name in names]


@pytest_twisted.ensureDeferred
async def test_usage_follows_appends_copies_moves_and_expunges(kind, request):
    """Usage counts every message in every folder (a COPY counts again, a MOVE does not
    change it), and an expunge or a deleted folder gives the space back."""
    store = await make_store(kind, request, QuotaRules())
    account = store.account(ALICE)
    inbox = account.folder("INBOX")
    assert account.quota() == QuotaUsage(0, 0, None, None)
    uids = [await inbox.append(data(100)), await inbox.append(data(300))]
    assert account.quota() == QuotaUsage(400, 2)
    await inbox.copy([uids[1]], "Archive")
    assert account.quota() == QuotaUsage(700, 3)
    await inbox.move([uids[0]], "Trash")
    assert account.quota() == QuotaUsage(700, 3)
    await inbox.store_flags([uids[1]], [DELETED], FlagMode.ADD)
    await inbox.expunge()
    assert account.quota() == QuotaUsage(400, 2)
    await account.delete_folder("Trash")
    assert account.quota() == QuotaUsage(300, 1)
    assert store.account(BOB).quota() == QuotaUsage(0, 0)


@pytest_twisted.ensureDeferred
async def test_append_over_the_byte_limit_changes_nothing(kind, request):
    """An append that would pass the byte limit fails with MailboxFull (it could fit later)
    and leaves no message, no file and no usage behind; one larger than the whole quota
    fails with QuotaExceeded (552 5.2.2: it never fits)."""
    store = await make_store(kind, request, QuotaRules(default_bytes=1000))
    account = store.account(ALICE)
    inbox = account.folder("INBOX")
    await inbox.append(data(600))
    with pytest.raises(MailboxFull):
        await inbox.append(data(500))
    with pytest.raises(QuotaExceeded) as raised:
        await inbox.append(data(1500))
    assert not isinstance(raised.value, MailboxFull)
    assert account.quota() == QuotaUsage(600, 1, 1000, None)
    assert len(list(inbox.uids())) == 1
    assert new_files(store) == []
    await inbox.append(data(400))  # exactly up to the limit is fine
    assert account.quota().used_bytes == 1000


@pytest_twisted.ensureDeferred
async def test_message_limit(kind, request):
    """The MESSAGE resource limits the number of messages, whatever their size."""
    store = await make_store(kind, request, QuotaRules(default_messages=2))
    inbox = store.account(ALICE).folder("INBOX")
    await inbox.append(data())
    await inbox.append(data())
    with pytest.raises(MailboxFull):
        await inbox.append(data())
    assert store.account(ALICE).quota() == QuotaUsage(200, 2, None, 2)


@pytest_twisted.ensureDeferred
async def test_copy_over_quota_is_refused_and_move_is_not(kind, request):
    """A COPY that would pass the limit copies nothing (no new file either); a MOVE within
    the account does not change usage, so it works even at the limit."""
    store = await make_store(kind, request, QuotaRules(default_bytes=500))
    account = store.account(ALICE)
    inbox = account.folder("INBOX")
    uids = [await inbox.append(data(200)), await inbox.append(data(200))]
    with pytest.raises(MailboxFull):
        await inbox.copy(uids, "Archive")
    assert list(account.folder("Archive").uids()) == []
    assert new_files(store) == []
    assert await inbox.move(uids, "Archive") != []
    assert account.quota().used_bytes == 400


@pytest_twisted.ensureDeferred
async def test_account_override(kind, request):
    """The account's own limit (the directory's quota_bytes) replaces the default; 0 keeps
    the default and a negative one means unlimited."""
    own = {ALICE: 300, BOB: -1}
    store = await make_store(kind, request, QuotaRules(default_bytes=150, override=own.get))
    assert store.account(ALICE).quota().limit_bytes == 300
    assert store.account(BOB).quota().limit_bytes is None
    await store.account(ALICE).folder("INBOX").append(data(250))
    await store.account(BOB).folder("INBOX").append(data(5000))
    own[ALICE] = 0
    assert store.account(ALICE).quota().limit_bytes == 150


def test_rules_limits():
    assert QuotaRules().limits(ALICE) == (None, None)
    assert QuotaRules(default_bytes=10, default_messages=5).limits(ALICE) == (10, 5)
    assert QuotaRules(default_bytes=10, override=lambda a: 20).limits(ALICE) == (20, None)
    assert QuotaRules(default_bytes=10, override=lambda a: -1).limits(ALICE) == (None, None)


# -- the LMDB counters -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_counters_live_in_the_account_record(storage):
    """Usage is two counters in the account's index record, changed in the transaction that
    adds or removes a message (not a scan of the files)."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    uid = await inbox.append(data(123))
    with storage.db.read() as txn:
        record = txn.get_json(b"accounts", ALICE.encode())
    assert (record["used_bytes"], record["used_messages"]) == (123, 1)
    await inbox.expunge([uid])
    with storage.db.read() as txn:
        record = txn.get_json(b"accounts", ALICE.encode())
    assert (record["used_bytes"], record["used_messages"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_account_without_counters_gets_them_from_its_folders(storage):
    """An account record written before the counters existed starts from its folder
    records' own counters, then counts on."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    await inbox.append(data(100))
    await store.account(ALICE).folder("Sent").append(data(50))

    def forget(txn):
        record = txn.get_json(b"accounts", ALICE.encode())
        del record["used_bytes"], record["used_messages"]
        txn.put_json(b"accounts", ALICE.encode(), record)

    await storage.db.write(forget)
    assert store.account(ALICE).quota() == QuotaUsage(150, 2)
    await inbox.append(data(60))
    assert store.account(ALICE).quota() == QuotaUsage(210, 3)


@pytest_twisted.ensureDeferred
async def test_reindex_rebuilds_the_counters(storage):
    """``mailserver reindex`` recounts usage from the index's message records."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    await inbox.append(data(100))
    await inbox.append(data(200))

    def corrupt(txn):
        record = txn.get_json(b"accounts", ALICE.encode())
        record["used_bytes"], record["used_messages"] = 99999, 42
        txn.put_json(b"accounts", ALICE.encode(), record)

    await storage.db.write(corrupt)
    await reindex(store, ALICE)
    assert store.account(ALICE).quota() == QuotaUsage(300, 2)
    with storage.db.read() as txn:
        assert quota.usage(txn, ALICE) == (300, 2)


# -- SMTP delivery -------------------------------------------------------------------------


def test_smtp_replies_for_quota_errors():
    """A full mailbox is a temporary 452 4.2.2; a message larger than the quota 552 5.2.2."""
    assert reply_for_error(MailboxFull()).lines()[0].startswith("452 4.2.2 ")
    assert reply_for_error(QuotaExceeded()).lines()[0].startswith("552 5.2.2 ")


@pytest.fixture
def smtp_into_store(kind, request):
    """An MX listener delivering into either provider; alice's quota is 1000 bytes."""
    rules = QuotaRules(override={ALICE: 1000}.get)
    if kind == "maildir":
        storage = request.getfixturevalue("storage")
        store, directory = storage.store, storage.directory
        store.quota_rules = rules
        target = LocalDeliveryTarget(store, directory)
    else:
        store, directory = MemoryStore(rules), MemoryDirectory()
        target = MemoryDeliveryTarget(store, directory)
    wait = pytest_twisted.blockon
    wait(directory.add_domain("example.org"))
    for address in (ALICE, BOB):
        wait(directory.add_user(address, "pw"))
        wait(store.create_account(address))
    realm = MailRealm(lambda: MXTarget(target, directory, "postmaster@example.org"))
    factory = SMTPFactory(
        Portal(realm, [AllowAnonymousAccess()]),
        SMTPPolicy(hostname="mx.test", max_message_size=100_000),
        None,
        reactor=reactor,
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield store, port.getHost().port
    wait(port.stopListening())


def smtp_dialog(port: int, steps: list[bytes]) -> list[str]:
    """Send each step and collect the last line of each reply (after the greeting)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    buffer = b""

    def reply() -> str:
        nonlocal buffer
        while True:
            while b"\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(buffer)
                buffer += chunk
            line, buffer = buffer.split(b"\r\n", 1)
            text = line.decode()
            if text[3:4] != "-":
                return text

    try:
        replies = [reply()]
        for step in steps:
            sock.sendall(step)
            replies.append(reply())
        return replies[1:]
    finally:
        sock.close()


def body(size: int) -> bytes:
    head = b"From: carol@example.net\r\nSubject: q\r\n\r\n"
    return head + b"y" * (size - len(head)) + b"\r\n.\r\n"


@pytest_twisted.ensureDeferred
async def test_smtp_refuses_a_full_mailbox(smtp_into_store):
    """Over SMTP: a message that does not fit alice's quota is refused at the end of DATA
    with 452 4.2.2 and stored nowhere; once alice is full, RCPT TO her is refused with 452
    4.2.2 while bob still gets mail; a declared SIZE larger than her whole quota is 552
    5.2.2 at RCPT."""
    store, port = smtp_into_store
    first = [
        b"EHLO c.test\r\n",
        b"MAIL FROM:<carol@example.net>\r\n",
        b"RCPT TO:<alice@example.org>\r\n",
        b"DATA\r\n",
    ]
    replies = await deferToThread(smtp_dialog, port, [*first, body(700), b"QUIT\r\n"])
    assert replies[-2].startswith("250 ")
    replies = await deferToThread(smtp_dialog, port, [*first, body(700), b"QUIT\r\n"])
    assert replies[-2].startswith("452 4.2.2 ")
    assert store.account(ALICE).quota().used_messages == 1
    assert new_files(store) == []
    tmp = (
        []
        if isinstance(store, MemoryStore)
        else os.listdir(os.path.join(store.account(ALICE).path, "tmp"))
    )
    assert tmp == []
    used = store.account(ALICE).quota().used_bytes  # the body plus trace headers
    await store.account(ALICE).folder("INBOX").append(data(1000 - used))  # exactly full
    replies = await deferToThread(
        smtp_dialog,
        port,
        [
            b"EHLO c.test\r\n",
            b"MAIL FROM:<carol@example.net>\r\n",
            b"RCPT TO:<alice@example.org>\r\n",
            b"RCPT TO:<bob@example.org>\r\n",
            b"DATA\r\n",
            body(200),
            b"MAIL FROM:<carol@example.net> SIZE=5000\r\n",
            b"RCPT TO:<alice@example.org>\r\n",
            b"QUIT\r\n",
        ],
    )
    assert replies[2].startswith("452 4.2.2 ")
    assert replies[3].startswith("250 ")
    assert replies[5].startswith("250 ")
    assert replies[7].startswith("552 5.2.2 ")
    assert store.account(BOB).quota().used_messages == 1
    assert store.account(ALICE).quota() == QuotaUsage(1000, 2, 1000, None)


@pytest_twisted.ensureDeferred
async def test_racing_appends_cannot_both_take_the_last_space(storage):
    """The check runs inside the index transaction: of several appends racing for the last
    free bytes exactly one wins, the others fail and leave no file behind."""
    from twisted.internet.defer import DeferredList

    store = storage.store
    store.quota_rules = QuotaRules(default_bytes=1000)
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    await inbox.append(data(400))
    results = await DeferredList([inbox.append(data(500)) for _ in range(4)], consumeErrors=True)
    won = [value for ok, value in results if ok]
    lost = [value for ok, value in results if not ok]
    assert len(won) == 1 and len(lost) == 3
    assert all(failure.check(MailboxFull) for failure in lost)
    assert store.account(ALICE).quota() == QuotaUsage(900, 2, 1000, None)
    assert new_files(store) == []
