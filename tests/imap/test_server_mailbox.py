"""SELECT/EXAMINE, LIST/LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE and STATUS, against
both store providers."""

from __future__ import annotations

import re

import pytest_twisted

from tests.imap.conftest import in_thread, message

DEFAULT_LIST = [
    '* LIST (\\HasNoChildren) "/" INBOX',
    '* LIST (\\HasNoChildren \\Archive) "/" Archive',
    '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    '* LIST (\\HasNoChildren \\Junk) "/" Junk',
    '* LIST (\\HasNoChildren \\Sent) "/" Sent',
    '* LIST (\\HasNoChildren \\Trash) "/" Trash',
]


def created(lines: list[str], tag: str) -> bool:
    """CREATE succeeded and told the new mailbox's MAILBOXID (RFC 8474 §4.1)."""
    return len(lines) == 1 and bool(
        re.fullmatch(tag + r" OK \[MAILBOXID \([A-Za-z0-9_-]+\)\] CREATE completed", lines[0])
    )


@pytest_twisted.ensureDeferred
async def test_select_and_examine_responses(imap_server):
    """SELECT reports FLAGS, EXISTS, RECENT and the first unseen message to an IMAP4rev1
    client, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS, HIGHESTMODSEQ, and READ-WRITE; EXAMINE is
    READ-ONLY with no permanent flags; an IMAP4rev2 client gets LIST instead of RECENT and
    UNSEEN; a failed SELECT closes the previous mailbox."""
    await imap_server.deliver(message("one"))
    await imap_server.deliver(message("two"))
    info = imap_server.folder().info()

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "SELECT inbox") == [
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
            " Flags permitted",
            "* 2 EXISTS",
            "* 0 RECENT",
            "* OK [UNSEEN 1] First unseen",
            f"* OK [UIDVALIDITY {info.uidvalidity}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            f"* OK [HIGHESTMODSEQ {info.highestmodseq}] Highest",
            f"* OK [MAILBOXID ({info.mailbox_id})] Mailbox id",
            "a OK [READ-WRITE] SELECT completed",
        ]
        examine = client.command("b", "EXAMINE INBOX")
        assert examine[0] == "* OK [CLOSED] Previous mailbox is now closed"
        assert "* OK [PERMANENTFLAGS ()] No permanent flags permitted" in examine
        assert examine[-1] == "b OK [READ-ONLY] EXAMINE completed"
        assert client.command("c", "SELECT Nowhere") == [
            "* OK [CLOSED] Previous mailbox is now closed",
            "c NO [NONEXISTENT] No such mailbox",
        ]
        assert client.command("d", "FETCH 1 FLAGS") == ["d BAD No mailbox selected"]
        client.command("e", "ENABLE IMAP4rev2")
        rev2 = client.command("f", "SELECT INBOX")
        assert '* LIST () "/" INBOX' in rev2
        assert not [line for line in rev2 if "RECENT" in line or "UNSEEN" in line]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_recent_for_imap4rev1(memory_imap):
    """A message that arrives while a session has the mailbox selected is \\Recent to that
    session only (IMAP4rev1, RFC 3501 §2.3.2)."""

    def select(client, tag):
        return client.command(tag, "SELECT INBOX")

    first = await in_thread(memory_imap.raw)
    await in_thread(first.login)
    assert "* 0 RECENT" in await in_thread(select, first, "a")
    await memory_imap.deliver(message("new"))

    def dialog():
        assert first.command("b", "NOOP") == ["* 1 EXISTS", "* 1 RECENT", "b OK NOOP completed"]
        assert first.command("c", "FETCH 1 FLAGS") == [
            "* 1 FETCH (FLAGS (\\Recent))",
            "c OK FETCH completed",
        ]
        assert first.command("d", "SEARCH RECENT") == ["* SEARCH 1", "d OK SEARCH completed"]
        second = memory_imap.raw()
        second.login()
        assert "* 0 RECENT" in select(second, "e")
        assert second.command("f", "STATUS INBOX (RECENT MESSAGES)")[0] == (
            "* STATUS INBOX (RECENT 0 MESSAGES 1)"
        )
        first.close()
        second.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_list_patterns_and_attributes(imap_server):
    """LIST with * and %, \\HasChildren / \\HasNoChildren, special-use attributes, the
    delimiter query, INBOX in any case, selection and return options (RFC 5258, RFC 5819)."""

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", 'LIST "" *') == [*DEFAULT_LIST, "a OK LIST completed"]
        assert client.command("b", 'LIST "" ""') == [
            '* LIST (\\Noselect) "/" ""',
            "b OK LIST completed",
        ]
        assert created(client.command("c", "CREATE Projects/2025/"), "c")
        assert '* LIST (\\HasChildren) "/" Projects' in client.command("d", 'LIST "" %')
        assert client.command("e", "LIST Projects/ %") == [
            '* LIST (\\HasNoChildren) "/" Projects/2025',
            "e OK LIST completed",
        ]
        assert client.command("f", 'LIST "" inBOX') == [DEFAULT_LIST[0], "f OK LIST completed"]
        assert client.command("g", 'LIST (SPECIAL-USE) "" *') == [
            *DEFAULT_LIST[1:],
            "g OK LIST completed",
        ]
        client.command("h", "UNSUBSCRIBE Projects")
        client.command("i", "UNSUBSCRIBE Projects/2025")
        client.command("j", "UNSUBSCRIBE Trash")
        subscribed = client.command("k", 'LIST (SUBSCRIBED) "" "*"')
        assert '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX' in subscribed
        assert not [line for line in subscribed if "Trash" in line or "Projects" in line]
        client.command("l", "SUBSCRIBE Projects/2025")
        assert client.command("m", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Pro%"') == [
            '* LIST (\\HasChildren) "/" Projects ("CHILDINFO" ("SUBSCRIBED"))',
            "m OK LIST completed",
        ]
        assert client.command(
            "n", 'LIST "" "Pro*" RETURN (SUBSCRIBED STATUS (MESSAGES UIDNEXT))'
        ) == [
            '* LIST (\\HasChildren) "/" Projects',
            "* STATUS Projects (MESSAGES 0 UIDNEXT 1)",
            '* LIST (\\HasNoChildren \\Subscribed) "/" Projects/2025',
            "* STATUS Projects/2025 (MESSAGES 0 UIDNEXT 1)",
            "n OK LIST completed",
        ]
        assert client.command("o", 'LSUB "" "*"')[-3:] == [
            '* LSUB () "/" Projects/2025',
            '* LSUB () "/" Sent',
            "o OK LSUB completed",
        ]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_create_delete_rename(imap_server):
    """CREATE (with USE), DELETE (not with children, not INBOX), RENAME keeping the
    messages, and the RFC 5530 codes of their failures."""
    await imap_server.deliver(message("keep me"))

    def dialog():
        client = imap_server.raw()
        client.login()
        assert created(client.command("a", "CREATE Work"), "a")
        assert client.command("c", "CREATE Work") == ["c NO [ALREADYEXISTS] Mailbox already exists"]
        assert created(client.command("d", "CREATE Work/Sub"), "d")
        assert client.command("e", "DELETE Work") == [
            "e NO [HASCHILDREN] Mailbox has children; delete them first"
        ]
        assert client.command("f", "DELETE INBOX")[0].startswith("f NO [CANNOT] ")
        assert client.command("g", "DELETE Nowhere") == ["g NO [NONEXISTENT] No such mailbox"]
        assert client.command("h", "RENAME Work Play") == ["h OK RENAME completed"]
        listed = client.command("i", 'LIST "" "Play*"')
        assert listed[:2] == [
            '* LIST (\\HasChildren) "/" Play',
            '* LIST (\\HasNoChildren) "/" Play/Sub',
        ]
        assert client.command("j", "RENAME Nowhere X") == ["j NO [NONEXISTENT] No such mailbox"]
        assert client.command("k", "RENAME Play Sent") == [
            "k NO [ALREADYEXISTS] Mailbox already exists"
        ]
        assert client.command("l", "CREATE Receipts (USE (\\Archive \\Flagged))") == [
            "l NO [USEATTR] A mailbox has at most one special use here"
        ]
        assert created(client.command("m", "CREATE Receipts (USE (\\Archive))"), "m")
        assert '* LIST (\\HasNoChildren \\Archive) "/" Receipts' in client.command(
            "n", 'LIST "" Receipts'
        )
        assert client.command("o", "RENAME INBOX Old") == ["o OK RENAME completed"]
        assert client.command("p", "STATUS Old (MESSAGES UNSEEN SIZE)")[0].startswith(
            "* STATUS Old (MESSAGES 1 UNSEEN 1 SIZE "
        )
        assert client.command("q", "STATUS INBOX (MESSAGES UIDNEXT DELETED)")[0] == (
            "* STATUS INBOX (MESSAGES 0 UIDNEXT 2 DELETED 0)"
        )
        assert client.command("r", "DELETE Play/Sub") == ["r OK DELETE completed"]
        assert client.command("s", "DELETE Play") == ["s OK DELETE completed"]
        client.close()

    await in_thread(dialog)
