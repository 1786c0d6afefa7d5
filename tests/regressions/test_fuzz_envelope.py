"""Found by the fuzz job (``python -m bench.fuzz``, harness ``envelope``): a second group
that starts before the first one's ``;`` gave two ENVELOPE group-start entries and one end
entry, a list an IMAP client cannot pair up (RFC 3501 §7.4.2)."""

from __future__ import annotations

from mailserver.imap import response
from mailserver.message.envelope import build_envelope, parse_address_list

#: The input the fuzzer wrote (crash-ae192d95...), as the From/To field value.
CRASH = b'u\x83ndisclosed-recipients:;, tts:;, team:eam: a@x, "b" <b@y>; c@z'

END = [None, None, None, None]


def test_a_group_inside_a_group_closes_the_first():
    """``a: b: x@y;`` is two groups: the second start entry is preceded by the first's end."""
    assert parse_address_list(b"a: b: x@y;") == [
        [None, None, "a", None],
        END,
        [None, None, "b", None],
        [None, None, "x", "y"],
        END,
    ]


def test_fuzzer_input_pairs_every_group():
    """Every group start in the fuzzer's input has its end entry, in order, and the ENVELOPE
    serialises."""
    entries = parse_address_list(CRASH)
    starts = [i for i, e in enumerate(entries) if e[3] is None and e[2] is not None]
    ends = [i for i, e in enumerate(entries) if e == END]
    assert len(starts) == len(ends) == 4
    assert all(start < end for start, end in zip(starts, ends))
    assert all(end < start for end, start in zip(ends, starts[1:]))
    assert entries[-1] == [None, None, "c", "z"]
    envelope = build_envelope([("To", CRASH)])
    assert envelope["to"] == entries
    assert response.envelope(envelope).count(b"(NIL NIL NIL NIL)") == 4
