"""The IMailStore contract, run against the maildir + LMDB store and the in-memory store."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from mailserver.errors import (
    AlreadyExists,
    FolderExists,
    InvalidName,
    NoSuchFolder,
    NoSuchMessage,
    NoSuchUser,
)
from mailserver.interfaces import IAccount, IMailbox, IMailboxRecords, IMailStore, IMessage
from mailserver.message import imap_render, mime
from mailserver.testing import MemoryStore
from mailserver.types import DELETED, SEEN, FlagMode, SpamVerdict, SpecialUse

ALICE = "alice@example.org"

MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: Hello there\r\n"
    b"Message-ID: <1@example.net>\r\n"
    b"\r\n"
    b"Hi Alice.\r\n"
)


def msg(n: int = 0) -> io.BytesIO:
    return io.BytesIO(MESSAGE.replace(b"Hello there", b"Hello %d" % n))


class StoreContract:
    """Behaviour every IMailStore provider guarantees. Subclasses provide ``make_store``."""

    @pytest.fixture
    def store(self, request):
        return self.make_store(request)

    @pytest.fixture
    def account(self, store):
        pytest_twisted.blockon(store.create_account(ALICE))
        return store.account(ALICE)

    @pytest.fixture
    def inbox(self, account):
        return account.folder("INBOX")

    def append(self, mailbox, n: int = 0, flags=()):
        return mailbox.append(msg(n), flags)

    @pytest_twisted.ensureDeferred
    async def test_provides_interfaces(self, store, account, inbox):
        """The store, its accounts, folders and messages provide their interfaces."""
        uid = await self.append(inbox)
        assert verifyObject(IMailStore, store)
        assert verifyObject(IAccount, account)
        assert verifyObject(IMailbox, inbox)
        assert verifyObject(IMessage, inbox.message(uid))

    def test_new_account_has_default_folders(self, account):
        """A new account has INBOX, Sent, Drafts, Junk, Trash and Archive with special use."""
        folders = {f.name: f.special_use for f in account.list_folders()}
        assert folders == {
            "INBOX": None,
            "Sent": SpecialUse.SENT,
            "Drafts": SpecialUse.DRAFTS,
            "Junk": SpecialUse.JUNK,
            "Trash": SpecialUse.TRASH,
            "Archive": SpecialUse.ARCHIVE,
        }
        assert account.list_folders()[0].name == "INBOX"

    @pytest_twisted.ensureDeferred
    async def test_account_errors(self, store, account):
        """Creating an existing account fails; an unknown account is NoSuchUser."""
        with pytest.raises(AlreadyExists):
            await store.create_account(ALICE.upper())
        with pytest.raises(NoSuchUser):
            store.account("nobody@example.org")
        assert store.has_account("Alice@Example.ORG")

    @pytest_twisted.ensureDeferred
    async def test_append_and_read_back(self, inbox):
        """An appended message reads back byte for byte, and the counters follow."""
        uid = await self.append(inbox, 1, flags=[SEEN])
        message = inbox.message(uid)
        with message.open() as f:
            assert f.read() == msg(1).getvalue()
        assert message.info.flags == frozenset({SEEN})
        assert message.info.size == len(msg(1).getvalue())
        info = inbox.info()
        assert (info.exists, info.unseen, info.size) == (1, 0, message.info.size)
        await self.append(inbox, 2)
        assert inbox.info().unseen == 1

    @pytest_twisted.ensureDeferred
    async def test_append_from_a_large_file(self, inbox, tmp_path):
        """A message appended from a file on disk (how IMAP hands over a large literal)
        reads back byte for byte, with its size, envelope and body structure (offsets,
        sizes and line counts of the parts) as a parse of the whole message gives them."""
        body = b"".join(b"line %07d of a large text part\r\n" % n for n in range(60_000))
        data = (
            b'From: Bob <bob@example.net>\r\nSubject: big\r\nContent-Type: multipart/mixed;'
            b' boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n'
            + body
            + b"--x\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\n"
            + body
            + b"--x--\r\n"
        )
        with open(tmp_path / "literal", "w+b") as source:
            source.write(data)
            source.seek(0)
            uid = await inbox.append(source, [SEEN])
        message = inbox.message(uid)
        with message.open() as f:
            assert f.read() == data
        parsed = mime.parse(data)
        assert message.info.size == len(data)
        assert message.info.envelope == parsed.envelope
        assert message.info.bodystructure == parsed.bodystructure
        assert [dict(a) for a in message.info.attachments] == parsed.attachments
        assert parsed.attachments[0]["size"] == len(body) - 2  # the CRLF is the delimiter's

    @pytest_twisted.ensureDeferred
    async def test_envelope_is_cached(self, inbox):
        """The parsed envelope and body structure are available without reading the file."""
        uid = await self.append(inbox, 7)
        info = inbox.message(uid).info
        assert info.envelope["subject"] == "Hello 7"
        assert info.envelope["message_id"] == "<1@example.net>"
        assert info.bodystructure["type"] == "text"

    @pytest_twisted.ensureDeferred
    async def test_messages_batch(self, inbox):
        """messages() gives what message() gives for the present UIDs, in order, absent ones
        skipped; with meta=False the cached parse results are left out, the rest is equal."""
        uids = [await self.append(inbox, n, flags=[SEEN] if n % 2 else []) for n in range(5)]
        await inbox.expunge([uids[1]])
        await inbox.store_flags([uids[2]], ["$Label"], FlagMode.ADD)
        wanted = [uids[0], uids[1], uids[2], uids[4], uids[4] + 100]
        full = list(inbox.messages(wanted))
        assert [m.info for m in full] == [
            inbox.message(u).info for u in (uids[0], uids[2], uids[4])
        ]
        assert full[0].info.envelope["subject"] == "Hello 0"
        with full[2].open() as f:
            assert f.read() == msg(4).getvalue()
        lean = list(inbox.messages(iter(wanted), meta=False))
        assert [m.info.uid for m in lean] == [uids[0], uids[2], uids[4]]
        for short, long in zip(lean, full):
            assert short.info.envelope == {} and short.info.bodystructure == {}
            assert short.info.spam is None and short.info.attachments == ()
            keep = ("uid", "flags", "modseq", "size", "internaldate", "savedate", "object_id")
            assert [getattr(short.info, k) for k in keep] == [getattr(long.info, k) for k in keep]
        assert lean[1].info.flags == frozenset({"$Label"})
        envelopes = list(inbox.messages(wanted, meta="envelope"))
        assert [m.info.envelope for m in envelopes] == [m.info.envelope for m in full]
        assert all(m.info.bodystructure == {} for m in envelopes)
        assert list(inbox.messages([])) == []

    @pytest_twisted.ensureDeferred
    async def test_records_are_the_index_fields_of_messages(self, inbox):
        """records() gives, for the present UIDs in order (absent ones skipped), the tuple
        (uid, flags, modseq, size, internaldate, object_id, packed) with the values
        messages() gives; packed is None unless rendered items are asked for, and then it
        is None or holds the stored form of what messages(meta="rendered") gives. (Both
        providers offer the optional IMailboxRecords.)"""
        assert verifyObject(IMailboxRecords, inbox)
        uids = [await self.append(inbox, n, flags=[SEEN] if n % 2 else []) for n in range(4)]
        await inbox.expunge([uids[1]])
        await inbox.store_flags([uids[2]], ["$Label"], FlagMode.ADD)
        wanted = [uids[0], uids[1], uids[2], uids[3], uids[3] + 100]
        infos = [m.info for m in inbox.messages(wanted, meta="rendered")]
        expected = [(i.uid, i.flags, i.modseq, i.size, i.internaldate, i.object_id) for i in infos]
        plain = list(inbox.records(iter(wanted)))
        assert [record[:6] for record in plain] == expected
        assert all(record[6] is None for record in plain)
        assert plain[1][1] == frozenset({"$Label"})
        full = list(inbox.records(wanted, rendered=True))
        assert [record[:6] for record in full] == expected
        for record, info in zip(full, infos):
            if record[6] is not None:
                assert imap_render.unpack(record[6]) == dict(info.rendered)
        assert list(inbox.records([])) == []

    @pytest_twisted.ensureDeferred
    async def test_uids_strictly_ascend(self, inbox):
        """UIDs are assigned in strictly ascending order (RFC 3501 §2.3.1.1)."""
        uids = [await self.append(inbox, n) for n in range(5)]
        assert uids == sorted(uids) and len(set(uids)) == 5
        assert list(inbox.uids()) == uids
        assert inbox.info().uidnext > uids[-1]

    @pytest_twisted.ensureDeferred
    async def test_expunged_uid_not_reused(self, inbox):
        """An expunged UID is never handed out again in the same UIDVALIDITY."""
        first = await self.append(inbox, 1)
        second = await self.append(inbox, 2)
        await inbox.store_flags([second], [DELETED], FlagMode.ADD)
        assert await inbox.expunge() == [second]
        third = await self.append(inbox, 3)
        assert third > second > first
        assert list(inbox.uids()) == [first, third]
        with pytest.raises(NoSuchMessage):
            inbox.message(second)

    @pytest.mark.parametrize("uid", [0, -1, 1 << 32, 1 << 49])
    def test_a_uid_outside_32_bits_is_no_such_message(self, inbox, uid):
        """UIDs are 32-bit numbers above 0 (RFC 9051 §2.3.1.1); anything else is absent."""
        with pytest.raises(NoSuchMessage):
            inbox.message(uid)

    @pytest_twisted.ensureDeferred
    async def test_recreated_folder_new_uidvalidity(self, account):
        """A folder deleted and created again gets a different UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        first = await account.create_folder("Projects")
        await account.delete_folder("Projects")
        second = await account.create_folder("Projects")
        assert second.uidvalidity != first.uidvalidity

    @pytest_twisted.ensureDeferred
    async def test_ranges(self, inbox):
        """UID and flag listings honour inclusive ranges and an open upper end."""
        uids = [await self.append(inbox, n) for n in range(6)]
        assert list(inbox.uids(uids[1], uids[3])) == uids[1:4]
        assert list(inbox.uids(uids[4])) == uids[4:]
        assert [i.uid for i in inbox.flags(uids[5] + 1)] == []

    @pytest_twisted.ensureDeferred
    async def test_store_flags_modes_and_modseq(self, inbox):
        """Add, remove and replace change flags, and each change raises the modseq."""
        uid = await self.append(inbox)
        before = inbox.info().highestmodseq
        [changed] = await inbox.store_flags([uid], [SEEN, "$Label"], FlagMode.ADD)
        assert changed.flags == frozenset({SEEN, "$Label"})
        assert changed.modseq > before
        assert inbox.info().highestmodseq == changed.modseq
        [removed] = await inbox.store_flags([uid], [SEEN], FlagMode.REMOVE)
        assert removed.flags == frozenset({"$Label"}) and removed.modseq > changed.modseq
        [replaced] = await inbox.store_flags([uid], [DELETED], FlagMode.REPLACE)
        assert replaced.flags == frozenset({DELETED})
        assert inbox.message(uid).info.flags == frozenset({DELETED})
        unchanged = await inbox.store_flags([uid], [DELETED], FlagMode.ADD)
        assert unchanged == []
        assert inbox.info().unseen == 1

    @pytest_twisted.ensureDeferred
    async def test_changed_since(self, inbox):
        """changed_since lists exactly the messages changed after a modseq, oldest change first."""
        uids = [await self.append(inbox, n) for n in range(3)]
        mark = inbox.info().highestmodseq
        await inbox.store_flags([uids[1]], [SEEN], FlagMode.ADD)
        assert [i.uid for i in inbox.changed_since(mark)] == [uids[1]]
        assert [i.uid for i in inbox.changed_since(0)] == [uids[0], uids[2], uids[1]]

    @pytest_twisted.ensureDeferred
    async def test_expunge_given_uids(self, inbox):
        """Expunging named UIDs removes them whatever their flags."""
        uids = [await self.append(inbox, n) for n in range(3)]
        assert await inbox.expunge([uids[0], 999]) == [uids[0]]
        assert inbox.info().exists == 2

    @pytest_twisted.ensureDeferred
    async def test_copy_is_a_label(self, account, inbox):
        """A copy shares the original's object id and bytes: one message, two labels."""
        uid = await self.append(inbox, 1, flags=[SEEN])
        [(source, copied)] = await inbox.copy([uid], "Archive")
        assert source == uid
        archive = account.folder("Archive")
        original, copy = inbox.message(uid), archive.message(copied)
        assert copy.info.object_id == original.info.object_id
        assert copy.info.flags == frozenset({SEEN})
        with copy.open() as f:
            assert f.read() == msg(1).getvalue()
        assert account.labels(original.info.object_id) == [("Archive", copied), ("INBOX", uid)]
        await inbox.expunge([uid])
        with archive.message(copied).open() as f:
            assert f.read() == msg(1).getvalue()

    @pytest_twisted.ensureDeferred
    async def test_copy_to_missing_folder(self, inbox):
        """Copying into a folder that does not exist fails with NoSuchFolder."""
        uid = await self.append(inbox)
        with pytest.raises(NoSuchFolder):
            await inbox.copy([uid], "Nowhere")

    @pytest_twisted.ensureDeferred
    async def test_move(self, account, inbox):
        """A move adds to the destination and removes from the source."""
        uids = [await self.append(inbox, n) for n in range(2)]
        pairs = await inbox.move(uids, "Trash")
        assert [p[0] for p in pairs] == uids
        assert inbox.info().exists == 0
        trash = account.folder("Trash")
        assert list(trash.uids()) == [p[1] for p in pairs]

    @pytest_twisted.ensureDeferred
    async def test_create_folder_rules(self, account):
        """Nested folders create their parents; duplicates and bad names are refused."""
        await account.create_folder("Work/2026/Q4")
        names = {f.name for f in account.list_folders()}
        assert {"Work", "Work/2026", "Work/2026/Q4"} <= names
        with pytest.raises(FolderExists):
            await account.create_folder("Work")
        for bad in ["", "a//b", "/a", "a/", "bad*", "x%y", "a/../b"]:
            with pytest.raises(InvalidName):
                await account.create_folder(bad)
        assert account.folder("inbox").name == "INBOX"

    @pytest_twisted.ensureDeferred
    async def test_unicode_and_dotted_folder_names(self, account, inbox):
        """Folder names with non-ASCII letters, dots and tildes work and hold messages."""
        for name in ["Réunions", "台北/日本語", "v1.2~rc"]:
            await account.create_folder(name)
            uid = await self.append(inbox)
            await inbox.move([uid], name)
            assert account.folder(name).info().exists == 1

    @pytest_twisted.ensureDeferred
    async def test_delete_inbox_refused(self, account):
        """INBOX cannot be deleted."""
        with pytest.raises(InvalidName):
            await account.delete_folder("INBOX")

    @pytest_twisted.ensureDeferred
    async def test_rename_keeps_uids_and_children(self, account):
        """A rename keeps UIDVALIDITY and UIDs and carries child folders along."""
        await account.create_folder("Old/Child")
        old = account.folder("Old")
        uid = await self.append(old)
        validity = old.info().uidvalidity
        await account.rename_folder("Old", "New/Place")
        renamed = account.folder("New/Place")
        assert renamed.info().uidvalidity == validity
        assert list(renamed.uids()) == [uid]
        assert account.folder("New/Place/Child").name == "New/Place/Child"
        with pytest.raises(NoSuchFolder):
            account.folder("Old")

    @pytest_twisted.ensureDeferred
    async def test_rename_inbox_moves_messages(self, account, inbox):
        """Renaming INBOX moves its messages to the new folder and leaves INBOX empty."""
        await self.append(inbox)
        await account.rename_folder("INBOX", "Old Mail")
        assert account.folder("INBOX").info().exists == 0
        assert account.folder("Old Mail").info().exists == 1

    @pytest_twisted.ensureDeferred
    async def test_subscribe(self, account):
        """The older flag form still works: subscribe(name, False) unsubscribes, and
        FolderInfo.subscribed follows."""
        await account.subscribe("Junk", False)
        junk = [f for f in account.list_folders() if f.name == "Junk"][0]
        assert junk.subscribed is False
        assert account.folder("Junk").info().subscribed is False
        await account.subscribe("Junk", True)
        assert account.folder("Junk").info().subscribed is True

    @pytest_twisted.ensureDeferred
    async def test_default_and_created_folders_are_subscribed(self, account):
        """A new account's folders and a created folder (with the parents made for it) are
        subscribed; subscriptions() lists INBOX first, then by name."""
        defaults = [f.name for f in account.list_folders()]
        assert account.subscriptions() == defaults
        info = await account.create_folder("Lists/IETF")
        assert info.subscribed is True
        assert {"Lists", "Lists/IETF"} <= set(account.subscriptions())
        assert account.subscriptions()[0] == "INBOX"

    @pytest_twisted.ensureDeferred
    async def test_unsubscribe_and_subscribe(self, account):
        """unsubscribe() removes a name, and succeeds when it was not subscribed (RFC 9051
        §6.3.8); subscribe() of a subscribed name changes nothing."""
        await account.unsubscribe("Archive")
        await account.unsubscribe("Archive")
        assert "Archive" not in account.subscriptions()
        assert account.folder("Archive").info().subscribed is False
        await account.subscribe("Archive")
        await account.subscribe("Archive")
        assert account.subscriptions().count("Archive") == 1
        assert account.folder("Archive").info().subscribed is True

    @pytest_twisted.ensureDeferred
    async def test_subscribe_a_name_without_folder(self, account):
        """A name with no folder can be subscribed (RFC 9051 §6.3.7) and unsubscribed; it
        creates no folder. Names are normalised as folder names are (inbox = INBOX)."""
        await account.subscribe("Ghost/Child")
        assert "Ghost/Child" in account.subscriptions()
        assert "Ghost/Child" not in [f.name for f in account.list_folders()]
        with pytest.raises(NoSuchFolder):
            account.folder("Ghost/Child")
        await account.unsubscribe("INBOX")
        await account.subscribe("inbox")
        assert account.subscriptions()[0] == "INBOX"
        await account.unsubscribe("Ghost/Child")
        assert "Ghost/Child" not in account.subscriptions()

    @pytest_twisted.ensureDeferred
    async def test_subscribe_invalid_name(self, account):
        """A name no folder could have is refused with InvalidName."""
        for name in ("", "a//b", "Work/*", "/lead"):
            with pytest.raises(InvalidName):
                await account.subscribe(name)
            with pytest.raises(InvalidName):
                await account.unsubscribe(name)

    @pytest_twisted.ensureDeferred
    async def test_delete_folder_keeps_subscription(self, account):
        """Deleting a folder leaves its name subscribed (RFC 9051 §6.3.7: the server does
        not remove a name from the subscriptions); a folder created again under that name
        is subscribed."""
        await account.create_folder("Projects")
        await account.delete_folder("Projects")
        assert "Projects" in account.subscriptions()
        await account.create_folder("Projects")
        assert account.folder("Projects").info().subscribed is True
        await account.unsubscribe("Projects")
        await account.delete_folder("Projects")
        assert "Projects" not in account.subscriptions()

    @pytest_twisted.ensureDeferred
    async def test_rename_leaves_subscriptions(self, account):
        """RENAME does not move subscriptions (RFC 9051 §6.3.6 says nothing of them, and
        §6.3.7 forbids removing a name; Dovecot does the same): the old names, children
        included, stay subscribed, and the new names are not subscribed."""
        await account.create_folder("Old/Sub")
        await account.rename_folder("Old", "New")
        names = account.subscriptions()
        assert "Old" in names and "Old/Sub" in names
        assert "New" not in names and "New/Sub" not in names
        assert account.folder("New/Sub").info().subscribed is False

    @pytest_twisted.ensureDeferred
    async def test_delete_account_drops_subscriptions(self, store, account):
        """Deleting an account drops its subscriptions: an account made again under the
        address has only its default folders' ones."""
        await account.subscribe("Ghost")
        await store.delete_account(ALICE)
        await store.create_account(ALICE)
        again = store.account(ALICE)
        assert "Ghost" not in again.subscriptions()
        assert again.subscriptions() == [f.name for f in again.list_folders()]

    @pytest_twisted.ensureDeferred
    async def test_spam_verdict(self, inbox):
        """A spam verdict recorded on a message is read back with it."""
        uid = await self.append(inbox)
        verdict = SpamVerdict(0.93, True, ("viagra", "dnsbl"), "bayes")
        await inbox.message(uid).set_spam_verdict(verdict)
        assert inbox.message(uid).info.spam == verdict

    @pytest_twisted.ensureDeferred
    async def test_delete_account(self, store, account):
        """A deleted account is gone."""
        await store.delete_account(ALICE)
        assert not store.has_account(ALICE)


class TestMaildirStore(StoreContract):
    def make_store(self, request):
        return request.getfixturevalue("storage").store


class TestMemoryStore(StoreContract):
    def make_store(self, request):
        return MemoryStore()
