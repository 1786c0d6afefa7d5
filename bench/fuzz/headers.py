"""The header block of a raw message (``mailserver.message.headers``): splitting, fields,
unfolding and RFC 2047 decoding.

Documented outcome: never raises. Invariants: the header block is a prefix of the data and
the body the rest; every field name is RFC 5322 ftext; a decoded value is text.
"""

from __future__ import annotations

import re

from bench.fuzz.harness import Target, check
from mailserver.message import headers

_FTEXT = re.compile(r"[\x21-\x39\x3b-\x7e]+")

SEEDS = (
    b"From: a@b\r\nSubject: =?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=\r\n folded\r\n\r\nbody",
    b"From alice Thu Jan  1 00:00:00 1970\nTo: x\n\nbody\n",
    b"Subject : =?iso-8859-1*fr?Q?=E9t=E9?=\r\nX: \xff\xfe\r\n\r\n",
    b"bogus line\r\n\tcontinued\r\nA: b\r\n",
    b"Subject: =?x-unknown?B?////?= =?utf-16?b?2D3eAA==?=\r\n\r\n",
)


def one_input(data: bytes) -> None:
    stripped = headers.strip_mbox_from(data)
    check(data.endswith(stripped), "strip_mbox_from kept other bytes")
    block, body = headers.split_message(stripped)
    check(block + body == stripped, "split_message lost bytes")
    for start in (0, len(data) // 2):
        length = headers.header_length(data, start)
        check(0 <= length <= len(data) - start, "header_length out of range")
    for name, value in headers.parse_headers(block):
        check(bool(_FTEXT.fullmatch(name)), f"invalid field name {name!r}")
        check(isinstance(headers.decode_header_value(value), str), "decoded value not text")
    check(isinstance(headers.decode_encoded_words(data.decode("latin-1")), str), "not text")


TARGET = Target("headers", one_input, SEEDS)
