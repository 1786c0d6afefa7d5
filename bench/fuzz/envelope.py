"""RFC 5322 address lists and the IMAP ENVELOPE (``mailserver.message.envelope``), down to
the FETCH ENVELOPE bytes (``mailserver.imap.response.envelope``).

Documented outcome: never raises. Invariants: entries have four slots; group start and end
entries pair up; the ENVELOPE is JSON-serialisable (it is cached in the index) and
serialises for both kinds of client.
"""

from __future__ import annotations

import json

from bench.fuzz.harness import Target, check
from mailserver.imap import response
from mailserver.message.envelope import build_envelope, parse_address_list
from mailserver.message.headers import parse_headers

SEEDS = (
    b'"Doe, John" <john@example.org>, jane@example.org (Jane), <@route,@r2:x@y>',
    b"undisclosed-recipients:;, team: a@x, \"b\" <b@y>; c@z",
    b"=?utf-8?q?J=C3=B6rg?= <j@example.org>, \xc3\xa9@\xc3\xa9.example",
    b"a@[192.0.2.1], (comment (nested) \\) still) b@c, \"unterminated",
)


def one_input(data: bytes) -> None:
    depth = 0
    for entry in parse_address_list(data):
        check(len(entry) == 4, f"entry {entry!r} is not four slots")
        if entry[3] is None and entry[2] is not None:
            depth += 1
        elif entry == [None, None, None, None]:
            depth -= 1
        check(depth in (0, 1), "group start and end entries do not pair")
    check(depth == 0, "unterminated group entry")
    fields = [(name, data) for name in ("From", "To", "Cc", "Sender", "Subject", "Message-ID")]
    for env in (build_envelope(fields), build_envelope(parse_headers(data))):
        check(json.loads(json.dumps(env)) == env, "ENVELOPE not JSON-serialisable as is")
        for utf8 in (False, True):
            wire = response.envelope(env, utf8=utf8)
            check(wire.startswith(b"(") and wire.endswith(b")"), "ENVELOPE not a list")


TARGET = Target("envelope", one_input, SEEDS)
