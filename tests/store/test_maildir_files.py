"""The maildir store's files: readable by other tools, flags in names, one copy per message."""

from __future__ import annotations

import io
import mailbox
import os
import shutil

import pytest
import pytest_twisted

from mailserver.store import maildir
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.reindex import adopt_accounts, recover_new, reindex
from mailserver.types import DELETED, FLAGGED, SEEN, Address, Envelope, FlagMode
from tests.conftest import Storage

ALICE = "alice@example.org"
DATA = b"From: bob@example.net\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def alice(storage):
    pytest_twisted.blockon(storage.store.create_account(ALICE))
    return storage.store.account(ALICE)


def files(path: str, sub: str = "cur") -> list[str]:
    return sorted(os.listdir(os.path.join(path, sub)))


@pytest_twisted.ensureDeferred
async def test_python_maildir_reads_the_store(alice):
    """Python's mailbox.Maildir sees our folders, messages and flags."""
    inbox = alice.folder("INBOX")
    await inbox.append(io.BytesIO(DATA), [SEEN, FLAGGED])
    await alice.create_folder("Lists/Python")
    md = mailbox.Maildir(alice.path, factory=None, create=False)
    assert {"Sent", "Drafts", "Junk", "Trash", "Archive", "Lists", "Lists.Python"} <= set(
        md.list_folders()
    )
    [message] = list(md)
    assert message.get_flags() == "FS"
    assert message.get_subdir() == "cur"
    assert message["Subject"] == "s"


@pytest_twisted.ensureDeferred
async def test_flags_are_mirrored_in_names(alice):
    """Flag changes rename the file; expunge removes it."""
    inbox = alice.folder("INBOX")
    uid = await inbox.append(io.BytesIO(DATA))
    [name] = files(inbox.path)
    assert name.endswith(":2,")
    assert files(inbox.path, "new") == [] and files(inbox.path, "tmp") == []
    await inbox.store_flags([uid], [SEEN, DELETED, "$Forwarded", "custom"], FlagMode.ADD)
    [name] = files(inbox.path)
    assert maildir.split_name(name)[1] == frozenset({SEEN, DELETED, "$Forwarded"})
    assert name.endswith(":2,PST")
    await inbox.expunge()
    assert files(inbox.path) == []


@pytest_twisted.ensureDeferred
async def test_unicode_folder_on_disk_is_modified_utf7(alice):
    """A folder name is stored in modified UTF-7, with dots escaped, as Dovecot does."""
    await alice.create_folder("台北/v1.2")
    assert os.path.isdir(os.path.join(alice.path, ".&U,BTFw-.v1~2e2"))
    assert maildir.folder_name(".&U,BTFw-.v1~2e2") == "台北/v1.2"


@pytest_twisted.ensureDeferred
async def test_copies_share_one_file(alice):
    """A copied message is a hard link: one inode, no second copy of the bytes."""
    inbox = alice.folder("INBOX")
    uid = await inbox.append(io.BytesIO(DATA))
    await inbox.copy([uid], "Archive")
    archive = alice.folder("Archive")
    a = os.stat(inbox.message(uid).path())
    b = os.stat(archive.message(next(archive.uids())).path())
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    assert a.st_nlink == 2


@pytest_twisted.ensureDeferred
async def test_multi_recipient_delivery_writes_once(storage):
    """A message for several local accounts is stored once and linked into each INBOX."""
    await storage.directory.add_domain("example.org")
    for user in ("a", "b", "c"):
        await storage.directory.add_user(f"{user}@example.org", "pw")
        await storage.store.create_account(f"{user}@example.org")
    delivery = LocalDeliveryTarget(storage.store, storage.directory).start(
        Envelope(sender=None)
    )
    for user in ("a", "b", "c"):
        await delivery.add_recipient(Address(user, "example.org"))
    await delivery.body(io.BytesIO(DATA))
    await delivery.commit()
    inodes = set()
    for user in ("a", "b", "c"):
        inbox = storage.store.account(f"{user}@example.org").folder("INBOX")
        inodes.add(os.stat(inbox.message(next(inbox.uids())).path()).st_ino)
    assert len(inodes) == 1


@pytest_twisted.ensureDeferred
async def test_recover_indexes_files_left_in_new(alice):
    """At start, files in new/ are indexed once: foreign ones added, known ones filed."""
    inbox = alice.folder("INBOX")
    uid = await inbox.append(io.BytesIO(DATA))
    [name] = files(inbox.path)
    base = maildir.split_name(name)[0]
    # A crash after the commit but before the move to cur/: the file is still in new/.
    os.rename(os.path.join(inbox.path, "cur", name), os.path.join(inbox.path, "new", base))
    # An outside deliverer (procmail, a crash before the commit) left another one.
    with open(os.path.join(inbox.path, "new", "1700000000.M1P1.elsewhere"), "wb") as f:
        f.write(b"Subject: foreign\r\n\r\nx\r\n")
    assert await recover_new(alice.store) == 1
    assert files(inbox.path, "new") == []
    assert list(inbox.uids()) == [uid, uid + 1]
    assert inbox.message(uid + 1).info.envelope["subject"] == "foreign"
    with inbox.message(uid).open() as f:
        assert f.read() == DATA


@pytest_twisted.ensureDeferred
async def test_reindex_from_files_alone(tmp_path, alice, storage):
    """With the index lost, reindex rebuilds folders, messages, flags and labels from files."""
    inbox = alice.folder("INBOX")
    first = await inbox.append(io.BytesIO(DATA), [SEEN])
    await inbox.append(io.BytesIO(DATA.replace(b"body", b"two")), [FLAGGED])
    await alice.create_folder("Projects")
    await inbox.copy([first], "Projects")
    await storage.aclose()
    shutil.rmtree(tmp_path / "index")
    fresh = Storage(tmp_path)
    try:
        assert await adopt_accounts(fresh.store) == [ALICE]
        report = await reindex(fresh.store, ALICE)
        assert report.messages_added == 3
        account = fresh.store.account(ALICE)
        assert {"INBOX", "Projects", "Sent", "Archive"} <= {f.name for f in account.list_folders()}
        inbox = account.folder("INBOX")
        flags = [info.flags for info in inbox.flags()]
        assert flags == [frozenset({SEEN}), frozenset({FLAGGED})]
        projects = account.folder("Projects")
        copy = projects.message(next(projects.uids()))
        original = inbox.message(next(inbox.uids()))
        assert copy.info.object_id == original.info.object_id
        assert copy.info.envelope["subject"] == "s"
        again = await reindex(fresh.store, ALICE)
        assert (again.messages_added, again.messages_dropped, again.flags_fixed) == (0, 0, 0)
    finally:
        await fresh.aclose()


@pytest_twisted.ensureDeferred
async def test_reindex_follows_outside_changes(alice):
    """Reindex drops entries whose file vanished and takes flags changed by another tool."""
    inbox = alice.folder("INBOX")
    keep = await inbox.append(io.BytesIO(DATA))
    gone = await inbox.append(io.BytesIO(DATA))
    os.unlink(inbox.message(gone).path())
    path = inbox.message(keep).path()
    os.rename(path, path + "S")  # mutt marked it read
    report = await reindex(alice.store, ALICE)
    assert (report.messages_dropped, report.flags_fixed) == (1, 1)
    assert list(inbox.uids()) == [keep]
    assert inbox.message(keep).info.flags == frozenset({SEEN})
    assert inbox.info().unseen == 0


def test_unique_names_carry_the_pid_and_host_of_their_process():
    """Names made in a forked child carry the child's pid, not the parent's, and both end
    in the host name (taken once per process); two names never repeat."""
    import socket

    parent = maildir.unique_name()
    assert f"P{os.getpid()}Q" in parent
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    assert parent.endswith("." + host)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report one name and leave at once
        try:
            os.write(write, maildir.unique_name().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        name = pipe.read().decode()
    os.waitpid(child, 0)
    assert f"P{child}Q" in name and name.endswith("." + host)
    assert name != parent != maildir.unique_name()


@pytest.mark.parametrize("body_octets", [40, 2 << 20], ids=["small", "over-1MiB"])
@pytest_twisted.ensureDeferred
async def test_delivered_file_and_index_agree(storage, body_octets):
    """Local delivery of a small message (parsed from the bytes it wrote) and of one over
    sketch.SMALL (streamed, parsed from the file) stores Return-Path + the message, and
    the index holds the size, envelope and structure of that very file."""
    from mailserver.store import index, sketch

    await storage.directory.add_domain("example.org")
    await storage.directory.add_user(ALICE, "pw")
    await storage.store.create_account(ALICE)
    data = (
        b"From: bob@example.net\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n"
        + (b"y" * 78 + b"\r\n") * (body_octets // 80 + 1)
    )
    delivery = LocalDeliveryTarget(storage.store, storage.directory).start(
        Envelope(sender=Address("bob", "example.net"))
    )
    await delivery.add_recipient(Address("alice", "example.org"))
    await delivery.body(io.BytesIO(data))
    [uid] = await delivery.commit()
    inbox = storage.store.account(ALICE).folder("INBOX")
    message = inbox.message(uid)
    with open(message.path(), "rb") as stored:
        written = stored.read()
    assert written == b"Return-Path: <bob@example.net>\r\n" + data
    assert message.info.size == len(written)
    from_file = sketch.file_meta(message.path())
    with storage.db.read() as txn:
        meta = index.object_meta(txn, message.info.object_id)
    assert meta["bodystructure"] == from_file["bodystructure"]
    assert meta["envelope"] == from_file["envelope"]


def _commit_when_called(monkeypatch, module, name, inbox, base):
    """Make ``module.name`` (a step of recovery, on a pool thread) first run as before and
    then commit ``base``'s index entry the way its delivery would (with the move to cur/):
    the delivery's commit lands between recovery's scan of new/ and its own write."""
    real = getattr(module, name)

    def step(*args):
        result = real(*args)
        inbox.store.db.write_sync(
            lambda txn: inbox._add(txn, base, frozenset(), len(DATA), None, None)
        )
        return result

    monkeypatch.setattr(module, name, step)


@pytest.mark.parametrize("moment", ["after the parse", "after the scan"])
@pytest_twisted.ensureDeferred
async def test_recover_never_indexes_a_delivery_twice(alice, monkeypatch, moment):
    """Start-up recovery runs while the listeners already deliver, and a delivery renames
    its file into new/ before its commit: a file recovery found unindexed is indexed once,
    whether the delivery's commit lands after recovery parsed it (recovery's write sees
    the entry and adds none) or right after the scan (the file has moved to cur/)."""
    from mailserver.store import reindex as reindex_module
    from mailserver.store import sketch

    inbox = alice.folder("INBOX")
    base = maildir.unique_name()
    with open(os.path.join(inbox.path, "new", base), "wb") as f:
        f.write(DATA)
    if moment == "after the parse":
        _commit_when_called(monkeypatch, sketch, "file_meta", inbox, base)
    else:
        _commit_when_called(monkeypatch, reindex_module, "_stat", inbox, base)
    await recover_new(alice.store)
    assert len(list(inbox.uids())) == 1
    assert files(inbox.path, "new") == []
    assert len(files(inbox.path)) == 1
