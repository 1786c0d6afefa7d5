"""QUOTA (RFC 9208), APPENDLIMIT (RFC 7889), SAVEDATE (RFC 8514), OBJECTID (RFC 8474),
CREATE-SPECIAL-USE (RFC 6154 §3) and LITERAL+ / LITERAL- (RFC 7888), over real sockets with
raw dialogs and imaplib, against both store providers."""

from __future__ import annotations

import io
import re
import time

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.store.quota import QuotaRules
from mailserver.testing import MemoryDirectory, MemoryStore
from tests.imap.conftest import PASSWORD, POLICY, in_thread, message, populate, start_imap

DAY = 86400
ALICE = "alice@example.org"
OLD = "01-Feb-2001 10:00:00 +0000"


def today() -> str:
    return time.strftime("%d-%b-%Y", time.gmtime())


def day(offset: int) -> str:
    return time.strftime("%d-%b-%Y", time.gmtime(time.time() + offset * DAY))


# -- capabilities -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_capabilities_are_advertised(memory_imap, make_policy, tls_options):
    """Each extension is offered before and after login; APPENDLIMIT carries the literal
    limit; LITERAL+ by default, LITERAL- (and not LITERAL+) when the policy says so."""

    def dialog(server):
        client = server.raw(greeting=False)
        greeting = client.text()
        client.login()
        after = client.command("a", "CAPABILITY")[0].split()
        client.close()
        return greeting.split(), after

    greeting, after = await in_thread(dialog, memory_imap)
    wanted = {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "SAVEDATE", "OBJECTID",
              "CREATE-SPECIAL-USE", "APPENDLIMIT=100000", "LITERAL+"}  # fmt: skip
    assert wanted <= set(after)
    assert wanted <= {word.strip("[]") for word in greeting}
    assert "LITERAL-" not in after and "QUOTASET" not in after
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    await add_users(store, directory)
    server, port = start_imap(store, directory, make_policy(literal_plus=False), tls_options)
    try:
        _, minus = await in_thread(dialog, server)
    finally:
        await port.stopListening()
    assert "LITERAL-" in minus and "LITERAL+" not in minus


async def add_users(store, directory) -> None:
    """The users of the shared fixtures (alice and bob, password "secret")."""
    await directory.add_domain("example.org")
    for user in ("alice", "bob"):
        await directory.add_user(f"{user}@example.org", PASSWORD)
        await store.create_account(f"{user}@example.org")


# -- QUOTA --------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "maildir"])
def quota_imap(request, tls_options):
    """alice has a 4000-byte, 5-message quota; bob has none."""
    rules = QuotaRules(default_messages=5, override={ALICE: 4000, "bob@example.org": -1}.get)
    if request.param == "maildir":
        storage = request.getfixturevalue("storage")
        store, directory = storage.store, storage.directory
        store.quota_rules = rules
    else:
        store, directory = MemoryStore(rules), MemoryDirectory(bcrypt_cost=4)
    populate(store, directory)
    server, port = start_imap(store, directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


def body_of(size: int) -> bytes:
    head = message("sized", "")
    return head + b"z" * (size - len(head))


@pytest_twisted.ensureDeferred
async def test_getquotaroot_and_getquota(quota_imap):
    """Every mailbox has the account's root ""; QUOTA lists STORAGE in KiB (usage rounded
    up) and MESSAGE; an unknown root or mailbox is NO [NONEXISTENT]."""
    await quota_imap.deliver(body_of(1500))

    def dialog():
        client = quota_imap.raw()
        client.login()
        assert client.command("a", "GETQUOTAROOT INBOX") == [
            '* QUOTAROOT INBOX ""',
            '* QUOTA "" (STORAGE 2 3 MESSAGE 1 5)',
            "a OK GETQUOTAROOT completed",
        ]
        assert client.command("b", 'GETQUOTA ""') == [
            '* QUOTA "" (STORAGE 2 3 MESSAGE 1 5)',
            "b OK GETQUOTA completed",
        ]
        assert client.command("c", "GETQUOTA INBOX") == ["c NO [NONEXISTENT] No such quota root"]
        assert client.command("d", "GETQUOTAROOT Nowhere") == ["d NO [NONEXISTENT] No such mailbox"]
        assert client.command("e", "GETQUOTAROOT Archive")[0] == '* QUOTAROOT Archive ""'
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_quota_with_imaplib(quota_imap):
    """imaplib's getquotaroot/getquota read our responses."""

    def dialog():
        client = quota_imap.imaplib()
        typ, data = client.getquotaroot("INBOX")
        assert typ == "OK"
        assert data == [[b'INBOX ""'], [b'"" (STORAGE 0 3 MESSAGE 0 5)']]
        typ, data = client.getquota('""')
        assert (typ, data) == ("OK", [b'"" (STORAGE 0 3 MESSAGE 0 5)'])
        client.logout()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_no_limit_means_no_quota_root(imap_server):
    """An account with no limit at all has no quota root (a quota list may not be empty)."""

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "GETQUOTAROOT INBOX") == [
            "* QUOTAROOT INBOX",
            "a OK GETQUOTAROOT completed",
        ]
        assert client.command("b", 'GETQUOTA ""') == ["b NO [NONEXISTENT] No such quota root"]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_unlimited_storage_lists_only_messages(quota_imap):
    """bob's own quota is unlimited: only the MESSAGE resource (the default) is listed."""

    def dialog():
        client = quota_imap.raw()
        client.login("bob")
        assert client.command("a", 'GETQUOTA ""')[0] == '* QUOTA "" (MESSAGE 0 5)'
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_setquota_is_refused(quota_imap):
    """Users cannot change their own limits: SETQUOTA is NO [NOPERM]; a malformed one BAD;
    before login BAD."""

    def dialog():
        client = quota_imap.raw()
        assert client.command("a", 'SETQUOTA "" (STORAGE 512)') == ["a BAD Log in first"]
        client.login()
        assert client.command("b", 'SETQUOTA "" (STORAGE 99999999)') == [
            "b NO [NOPERM] Quotas are set by the administrator"
        ]
        assert client.command("c", 'SETQUOTA "" ()')[-1].startswith("c NO [NOPERM]")
        assert client.command("d", 'SETQUOTA "" (STORAGE)')[-1].startswith("d BAD ")
        assert client.command("e", 'SETQUOTA "" (STORAGE 1 STORAGE 2)')[-1].startswith("e BAD ")
        assert client.command("f", 'SETQUOTA ""')[-1].startswith("f BAD ")
        assert client.command("g", 'GETQUOTA ""')[0] == '* QUOTA "" (STORAGE 0 3 MESSAGE 0 5)'
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_append_copy_move_over_quota(quota_imap):
    """APPEND and COPY over the quota fail NO [OVERQUOTA] and change nothing; a MOVE keeps
    usage as it was, so it works at the limit; expunging frees space again."""
    await quota_imap.deliver(body_of(2500))
    big = body_of(2000)

    def dialog():
        client = quota_imap.raw()
        client.login()
        client.send(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        assert client.until("a") == ["a NO [OVERQUOTA] Mailbox full, try again later"]
        huge = body_of(5000)
        client.send(b"b APPEND INBOX {%d+}\r\n" % len(huge) + huge + b"\r\n")
        assert client.until("b") == ["b NO [OVERQUOTA] Mailbox full"]
        client.command("c", "SELECT INBOX")
        assert client.command("d", "COPY 1 Archive") == [
            "d NO [OVERQUOTA] Mailbox full, try again later"
        ]
        assert client.command("e", "STATUS Archive (MESSAGES)")[0] == (
            "* STATUS Archive (MESSAGES 0)"
        )
        moved = client.command("f", "MOVE 1 Archive")
        assert moved[-1] == "f OK MOVE completed"
        assert client.command("g", 'GETQUOTA ""')[0] == '* QUOTA "" (STORAGE 3 3 MESSAGE 1 5)'
        client.command("h", "SELECT Archive")
        client.command("i", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        status = client.command("j", "STATUS INBOX (DELETED DELETED-STORAGE)")
        assert status[0] == "* STATUS INBOX (DELETED 0 DELETED-STORAGE 0)"
        client.command("k", "SELECT INBOX")
        status = client.command("l", "STATUS Archive (DELETED DELETED-STORAGE MESSAGES)")
        assert status[0] == "* STATUS Archive (DELETED 1 DELETED-STORAGE 2500 MESSAGES 1)"
        client.command("m", "SELECT Archive")
        client.command("n", "EXPUNGE")
        assert client.command("o", 'GETQUOTA ""')[0] == '* QUOTA "" (STORAGE 0 3 MESSAGE 0 5)'
        client.send(b"p APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        assert client.until("p")[-1].startswith("p OK [APPENDUID ")
        client.close()

    await in_thread(dialog)
    assert quota_imap.store.account(ALICE).quota().used_bytes == 2000


@pytest_twisted.ensureDeferred
async def test_message_count_limit(quota_imap):
    """The MESSAGE resource: the sixth message is refused with OVERQUOTA."""
    for n in range(5):
        await quota_imap.deliver(message(f"m{n}"))

    def dialog():
        client = quota_imap.raw()
        client.login()
        data = message("sixth")
        client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
        assert client.until("a") == ["a NO [OVERQUOTA] Mailbox full, try again later"]
        assert "MESSAGE 5 5" in client.command("b", 'GETQUOTA ""')[0]
        client.close()

    await in_thread(dialog)


# -- APPENDLIMIT --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_appendlimit_status_and_list_status(imap_server):
    """STATUS APPENDLIMIT and LIST-STATUS give the same limit as the capability; an APPEND
    over it is NO [TOOBIG] and the session goes on."""

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "STATUS INBOX (APPENDLIMIT)")[0] == (
            "* STATUS INBOX (APPENDLIMIT 100000)"
        )
        lines = client.command("b", 'LIST "" Sent RETURN (STATUS (APPENDLIMIT MESSAGES))')
        assert lines[1] == "* STATUS Sent (APPENDLIMIT 100000 MESSAGES 0)"
        assert client.command("c", "APPEND INBOX {100001}") == ["c NO [TOOBIG] Literal too big"]
        assert client.command("d", "NOOP") == ["d OK NOOP completed"]
        client.close()

    await in_thread(dialog)


# -- SAVEDATE -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fetch_savedate(imap_server):
    """SAVEDATE is when the message was put into this mailbox: now for an APPEND with an old
    date (whose INTERNALDATE stays old), and now again for its COPY."""

    def dialog():
        client = imap_server.raw()
        client.login()
        data = message("old one")
        client.send(b'a APPEND INBOX "%s" {%d+}\r\n' % (OLD.encode(), len(data)) + data + b"\r\n")
        assert client.until("a")[-1].startswith("a OK ")
        client.command("b", "SELECT INBOX")
        lines = client.command("c", "FETCH 1 (INTERNALDATE SAVEDATE)")
        match = re.fullmatch(r'\* 1 FETCH \(INTERNALDATE "(.+)" SAVEDATE "(.+)"\)', lines[0])
        assert match and match.group(1) == " 1-Feb-2001 10:00:00 +0000"
        saved = time.strptime(match.group(2), "%d-%b-%Y %H:%M:%S +0000")
        assert abs(time.mktime(saved) - time.mktime(time.gmtime())) < DAY
        client.command("d", "COPY 1 Archive")
        client.command("e", "SELECT Archive")
        copied = client.command("f", "UID FETCH 1:* (SAVEDATE)")[0]
        assert re.fullmatch(r'\* 1 FETCH \(UID 1 SAVEDATE "[^"]+"\)', copied)
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_search_saved_dates(imap_server):
    """SAVEDBEFORE/SAVEDON/SAVEDSINCE compare the save date by day (not the internal date);
    SAVEDATESUPPORTED matches every message of a mailbox that keeps save dates."""
    inbox = imap_server.folder()
    await inbox.append(io.BytesIO(message("a")), [], time.time() - 40 * DAY)
    await inbox.append(io.BytesIO(message("b")))

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        cases = {
            f"SAVEDON {today()}": "* SEARCH 1 2",
            f"SAVEDSINCE {day(-1)}": "* SEARCH 1 2",
            f"SAVEDBEFORE {today()}": "* SEARCH",
            f"SAVEDSINCE {day(2)}": "* SEARCH",
            f"SINCE {day(-1)}": "* SEARCH 2",
            "SAVEDATESUPPORTED": "* SEARCH 1 2",
            "NOT SAVEDATESUPPORTED": "* SEARCH",
            f"OR SAVEDBEFORE {day(-3)} SUBJECT b": "* SEARCH 2",
        }
        for n, (key, wanted) in enumerate(cases.items()):
            assert client.command(f"q{n}", f"SEARCH {key}")[0] == wanted, key
        assert client.command("x", "SEARCH SAVEDON 31-Foo-2020")[-1].startswith("x BAD ")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_message_without_a_save_date(maildir_imap):
    """A message indexed before save dates were recorded shows SAVEDATE NIL, and the SAVED*
    keys use its internal date instead."""
    inbox = maildir_imap.folder()
    uid = await inbox.append(io.BytesIO(message("legacy")), [], time.time() - 10 * DAY)
    store = maildir_imap.store
    from mailserver.db.schema import msg_key

    def forget(txn):
        key = msg_key(inbox.folder_id, uid)
        record = txn.get_json(b"messages", key)
        del record["savedate"]
        txn.put_json(b"messages", key, record)

    await store.db.write(forget)

    def dialog():
        client = maildir_imap.raw()
        client.login()
        client.command("a", "SELECT INBOX")
        assert client.command("b", "FETCH 1 SAVEDATE")[0] == "* 1 FETCH (SAVEDATE NIL)"
        assert client.command("c", f"SEARCH SAVEDON {day(-10)}")[0] == "* SEARCH 1"
        client.close()

    await in_thread(dialog)


# -- OBJECTID -----------------------------------------------------------------------------


def mailbox_id(lines: list[str]) -> str:
    for line in lines:
        match = re.search(r"MAILBOXID \(([A-Za-z0-9_-]{1,255})\)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no MAILBOXID in {lines}")


@pytest_twisted.ensureDeferred
async def test_mailboxid(imap_server):
    """CREATE tells the new MAILBOXID; SELECT, EXAMINE and STATUS report the same one;
    RENAME keeps it; a mailbox deleted and created again gets a new one; no two mailboxes
    share one."""

    def dialog():
        client = imap_server.raw()
        client.login()
        created = mailbox_id(client.command("a", "CREATE Projects"))
        assert mailbox_id(client.command("b", "STATUS Projects (MAILBOXID)")) == created
        assert client.command("c", "STATUS Projects (MESSAGES MAILBOXID)")[0] == (
            f"* STATUS Projects (MESSAGES 0 MAILBOXID ({created}))"
        )
        selected = client.command("d", "SELECT Projects")
        assert f"* OK [MAILBOXID ({created})] Mailbox id" in selected
        client.command("e", "UNSELECT")
        client.command("f", "RENAME Projects Done")
        assert mailbox_id(client.command("g", "EXAMINE Done")) == created
        client.command("h", "UNSELECT")
        client.command("i", "DELETE Done")
        again = mailbox_id(client.command("j", "CREATE Done"))
        assert again != created
        ids = {
            mailbox_id(client.command(f"k{n}", f"STATUS {name} (MAILBOXID)"))
            for n, name in enumerate(["INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive"])
        }
        assert len(ids) == 6 and again not in ids
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_emailid_threadid(imap_server):
    """EMAILID is the store's object id, shared by a COPY and kept by a MOVE, different for
    different messages; THREADID is NIL (threads are not computed); SEARCH EMAILID finds
    the message, SEARCH THREADID nothing."""
    await imap_server.deliver(message("one"))
    await imap_server.deliver(message("two"))
    object_id = imap_server.folder().message(1).info.object_id

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("a", "SELECT INBOX")
        lines = client.command("b", "FETCH 1:2 (EMAILID THREADID)")
        assert lines[0] == f"* 1 FETCH (EMAILID ({object_id}) THREADID NIL)"
        other = re.fullmatch(r"\* 2 FETCH \(EMAILID \(([A-Za-z0-9_-]+)\) THREADID NIL\)", lines[1])
        assert other and other.group(1) != object_id
        client.command("c", "COPY 1 Archive")
        assert client.command("d", f"SEARCH EMAILID {object_id}")[0] == "* SEARCH 1"
        assert client.command("e", "SEARCH THREADID T1")[0] == "* SEARCH"
        assert client.command("f", "SEARCH EMAILID Mnothing")[0] == "* SEARCH"
        client.command("g", "SELECT Archive")
        assert client.command("h", "UID FETCH 1 EMAILID")[0] == (
            f"* 1 FETCH (UID 1 EMAILID ({object_id}))"
        )
        client.command("i", "MOVE 1 Trash")
        client.command("j", "SELECT Trash")
        assert client.command("k", "FETCH 1 EMAILID")[0] == f"* 1 FETCH (EMAILID ({object_id}))"
        assert client.command("l", "SEARCH EMAILID")[-1].startswith("l BAD ")
        client.close()

    await in_thread(dialog)


# -- CREATE-SPECIAL-USE -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_special_use(imap_server):
    """CREATE with USE sets the attribute LIST shows; an unknown or virtual use (\\All,
    \\Flagged) is NO [USEATTR] and creates nothing; USE () is a plain mailbox."""

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "CREATE Old/Mail (USE (\\Archive))")[-1].endswith(
            "CREATE completed"
        )
        listed = client.command("b", 'LIST "" Old*')
        assert '* LIST (\\HasNoChildren \\Archive) "/" Old/Mail' in listed
        assert '* LIST (\\HasChildren) "/" Old' in listed
        for n, use in enumerate(["\\All", "\\Flagged", "\\Bogus"]):
            lines = client.command(f"c{n}", f"CREATE Virtual (USE ({use}))")
            assert lines == [f"c{n} NO [USEATTR] Unsupported special use {use}"]
        assert client.command("d", 'LIST "" Virtual') == ["d OK LIST completed"]
        assert client.command("e", "CREATE Plain (USE ())")[-1].endswith("CREATE completed")
        assert '* LIST (\\HasNoChildren) "/" Plain' in client.command("f", 'LIST "" Plain')
        assert client.command("g", "CREATE X (USE \\Sent)")[-1].startswith("g BAD ")
        assert client.command("h", "CREATE X (NOPE (\\Sent))")[-1].startswith("h BAD ")
        special = client.command("i", 'LIST (SPECIAL-USE) "" *')
        assert '* LIST (\\HasNoChildren \\Archive) "/" Old/Mail' in special
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_create_special_use_with_imaplib(imap_server):
    """imaplib passes the USE parameter through create()."""

    def dialog():
        client = imap_server.imaplib()
        assert client.create("Receipts (USE (\\Archive))")[0] == "OK"
        typ, data = client.list('""', "Receipts")
        assert data == [b'(\\HasNoChildren \\Archive) "/" Receipts']
        client.logout()

    await in_thread(dialog)


# -- LITERAL+ / LITERAL- ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_literal_plus_takes_large_nonsync_literals(imap_server):
    """With LITERAL+ a {n+} larger than 4096 octets is read without a continuation; one
    over the literal limit is read and discarded, then NO [TOOBIG], and the session goes
    on."""
    data = body_of(6000)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
        assert client.until("a")[-1].startswith("a OK [APPENDUID ")
        huge = b"y" * 100_001
        client.send(b"b APPEND INBOX {100001+}\r\n" + huge + b"\r\nc NOOP\r\n")
        assert client.until("b") == ["b NO [TOOBIG] Literal too big"]
        assert client.until("c") == ["c OK NOOP completed"]
        client.close()

    await in_thread(dialog)
    assert len(list(imap_server.folder().uids())) == 1


@pytest_twisted.ensureDeferred
async def test_literal_minus(make_policy, tls_options):
    """With LITERAL- (RFC 7888 §5) a {n+} up to 4096 octets works; a larger one is read and
    discarded and answered BAD [TOOBIG] (nothing stored, the session goes on); a
    synchronizing literal of any size within the limit still works."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    await add_users(store, directory)
    server, port = start_imap(store, directory, make_policy(literal_plus=False), tls_options)
    small, large = body_of(4096), body_of(4097)

    def dialog():
        client = server.raw()
        client.login()
        client.send(b"a APPEND INBOX {4096+}\r\n" + small + b"\r\n")
        assert client.until("a")[-1].startswith("a OK [APPENDUID ")
        client.send(b"b APPEND INBOX {4097+}\r\n" + large + b"\r\nc NOOP\r\n")
        lines = client.until("b")
        assert re.fullmatch(r"b BAD \[TOOBIG\] .*", lines[-1]), lines
        assert client.until("c") == ["c OK NOOP completed"]
        client.send(b"d APPEND INBOX {4097}\r\n")
        assert client.text() == "+ Ready"
        client.send(large + b"\r\n")
        assert client.until("d")[-1].startswith("d OK [APPENDUID ")
        client.close()

    try:
        await in_thread(dialog)
    finally:
        await port.stopListening()
    assert len(list(store.account(ALICE).folder("INBOX").uids())) == 2


def test_setquota_and_status_items_parse():
    """SETQUOTA's resource list (RFC 9208 §5) and the new STATUS items parse as values."""
    from mailserver.imap.parse_mailbox import SetQuota, Status
    from tests.imap.helpers import args

    assert args('A1 SETQUOTA "" (STORAGE 512 message 10)') == SetQuota(
        "", (("STORAGE", 512), ("MESSAGE", 10))
    )
    assert args("A1 SETQUOTA user.x ()") == SetQuota("user.x", ())
    assert args("A1 STATUS INBOX (deleted-storage MAILBOXID appendlimit)") == Status(
        "INBOX", ("DELETED-STORAGE", "MAILBOXID", "APPENDLIMIT")
    )


@settings(max_examples=200, deadline=None)
@given(
    root=st.text(alphabet="abcXYZ019._-", max_size=12),
    limits=st.dictionaries(
        st.sampled_from(["STORAGE", "MESSAGE", "MAILBOX", "X-ANY"]), st.integers(0, 2**63 - 1)
    ),
)
def test_setquota_parses_any_resource_list(root, limits):
    from mailserver.imap.parse_mailbox import SetQuota
    from tests.imap.helpers import args

    listed = " ".join(f"{name} {value}" for name, value in limits.items())
    assert args(f'A1 SETQUOTA "{root}" ({listed})') == SetQuota(root, tuple(limits.items()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_quota_commands_never_fail_to_parse(tail):
    """Whatever follows GETQUOTA, GETQUOTAROOT or SETQUOTA is a command or a BadCommand."""
    from mailserver.imap.grammar import BadCommand, Command
    from tests.imap.helpers import parse

    for verb in (b"GETQUOTA", b"GETQUOTAROOT", b"SETQUOTA"):
        assert isinstance(parse(b"A1 " + verb + b" " + tail), Command | BadCommand)
