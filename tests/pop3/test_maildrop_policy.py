"""The maildrop lock (RFC 1939 §8, RFC 2449 [IN-USE]), LOGIN-DELAY (RFC 2449 §6.5), and the
"leave on server" option with its per-account override."""

from __future__ import annotations

from twisted.internet.task import deferLater

from mailserver.pop3.factory import MaildropLocks
from tests.pop3.conftest import PASSWORD, in_thread, message


async def until_unlocked(factory, user: str = "alice@example.org") -> None:
    """Wait (reactor turns, no timing) until the server has seen the first session close."""
    from twisted.internet import reactor

    for _ in range(1000):
        if not factory.locks.held(user):
            return
        await deferLater(reactor, 0.001, lambda: None)
    raise AssertionError("the lock was never released")


async def test_second_session_gets_in_use_until_the_first_ends(maildir_pop3):
    """While one session holds the maildrop, a second login gets -ERR [IN-USE] and may try
    again; once the first connection is gone (no QUIT), the lock is free."""
    first = await in_thread(maildir_pop3.raw)
    await in_thread(first.login)

    def second_login():
        client = maildir_pop3.raw()
        client.command("USER alice@example.org")
        return client, client.command(f"PASS {PASSWORD}")

    second, refused = await in_thread(second_login)
    assert refused == "-ERR [IN-USE] Maildrop is in use by another POP3 session"
    other_user = await in_thread(maildir_pop3.raw)
    assert (await in_thread(other_user.login, "bob")).startswith("+OK")  # bob's is separate
    first.close()  # dropped, never QUIT
    await until_unlocked(maildir_pop3.factory)
    assert (await in_thread(second.login)).startswith("+OK")
    second.close()
    other_user.close()


async def test_locks_shared_between_listeners(make_pop3):
    """The STLS and the implicit-TLS listener of one process share the locks."""
    locks = MaildropLocks()
    one, two = make_pop3(locks=locks), make_pop3(locks=locks)
    first = await in_thread(one.raw)
    await in_thread(first.login)

    def second():
        client = two.raw()
        client.command("USER alice@example.org")
        return client.command(f"PASS {PASSWORD}")

    assert (await in_thread(second)).startswith("-ERR [IN-USE]")
    first.close()


async def test_login_delay(make_pop3):
    """With login_delay, a second login within the delay gets -ERR [LOGIN-DELAY], and CAPA
    says how long to wait."""
    server = make_pop3(login_delay=900)

    def dialog():
        client = server.raw()
        client.login()
        caps = client.command("CAPA") and client.multi()
        client.command("QUIT")
        again = server.raw()
        again.command("USER alice@example.org")
        return caps, again.command(f"PASS {PASSWORD}")

    caps, refused = await in_thread(dialog)
    assert "LOGIN-DELAY 900" in caps
    assert refused == "-ERR [LOGIN-DELAY] Wait 900 seconds between logins"


async def test_leave_on_server_keeps_deleted_mail_marked_seen(make_pop3):
    """With leave_on_server, DELE hides the message for the session, QUIT keeps it (no
    \\Deleted, no expunge) and marks it \\Seen; the next session lists it with the same
    unique id."""
    server = make_pop3(leave_on_server=True)
    await server.deliver(message("one"))
    await server.deliver(message("two"))

    def dialog():
        client = server.poplib()
        before = client.uidl()[1]
        client.dele(1)
        stat = client.stat()
        client.quit()
        client = server.poplib()
        after = client.uidl()[1]
        client.quit()
        return before, stat, after

    before, stat, after = await in_thread(dialog)
    assert stat[0] == 1
    assert after == before
    flags = [info.flags for info in server.folder().flags()]
    assert "\\Seen" in flags[0] and "\\Deleted" not in flags[0]
    assert "\\Seen" not in flags[1]


async def test_per_account_setting_overrides_the_default(make_pop3):
    """The factory's ``account_leave_on_server(user)`` hook (an account's own setting) wins
    over the policy default; None falls back to the default."""
    settings = {"alice@example.org": True, "bob@example.org": None}
    server = make_pop3(account_leave_on_server=settings.get)
    for user in ("alice", "bob"):
        await server.deliver(message("m"), user=user)

    def delete_first(user: str):
        client = server.poplib(user)
        client.dele(1)
        client.quit()

    await in_thread(delete_first, "alice")
    await in_thread(delete_first, "bob")
    assert len(list(server.folder(user="alice").uids())) == 1  # kept
    assert len(list(server.folder(user="bob").uids())) == 0  # the policy: delete


async def test_imap_expunge_during_a_session(maildir_pop3):
    """A message expunged by another session after the snapshot: RETR says so, the rest of
    the session works, and QUIT still deletes what was marked."""
    uid1 = await maildir_pop3.deliver(message("one"))
    await maildir_pop3.deliver(message("two"))
    client = await in_thread(maildir_pop3.raw)
    await in_thread(client.login)
    await maildir_pop3.folder().expunge([uid1])
    replies = await in_thread(
        lambda: [client.command("RETR 1"), client.command("DELE 2"), client.command("QUIT")]
    )
    assert replies[0] == "-ERR Message 1 was removed by another session"
    assert replies[1] == "+OK Message 2 deleted"
    assert replies[2].startswith("+OK")
    assert list(maildir_pop3.folder().uids()) == []


async def test_delivery_during_a_session_is_not_in_the_snapshot(pop3_server):
    """Mail that arrives after login appears in the next session (RFC 1939 §5: numbers are
    fixed for the session)."""
    await pop3_server.deliver(message("one"))
    client = await in_thread(pop3_server.raw)
    await in_thread(client.login)
    await pop3_server.deliver(message("two"))
    assert await in_thread(client.command, "STAT") == f"+OK 1 {len(message('one'))}"
    assert await in_thread(client.command, "RETR 2") == "-ERR No such message"
    await in_thread(client.command, "QUIT")
    again = await in_thread(pop3_server.poplib)
    assert (await in_thread(again.stat))[0] == 2
    await in_thread(again.quit)
