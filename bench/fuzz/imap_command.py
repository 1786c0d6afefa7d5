"""One assembled IMAP command (``mailserver.imap.grammar.parse_command``): every command
family's argument parser (LOGIN, SELECT, LIST, STATUS, APPEND, SEARCH, FETCH, STORE, COPY...).

The first input octet chooses UTF-8 mode. Documented outcome: a ``Command`` or a
``BadCommand``, never an exception; a BadCommand's reason is one line of text.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check
from mailserver.imap.grammar import BadCommand, Command, parse_command

SEEDS = (
    b"\x00A1 FETCH 1:4,7 (UID FLAGS BODY.PEEK[1.2.MIME]<0.100> BINARY[2] MODSEQ)",
    b"\x00A2 UID SEARCH RETURN (MIN MAX SAVE) CHARSET UTF-8 (OR FROM x TO y) SINCE 1-Feb-2024",
    b"\x01A3 SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338 LARGER 10 UID $",
    b"\x00A4 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE)",
    b"\x00A5 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
    b"\x00A6 APPEND Drafts (\\Draft) \"17-Jul-1996 02:44:25 -0700\" {3}\r\nabc",
    b"\x00A7 RENAME \"Old &AOQ-\" New",
    b"\x01A8 ID (\"name\" \"client\" \"version\" NIL)",
    b"\x00A9 SETQUOTA \"\" (STORAGE 512)",
    b"\x00B1 UID MOVE 1:* Archive",
    b"\x00B2 ENABLE CONDSTORE UTF8=ACCEPT",
    b"\x00B3 STORE $ -FLAGS (\\Seen $Junk)",
)


def one_input(data: bytes) -> None:
    if not data:
        return
    event = parse_command(data[1:], utf8=bool(data[0] & 1))
    check(isinstance(event, Command | BadCommand), f"unexpected result {event!r}")
    if isinstance(event, BadCommand):
        check("\r" not in event.reason and "\n" not in event.reason, "line break in reason")


TARGET = Target("imap_command", one_input, SEEDS)
