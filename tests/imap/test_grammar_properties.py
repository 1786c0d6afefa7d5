"""Properties of the IMAP command grammar (``mailserver.imap.grammar`` and the ``parse_*``
family modules) on generated commands.

Whatever the bytes, ``parse_command`` gives a Command or a BadCommand (its documented
result; it never raises) and the reader gives its four event types; commands built from a
model parse to exactly that model; a sequence set's text round-trips; a stream of commands
with literals gives one Command per command and one continuation per synchronizing literal.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap.grammar import (
    BadCommand,
    Command,
    CommandReader,
    ContinuationNeeded,
    parse_command,
)
from mailserver.imap.sequence import SequenceSet
from tests.strategies import imap as ist

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.one_of(ist.near_grammar_commands(), st.binary(max_size=120)), st.booleans())
def test_any_command_is_a_command_or_bad(line, utf8):
    """parse_command returns Command or BadCommand for any bytes; a BadCommand's reason is one
    line of text the client can be shown."""
    event = parse_command(line, utf8=utf8)
    assert isinstance(event, Command | BadCommand)
    if isinstance(event, BadCommand):
        assert event.reason and "\r" not in event.reason and "\n" not in event.reason


@_SETTINGS
@given(ist.sequence_sets())
def test_sequence_sets_round_trip(drawn):
    """A sequence set parses to its model, and its text parses back to the same set."""
    text, expected = drawn
    parsed = SequenceSet.parse(text)
    assert parsed == expected
    assert SequenceSet.parse(str(parsed)) == parsed


@_SETTINGS
@given(ist.sequence_sets(), st.integers(0, 30))
def test_normalized_names_the_same_numbers(drawn, star):
    """normalized() is idempotent and names the same numbers in 1..* whatever * is."""
    _, parsed = drawn
    if parsed.saved:
        return
    normal = parsed.normalized()
    assert normal.normalized() == normal
    assert list(normal.iter(star)) == list(parsed.iter(star))


@_SETTINGS
@given(ist.store_commands())
def test_store_commands_parse_to_their_model(drawn):
    """STORE / UID STORE in any case, with any mode, SILENT and UNCHANGEDSINCE, parses to the
    Store it was built from."""
    line, name, expected = drawn
    assert parse_command(line) == Command(line.split(b" ")[0].decode(), name, expected)


@_SETTINGS
@given(ist.fetch_commands())
def test_fetch_commands_parse(drawn):
    """FETCH with a macro or an attribute list parses; a macro or a list of simple attributes
    gives exactly the expected items."""
    line, name, expected = drawn
    event = parse_command(line)
    assert isinstance(event, Command) and event.name == name, event
    if expected is not None:
        assert event.args == expected


@_SETTINGS
@given(ist.select_commands())
def test_select_names_round_trip(drawn):
    """A mailbox name encoded for either kind of client (modified UTF-7 or UTF-8, atom,
    quoted or literal) comes back from SELECT/EXAMINE as the same name."""
    line, utf8, expected = drawn
    event = parse_command(line, utf8=utf8)  # a literal's octets are in place, as assembled
    assert isinstance(event, Command) and event.args == expected, event


@_SETTINGS
@given(ist.status_commands())
def test_status_commands_parse_to_their_model(drawn):
    """STATUS with items in any case parses to the mailbox and the items, duplicates dropped."""
    line, utf8, expected = drawn
    event = parse_command(line, utf8=utf8)
    assert isinstance(event, Command) and event.args == expected, event


@_SETTINGS
@given(ist.search_keys(), st.booleans())
def test_valid_search_keys_parse(key, uid):
    """Every search-key the grammar allows (nested NOT, OR and lists included) parses."""
    name = "UID SEARCH" if uid else "SEARCH"
    event = parse_command(f"S1 {name} {key}".encode())
    assert isinstance(event, Command) and event.name == name, (key, event)


@_SETTINGS
@given(ist.command_streams(), st.lists(st.integers(0, 300), max_size=6))
def test_literal_streams_give_one_command_each(drawn, cuts):
    """LOGIN commands whose strings go quoted or as {n} / {n+} literals give one Command each
    and one ContinuationNeeded per synchronizing literal, however the bytes are split."""
    data, commands, sync = drawn
    reader = CommandReader()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    events = []
    for start, end in zip(points, points[1:]):
        events += reader.feed(data[start:end])
    assert sum(isinstance(e, ContinuationNeeded) for e in events) == sync
    finished = [e for e in events if not isinstance(e, ContinuationNeeded)]
    assert len(finished) == commands
    assert all(isinstance(e, Command) and e.name == "LOGIN" for e in finished), finished
