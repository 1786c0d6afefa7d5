"""SUBSCRIBE, UNSUBSCRIBE, LSUB and LIST (SUBSCRIBED) when subscriptions and mailboxes part
ways: a subscribed name outlives its mailbox (RFC 9051 §6.3.7), a name may be subscribed
before its mailbox exists, and RENAME leaves subscriptions where they were. Played with
imaplib over a socket against both store providers.

imaplib has no LIST-EXTENDED syntax: the selection options go in front of the reference and
the return options after the pattern (``client.list('(SUBSCRIBED) ""', "x RETURN (...)")``
sends ``LIST (SUBSCRIBED) "" x RETURN (...)``).
"""

from __future__ import annotations

import pytest_twisted

from tests.imap.conftest import in_thread

SUBSCRIBED = '(SUBSCRIBED) ""'
RECURSIVE = '(SUBSCRIBED RECURSIVEMATCH) ""'


def listed(answer: tuple[str, list[bytes | None]]) -> list[str]:
    """The untagged lines of an OK answer of imaplib's list()/lsub(), decoded."""
    status, data = answer
    assert status == "OK", answer
    return [item.decode() for item in data if item is not None]


@pytest_twisted.ensureDeferred
async def test_delete_keeps_the_subscription(imap_server):
    """DELETE leaves the name subscribed: LIST (SUBSCRIBED) shows it \\NonExistent, LSUB
    \\Noselect; a plain LIST and LIST ... RETURN (SUBSCRIBED) list only mailboxes; the name
    cannot be selected; UNSUBSCRIBE removes it."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.create("Projects")[0] == "OK"
        assert client.delete("Projects")[0] == "OK"
        assert listed(client.list(SUBSCRIBED, "Projects")) == [
            '(\\NonExistent \\Subscribed) "/" Projects'
        ]
        assert listed(client.lsub('""', "Projects")) == ['(\\Noselect) "/" Projects']
        assert listed(client.list('""', "Projects")) == []
        assert listed(client.list('""', "Pro* RETURN (SUBSCRIBED)")) == []
        assert client.select("Projects")[0] == "NO"
        assert client.unsubscribe("Projects")[0] == "OK"
        assert listed(client.list(SUBSCRIBED, "Projects")) == []
        assert listed(client.lsub('""', "Projects")) == []
        client.logout()

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_subscribe_before_create(imap_server):
    """SUBSCRIBE of a name with no mailbox succeeds and creates nothing; once CREATE makes
    the mailbox the same subscription lists it as an ordinary one."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.subscribe("Later")[0] == "OK"
        assert listed(client.list('""', "Later")) == []
        assert listed(client.list(SUBSCRIBED, "Later")) == [
            '(\\NonExistent \\Subscribed) "/" Later'
        ]
        assert client.create("Later")[0] == "OK"
        assert listed(client.list(SUBSCRIBED, "Later")) == [
            '(\\HasNoChildren \\Subscribed) "/" Later'
        ]
        assert listed(client.lsub('""', "Later")) == ['() "/" Later']
        client.logout()

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_subscribed_child_without_parent(imap_server):
    """A subscribed Ghost/Child with no mailbox Ghost: "%" reaches Ghost, which LSUB flags
    \\Noselect (RFC 3501 §6.3.9) and LIST (SUBSCRIBED RECURSIVEMATCH) lists \\NonExistent
    with CHILDINFO (RFC 5258 §3.5); "*" lists the child itself."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.subscribe("Ghost/Child")[0] == "OK"
        assert listed(client.lsub('""', "Gh%")) == ['(\\Noselect) "/" Ghost']
        assert listed(client.lsub('""', "Gh*")) == ['(\\Noselect) "/" Ghost/Child']
        assert listed(client.list(RECURSIVE, "Gh%")) == [
            '(\\NonExistent) "/" Ghost ("CHILDINFO" ("SUBSCRIBED"))'
        ]
        assert listed(client.list(SUBSCRIBED, "Gh%")) == []
        assert listed(client.list(SUBSCRIBED, "Gh*")) == [
            '(\\NonExistent \\Subscribed) "/" Ghost/Child'
        ]
        client.logout()

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_rename_leaves_subscriptions(imap_server):
    """RENAME moves the mailbox, not the subscriptions (RFC 9051 §6.3.6 is silent, §6.3.7
    forbids dropping a name; Dovecot behaves so): the old names, children included, stay
    subscribed and become \\NonExistent; the new names are listed but not subscribed."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.create("Old/Sub")[0] == "OK"
        assert client.rename("Old", "New")[0] == "OK"
        assert listed(client.list(SUBSCRIBED, "Old*")) == [
            '(\\NonExistent \\Subscribed) "/" Old',
            '(\\NonExistent \\Subscribed) "/" Old/Sub',
        ]
        assert listed(client.list('""', "New* RETURN (SUBSCRIBED)")) == [
            '(\\HasChildren) "/" New',
            '(\\HasNoChildren) "/" New/Sub',
        ]
        client.logout()

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_unsubscribe_and_invalid_names(imap_server):
    """UNSUBSCRIBE of a name that is not subscribed is OK (RFC 9051 §6.3.8); a name no
    mailbox could have is refused with NO, and the session goes on."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.unsubscribe("Nothing")[0] == "OK"
        assert client.subscribe("a//b")[0] == "NO"
        assert client.subscribe('"Work/*"')[0] == "NO"
        assert client.unsubscribe("/lead")[0] == "NO"
        assert listed(client.list(SUBSCRIBED, "*")) == [
            '(\\HasNoChildren \\Subscribed) "/" INBOX',
            '(\\HasNoChildren \\Archive \\Subscribed) "/" Archive',
            '(\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts',
            '(\\HasNoChildren \\Junk \\Subscribed) "/" Junk',
            '(\\HasNoChildren \\Sent \\Subscribed) "/" Sent',
            '(\\HasNoChildren \\Trash \\Subscribed) "/" Trash',
        ]
        client.logout()

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_subscribed_name_without_mailbox_in_listings(imap_server):
    """A subscribed name with no mailbox gets no STATUS from LIST-STATUS (RFC 5819 §2: only
    selectable mailboxes), is not chosen by SPECIAL-USE, and keeps a non-ASCII name in
    modified UTF-7 (RFC 9051 §5.1.3); LIST (SUBSCRIBED) sorts it in with the mailboxes by
    the decoded name ("Ä" after ASCII)."""

    def session() -> None:
        client = imap_server.imaplib()
        assert client.subscribe("&AMQ-rger")[0] == "OK"  # "Ärger"
        assert client.subscribe("Bills")[0] == "OK"
        lines = listed(client.list(SUBSCRIBED, "* RETURN (STATUS (MESSAGES))"))
        assert '(\\NonExistent \\Subscribed) "/" Bills' in lines
        assert '(\\NonExistent \\Subscribed) "/" &AMQ-rger' in lines
        names = [line.rsplit(" ", 1)[1] for line in lines]
        order = ["INBOX", "Archive", "Bills", "Drafts", "Junk", "Sent", "Trash", "&AMQ-rger"]
        assert names == order
        status = [s.decode() for s in client.untagged_responses.get("STATUS", [])]
        assert len(status) == 6 and not [s for s in status if "Bills" in s or "rger" in s]
        assert listed(client.list('(SPECIAL-USE SUBSCRIBED) ""', "B*")) == []
        client.logout()

    await in_thread(session)
