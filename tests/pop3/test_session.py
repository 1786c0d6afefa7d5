"""A POP3 session with poplib over a real socket: login, STAT, LIST, UIDL, RETR, TOP, DELE,
RSET and QUIT against both store providers (RFC 1939)."""

from __future__ import annotations

import poplib

import pytest

from tests.pop3.conftest import PASSWORD, in_thread, message


async def test_greeting_and_login_show_the_maildrop(pop3_server):
    """The greeting is +OK; after USER/PASS the reply counts the INBOX's messages."""
    one, two = message("one"), message("two", body="Longer body.\r\n" * 3)
    await pop3_server.deliver(one)
    await pop3_server.deliver(two)

    def dialog():
        client = pop3_server.raw()
        assert client.command("USER alice@example.org").startswith("+OK")
        reply = client.command(f"PASS {PASSWORD}")
        client.close()
        return reply

    assert await in_thread(dialog) == f"+OK Logged in, 2 messages ({len(one) + len(two)} octets)"


async def test_stat_list_uidl_retr_with_poplib(pop3_server):
    """STAT, LIST and UIDL come from the snapshot; RETR gives the bytes exactly as stored."""
    first, second = message("one"), message("two")
    uid1 = await pop3_server.deliver(first)
    uid2 = await pop3_server.deliver(second)
    uidvalidity = pop3_server.folder().info().uidvalidity

    def dialog():
        client = pop3_server.poplib()
        try:
            stat = client.stat()
            listing = client.list()
            uidl = client.uidl()
            retr = client.retr(2)
            single = client.list(1), client.uidl(2)
        finally:
            client.quit()
        return stat, listing, uidl, retr, single

    stat, listing, uidl, retr, single = await in_thread(dialog)
    assert stat == (2, len(first) + len(second))
    assert listing[1] == [f"1 {len(first)}".encode(), f"2 {len(second)}".encode()]
    assert uidl[1] == [f"1 {uidvalidity}.{uid1}".encode(), f"2 {uidvalidity}.{uid2}".encode()]
    assert retr[0] == f"+OK {len(second)} octets".encode()
    assert b"\r\n".join(retr[1]) + b"\r\n" == second
    assert single == (f"+OK 1 {len(first)}".encode(), f"+OK 2 {uidvalidity}.{uid2}".encode())


async def test_unique_ids_are_stable_across_sessions(pop3_server):
    """The same message has the same UIDL in every session, also after another is deleted."""
    for n in range(3):
        await pop3_server.deliver(message(f"m{n}"))

    def uidl_then_delete_first():
        client = pop3_server.poplib()
        before = client.uidl()[1]
        client.dele(1)
        client.quit()
        client = pop3_server.poplib()
        after = client.uidl()[1]
        client.quit()
        return before, after

    before, after = await in_thread(uidl_then_delete_first)
    ids_before = [line.split()[1] for line in before]
    assert [line.split()[1] for line in after] == ids_before[1:]
    assert [line.split()[0] for line in after] == [b"1", b"2"]  # renumbered in a new session


async def test_top_gives_header_and_n_lines(pop3_server):
    """TOP n: the header, the empty line, then n lines of the body (RFC 1939 §7)."""
    data = message("top", body="line 1\r\n.line 2\r\nline 3\r\n")
    await pop3_server.deliver(data)

    def dialog():
        client = pop3_server.poplib()
        try:
            return client.top(1, 0), client.top(1, 2), client.top(1, 99)
        finally:
            client.quit()

    zero, two, all_ = await in_thread(dialog)
    header = data.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert zero[1] == [*header, b""]
    assert two[1] == [*header, b"", b"line 1", b".line 2"]  # poplib undoes the stuffing
    assert all_[1] == [*header, b"", b"line 1", b".line 2", b"line 3"]


async def test_dele_hides_and_quit_expunges(pop3_server):
    """DELE marks a message: it disappears from STAT/LIST, RETR of it is refused, and only
    QUIT (UPDATE) removes it from the INBOX."""
    for n in range(3):
        await pop3_server.deliver(message(f"m{n}"))

    def dialog():
        client = pop3_server.raw()
        client.login()
        replies = [client.command("DELE 2"), client.command("DELE 2"), client.command("RETR 2")]
        replies.append(client.command("LIST 2"))
        replies.append(client.command("STAT"))
        client.send("LIST\r\n")
        replies.append(client.text())
        listing = client.multi()
        return client, replies, listing

    client, replies, listing = await in_thread(dialog)
    size = len(message("m0"))
    assert replies == [
        "+OK Message 2 deleted",
        "-ERR Message 2 already deleted",
        "-ERR Message 2 already deleted",
        "-ERR Message 2 already deleted",
        f"+OK 2 {2 * size}",
        f"+OK 2 messages ({2 * size} octets)",
    ]
    assert listing == [f"1 {size}", f"3 {size}"]
    assert len(list(pop3_server.folder().uids())) == 3  # nothing removed yet
    quit_reply = await in_thread(client.command, "QUIT")
    assert quit_reply == "+OK pop.test POP3 server signing off (2 left)"
    assert await in_thread(client.closed)
    assert len(list(pop3_server.folder().uids())) == 2


async def test_rset_unmarks(pop3_server):
    """RSET unmarks every deleted message; QUIT then deletes nothing."""
    await pop3_server.deliver(message("keep"))

    def dialog():
        client = pop3_server.poplib()
        client.dele(1)
        reply = client.rset()
        stat = client.stat()
        client.quit()
        return reply, stat

    reply, stat = await in_thread(dialog)
    assert reply == f"+OK Maildrop has 1 messages ({len(message('keep'))} octets)".encode()
    assert stat[0] == 1
    assert len(list(pop3_server.folder().uids())) == 1


async def test_dropped_connection_deletes_nothing(pop3_server):
    """A session that ends without QUIT never enters UPDATE (RFC 1939 §6)."""
    await pop3_server.deliver(message("one"))
    await pop3_server.deliver(message("two"))

    def dialog():
        client = pop3_server.raw()
        client.login()
        assert client.command("DELE 1").startswith("+OK")
        assert client.command("RETR 2").startswith("+OK")
        client.multi()
        client.close()
        # A new session can log in only once the first one is gone (its lock released).
        client = pop3_server.raw()
        for _ in range(100):
            reply = client.command("USER alice@example.org") and client.command(f"PASS {PASSWORD}")
            if reply.startswith("+OK"):
                break
        client.command("QUIT")
        client.close()
        return reply

    assert (await in_thread(dialog)).startswith("+OK Logged in, 2 messages")
    assert len(list(pop3_server.folder().uids())) == 2
    assert all("\\Seen" not in info.flags for info in pop3_server.folder().flags())


async def test_retrieved_messages_are_seen_after_quit(pop3_server):
    """RETR then QUIT marks the message \\Seen, so IMAP shows it read; TOP does not."""
    await pop3_server.deliver(message("read"))
    await pop3_server.deliver(message("peeked"))

    def dialog():
        client = pop3_server.poplib()
        client.retr(1)
        client.top(2, 1)
        client.quit()

    await in_thread(dialog)
    flags = [info.flags for info in pop3_server.folder().flags()]
    assert "\\Seen" in flags[0] and "\\Seen" not in flags[1]


async def test_other_folders_are_not_the_maildrop(pop3_server):
    """Only the INBOX is served."""
    await pop3_server.deliver(message("elsewhere"), name="Archive")

    def dialog():
        client = pop3_server.poplib()
        try:
            return client.stat()
        finally:
            client.quit()

    assert await in_thread(dialog) == (0, 0)


async def test_wrong_password_is_refused_with_auth_code(pop3_server):
    """RFC 3206: a bad login gets -ERR [AUTH]; the session may try again."""

    def dialog():
        client = pop3_server.poplib(user=None)
        client.user("alice@example.org")
        with pytest.raises(poplib.error_proto) as bad:
            client.pass_("wrong")
        client.user("alice@example.org")
        good = client.pass_(PASSWORD)
        client.quit()
        return bad.value.args[0], good

    bad, good = await in_thread(dialog)
    assert bad == b"-ERR [AUTH] Authentication failed"
    assert good.startswith(b"+OK Logged in")
