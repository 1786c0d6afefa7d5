"""mailserver.filter.lists on a real index: entries are parsed and normalised (and nothing
but BadEntry ever escapes the parser), every entry type matches in every scope, the most
specific scope and then the most specific entry decide, blocks wait for RCPT, and a change
applies to the next look-up."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from zope.interface.verify import verifyObject

from mailserver.db import Database
from mailserver.filter.lists import (
    SERVER,
    BadEntry,
    Client,
    ListCheck,
    ListKind,
    ListStore,
    parse_entry,
    sender_candidates,
)
from mailserver.interfaces.filter import ICheck, ICheckSession
from mailserver.message.address import parse_address
from mailserver.types import ACCEPT, Action, Envelope, Peer

ALLOW, BLOCK = ListKind.ALLOW, ListKind.BLOCK
ALICE = parse_address("alice@example.org")


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=16 << 20, reactor=reactor,
                             sync=False)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


@pytest.fixture
def store(db):
    clock = task.Clock()
    clock.advance(1_000_000)
    return ListStore(db, clock)


def verdict(store, client="192.0.2.7", sender="someone@sender.example", rcpt=ALICE):
    """The lists' verdict for one RCPT of one message."""
    session = ListCheck(store).session(Peer(client))
    envelope = Envelope(None if sender is None else parse_address(sender), client_address=client)
    connected = session.connect()
    assert connected is ACCEPT or connected.trusted
    session.sender(envelope)
    return session.recipient(envelope, rcpt)


def blocked(v) -> bool:
    return v.action is Action.REJECT and v.code == 550 and v.enhanced == "5.7.1"


def allowed(v) -> bool:
    return v.action is Action.ACCEPT and v.trusted and v.rule == "ALLOW_LIST" and v.score < 0


# -- the parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "normal"),
    [
        ("User@Example.COM", "address", "user@example.com"),
        (" bob+news@Sub.Example.com ", "address", "bob+news@sub.example.com"),
        ("Example.COM.", "domain", "example.com"),
        ("@example.com", "domain", "example.com"),
        (".Example.com", "subdomains", ".example.com"),
        (".xyz", "subdomains", ".xyz"),
        ("bücher.example", "domain", "xn--bcher-kva.example"),
        ("192.0.2.7", "network", "192.0.2.7"),
        ("192.0.2.7/32", "network", "192.0.2.7"),
        ("192.0.2.0/24", "network", "192.0.2.0/24"),
        ("2001:DB8::/32", "network", "2001:db8::/32"),
        ("2001:db8::1", "network", "2001:db8::1"),
        ("::ffff:192.0.2.0/120", "network", "192.0.2.0/24"),
    ],
)
def test_entries_are_normalised(text, kind, normal):
    entry = parse_entry(text)
    assert (entry.type, entry.text) == (kind, normal)
    assert parse_entry(entry.text) == entry


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty entry"),
        ("192.0.2.1/24", "did you mean 192.0.2.0/24"),
        ("1.2.3", "not an IP address"),
        ("[192.0.2.1]", "without brackets"),
        ("x@[192.0.2.1]", "list the IP address itself"),
        ("fe80::1%eth0", "scoped IPv6"),
        ("exa mple.com", "not a domain"),
        ("a@b@c", "not an address"),
        ("foo\x00bar", "control characters"),
        ("2001:db8::/129", "not an IP address"),
        ("x" * 400, "longer than"),
    ],
)
def test_bad_entries_say_what_to_give(text, says):
    with pytest.raises(BadEntry) as caught:
        parse_entry(text)
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_parser_raises_only_bad_entry(text):
    """Any text parses to an entry that parses to itself, or is a BadEntry."""
    try:
        entry = parse_entry(text)
    except BadEntry:
        return
    assert parse_entry(entry.text) == entry


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.tuples(st.from_regex(r"[A-Za-z0-9._+-]{1,20}", fullmatch=True), _domain).map(
            "@".join
        ),
        _domain,
        _domain.map(lambda d: "." + d),
        st.ip_addresses().map(str),
        st.ip_addresses(v=4).flatmap(
            lambda ip: st.integers(0, 32).map(lambda n: f"{ip}/{n}")
        ),
    )
)
def test_parser_on_entry_shaped_text(text):
    """Entry-shaped text is accepted or refused with BadEntry, and normalising is stable."""
    try:
        entry = parse_entry(text)
    except BadEntry as error:
        assert str(error)
        return
    assert parse_entry(entry.text) == entry
    assert parse_entry(entry.text.upper() if entry.type != "network" else entry.text) == entry


def test_client_candidates_and_sender_candidates():
    client = Client("::ffff:192.0.2.77")
    assert client.candidates([32, 24, 0]) == ["192.0.2.77", "192.0.2.0/24", "0.0.0.0/0"]
    assert Client("2001:db8::1").candidates([64]) == ["2001:db8::/64"]
    assert Client("not-an-ip").candidates([24]) == []
    assert sender_candidates(parse_address("Bob+x@Mail.Example.com")) == (
        "bob+x@mail.example.com", "bob@mail.example.com", "mail.example.com",
        ".example.com", ".com",
    )
    assert sender_candidates(None) == ()


# -- the store ----------------------------------------------------------------------------


def test_add_list_remove_sync(store):
    added = store.add_sync(SERVER, BLOCK, "192.0.2.0/24", by="root", note="spam run")
    assert (added.existed, added.replaced) == (False, False)
    assert added.entry.added == 1_000_000 and added.entry.by == "root"
    assert store.add_sync(SERVER, BLOCK, "192.0.2.0/24").existed
    moved = store.add_sync(SERVER, ALLOW, "192.0.2.0/24")
    assert moved.replaced and not moved.existed
    store.add_sync("Example.ORG", BLOCK, "spam.example")
    store.add_sync("Alice@example.org", ALLOW, "boss@spam.example")
    listing = [(e.scope, e.kind, e.entry.text) for e in store.entries()]
    assert listing == [
        ("*", ALLOW, "192.0.2.0/24"),
        ("alice@example.org", ALLOW, "boss@spam.example"),
        ("example.org", BLOCK, "spam.example"),
    ]
    assert [e.entry.text for e in store.entries("example.org")] == ["spam.example"]
    assert store.remove_sync(SERVER, "192.0.2.0/24") == [ALLOW]
    assert store.remove_sync(SERVER, "192.0.2.0/24") == []
    assert [e.scope for e in store.entries(SERVER)] == []


def test_bad_scope_and_entry_refused(store):
    with pytest.raises(BadEntry, match="not a domain"):
        store.add_sync("exa mple.org", BLOCK, "spam.example")
    with pytest.raises(BadEntry, match="host bits"):
        store.add_sync(SERVER, BLOCK, "192.0.2.1/24")


@pytest_twisted.ensureDeferred
async def test_async_writes_and_no_stale_cache(store):
    """The server's writes go through db.write; a change applies to the next RCPT."""
    assert verdict(store) is ACCEPT
    added = await store.add(SERVER, BLOCK, "sender.example")
    assert added.entry.entry.type == "domain"
    assert blocked(verdict(store))
    assert await store.remove(SERVER, "sender.example") == [BLOCK]
    assert verdict(store) is ACCEPT


# -- matching every entry type ----------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "client", "sender", "matches"),
    [
        ("someone@sender.example", "192.0.2.7", "someone@sender.example", True),
        ("someone@sender.example", "192.0.2.7", "Someone+tag@SENDER.example", True),
        ("someone@sender.example", "192.0.2.7", "other@sender.example", False),
        ("sender.example", "192.0.2.7", "x@sender.example", True),
        ("sender.example", "192.0.2.7", "x@mail.sender.example", False),
        (".sender.example", "192.0.2.7", "x@mail.sender.example", True),
        (".sender.example", "192.0.2.7", "x@a.b.sender.example", True),
        (".sender.example", "192.0.2.7", "x@sender.example", False),
        ("192.0.2.7", "192.0.2.7", "x@a.example", True),
        ("192.0.2.7", "192.0.2.8", "x@a.example", False),
        ("192.0.2.0/24", "192.0.2.200", "x@a.example", True),
        ("192.0.2.0/24", "192.0.3.1", "x@a.example", False),
        ("192.0.2.0/24", "::ffff:192.0.2.9", "x@a.example", True),
        ("2001:db8::/32", "2001:db8:ffff::1", "x@a.example", True),
        ("2001:db8::/32", "2001:db9::1", "x@a.example", False),
        ("2001:db8::5", "2001:db8::5", None, True),
        ("sender.example", "192.0.2.7", None, False),
    ],
)
@pytest.mark.parametrize("scope", [SERVER, "example.org", "alice@example.org"])
def test_each_entry_type_in_each_scope(store, scope, entry, client, sender, matches):
    store.add_sync(scope, BLOCK, entry)
    v = verdict(store, client=client, sender=sender)
    assert blocked(v) is matches
    if matches:
        whose = {SERVER: "this server's", "example.org": "the recipient domain's"}.get(
            scope, "the recipient's")
        on = "Client" if parse_entry(entry).type == "network" else "Sender"
        assert v.text == f"{on} blocked by {whose} block list"
    store.remove_sync(scope, entry)
    store.add_sync(scope, ALLOW, entry)
    assert allowed(verdict(store, client=client, sender=sender)) is matches


def test_user_scope_covers_subaddresses(store):
    """alice's list applies to alice+shop@; alice+shop's own list comes first."""
    store.add_sync("alice@example.org", BLOCK, "sender.example")
    assert blocked(verdict(store, rcpt=parse_address("alice+shop@example.org")))
    store.add_sync("alice+shop@example.org", ALLOW, "sender.example")
    assert allowed(verdict(store, rcpt=parse_address("alice+shop@example.org")))
    assert blocked(verdict(store))
    assert verdict(store, rcpt=parse_address("bob@example.org")) is ACCEPT


def test_domain_scope_is_the_recipients_domain(store):
    store.add_sync("example.org", BLOCK, "192.0.2.0/24")
    assert blocked(verdict(store))
    assert verdict(store, rcpt=parse_address("carol@other.example")) is ACCEPT


# -- precedence -------------------------------------------------------------------------


def test_more_specific_scope_wins(store):
    """user > domain > server, whichever way round the allow and block are."""
    store.add_sync(SERVER, BLOCK, "192.0.2.0/24")
    store.add_sync("alice@example.org", ALLOW, "someone@sender.example")
    v = verdict(store)
    assert allowed(v) and "alice@example.org allow list" in v.reason
    assert blocked(verdict(store, rcpt=parse_address("bob@example.org")))

    store.add_sync("example.org", ALLOW, "192.0.2.7")
    assert allowed(verdict(store, rcpt=parse_address("bob@example.org")))
    store.add_sync("alice@example.org", BLOCK, "sender.example")  # same scope: the
    v = verdict(store)  # address allow is more specific than the domain block
    assert allowed(v)
    store.remove_sync("alice@example.org", "someone@sender.example")
    v = verdict(store)
    assert blocked(v) and v.text == "Sender blocked by the recipient's block list"


def test_server_block_overridden_by_domain_allow_and_domain_block_beats_server_allow(store):
    store.add_sync(SERVER, ALLOW, "sender.example")
    store.add_sync("example.org", BLOCK, "192.0.2.7")
    v = verdict(store)
    assert blocked(v) and v.text == "Client blocked by the recipient domain's block list"
    assert allowed(verdict(store, rcpt=parse_address("x@other.example")))


def test_most_specific_entry_wins_inside_a_scope(store):
    """address > domain > nearest .parent > longest network prefix."""
    me, other = "someone@mail.sender.example", "other@mail.sender.example"
    store.add_sync(SERVER, BLOCK, ".example")
    store.add_sync(SERVER, ALLOW, ".sender.example")
    assert allowed(verdict(store, sender=me))  # the nearest parent pattern
    store.add_sync(SERVER, BLOCK, "mail.sender.example")
    assert blocked(verdict(store, sender=me))  # the exact domain
    store.add_sync(SERVER, ALLOW, me)
    assert allowed(verdict(store, sender=me))  # the address
    assert blocked(verdict(store, sender=other))
    # a sender entry outranks a network entry of the same scope
    store.add_sync(SERVER, ALLOW, "192.0.2.7")
    assert blocked(verdict(store, sender=other))
    # networks: the longest prefix wins
    store.add_sync(SERVER, BLOCK, "198.51.100.0/24")
    store.add_sync(SERVER, ALLOW, "198.51.100.0/28")
    assert allowed(verdict(store, client="198.51.100.9", sender=None))
    assert blocked(verdict(store, client="198.51.100.99", sender=None))


def test_block_wins_a_tie(db, store):
    """Adding one kind removes the other, but an index holding both still blocks."""
    store.add_sync(SERVER, ALLOW, "sender.example")
    db.write_sync(lambda txn: txn.put(b"filter_lists", b"*\0block\0sender.example", b"{}"))
    assert blocked(verdict(store))


def test_prefix_record_follows_the_networks(db, store):
    """The record of listed prefix lengths is rewritten with every network change."""
    store.add_sync(SERVER, BLOCK, "192.0.2.0/24")
    store.add_sync(SERVER, BLOCK, "192.0.0.0/16")
    store.add_sync(SERVER, ALLOW, "2001:db8::/48")
    with db.read() as txn:
        assert txn.get_json(b"filter_lists", b"*\0=\0prefixes") == {"4": [16, 24], "6": [48]}
    store.remove_sync(SERVER, "192.0.0.0/16")
    assert blocked(verdict(store, client="192.0.2.1"))
    assert verdict(store, client="192.0.9.1") is ACCEPT
    store.remove_sync(SERVER, "192.0.2.0/24")
    store.remove_sync(SERVER, "2001:db8::/48")
    with db.read() as txn:
        assert txn.get(b"filter_lists", b"*\0=\0prefixes") is None
    assert store.entries() == []


# -- phases -----------------------------------------------------------------------------


def test_allow_is_given_early_and_block_only_at_rcpt(store):
    check = ListCheck(store)
    assert verifyObject(ICheck, check)
    assert check.name == "lists" and check.honours_allow_list is False
    store.add_sync(SERVER, ALLOW, "192.0.2.7")
    session = check.session(Peer("192.0.2.7"))
    assert verifyObject(ICheckSession, session)
    assert allowed(session.connect())
    assert session.helo("mx.sender.example") is ACCEPT

    store.add_sync(SERVER, BLOCK, "198.51.100.0/24")
    store.add_sync(SERVER, ALLOW, "friend@sender.example")
    session = check.session(Peer("198.51.100.4"))
    assert session.connect() is ACCEPT  # a user's list may still allow it
    friend = Envelope(parse_address("friend@sender.example"))
    assert allowed(session.sender(friend))
    stranger = Envelope(parse_address("x@sender.example"))
    assert session.sender(stranger) is ACCEPT
    v = session.recipient(stranger, ALICE)
    assert blocked(v) and v.text == "Client blocked by this server's block list"
    assert v.rule == "BLOCK_LIST" and v.score > 0 and "198.51.100.0/24" in v.reason
    assert session.body(stranger, (ALICE,), b"x") is ACCEPT
