"""The header index (issue 6): FETCH of header items and SEARCH on SUBJECT/FROM/TO/CC/BCC,
HEADER, BODY and TEXT (alone, ANDed, ORed, negated) over the maildir store (which keeps header
blocks, search texts and text leaves in its index) send exactly what the in-memory store
(which keeps none, so the files and parse results are read) sends, for varied real-world and
broken messages, including ones whose block is not kept."""

from __future__ import annotations

import io
import random

import pytest
import pytest_twisted

from bench.imap_bench import generate
from mailserver.store import header_index
from tests.imap.conftest import in_thread

HUGE = b"X-Big: " + b"y" * (header_index.HEADER_LIMIT + 10) + b"\r\n"
EDGE_CASES = [
    b"From: =?utf-8?q?J=C3=BCrgen_Stra=C3=9Fe?= <j@example.de>\r\n"
    b'To: Undisclosed:;, "Quoted, Name" <q@example.org>\r\n'
    b"Cc: STRASSE <s@example.org>\r\nBcc: hidden@example.org\r\n"
    b"Subject: =?iso-8859-1?q?Gr=FC=DFe?= aus K\xc3\x96LN\r\n \tand a fold\r\n\r\nbody\r\n",
    b"From: lf@example.org\nSubject: LF only\nTo: a@example.org\n\nbody\n",
    b"Subject: no blank line and no body\r\nFrom: x@example.org",
    b"Subject: \xe9t\xe9 8-bit\r\nFrom: \xc3\xa9milie <e@example.org>\r\n\r\nbody\r\n",
    b"\r\nHeaderless: this is the body\r\n",
    HUGE + b"Subject: big header\r\nFrom: big@example.org\r\n\r\nbody\r\n",
    b"subject : spaced name\r\nFROM:upper@example.org\r\nX-Tag: Quarterly figures\r\n\r\nx\r\n",
]
COMMANDS = [
    "FETCH 1:* BODY.PEEK[HEADER.FIELDS (From To Subject Date)]",
    "FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])",
    "FETCH 1:* RFC822.HEADER",
    "FETCH 2:* (BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)] UID)",
    "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT X-TAG)]<3.20> BODY.PEEK[HEADER]<0.7>)",
    "FETCH 3,5:7 BODY[HEADER.FIELDS (FROM)]",
    "UID SEARCH SUBJECT quarterly",
    "UID SEARCH CHARSET UTF-8 SUBJECT {7+}\r\nGRÜSSE",  # casefold: ß is ss
    "UID SEARCH CHARSET UTF-8 SUBJECT {7+}\r\ngrüße",
    "SEARCH FROM example",
    "SEARCH FROM STRASSE",
    "SEARCH CC strasse",
    "SEARCH TO undisclosed",
    "SEARCH BCC hidden",
    'SEARCH SUBJECT ""',
    "SEARCH OR SUBJECT LF FROM big",
    "SEARCH SUBJECT re FROM example TO alice",
    "SEARCH NOT SUBJECT quarterly",
    "SEARCH SUBJECT the SEEN",
    "SEARCH HEADER X-Tag quarterly",
    "SEARCH HEADER Subject fold",
    'SEARCH HEADER X-Big ""',
    "SEARCH SUBJECT policy HEADER Message-ID example",
    "SEARCH SUBJECT re BODY the",
    "SEARCH (FROM example (SUBJECT the)) TEXT system",
    "SEARCH OR SUBJECT policy BODY the",
    "SEARCH NOT SUBJECT re BODY the UNSEEN",
    "SEARCH BODY zeppelin",
    "SEARCH TEXT quarterly",
]


async def _fill(server, messages: list[tuple[bytes, list[str]]]) -> None:
    inbox = server.folder()
    for data, flags in messages:
        await inbox.append(io.BytesIO(data), flags, 1_700_000_000.0)


def _dialog(server, commands: list[str]) -> list[list[bytes]]:
    client = server.raw()
    client.login()
    client.command("S", "SELECT INBOX")
    out = []
    for number, command in enumerate(commands):
        client.send(f"C{number} {command}\r\n")
        out.append(client.until_bytes(f"C{number}"))
    client.close()
    return out


@pytest.fixture
def messages() -> list[tuple[bytes, list[str]]]:
    rng = random.Random(6)
    generated = [generate(random.Random(n), n, 1_700_000_000.0 + n) for n in range(60)]
    every = generated + EDGE_CASES
    rng.shuffle(every)
    return [(data, rng.choice([[], ["\\Seen"], ["\\Seen", "$Work"]])) for data in every]


@pytest_twisted.ensureDeferred
async def test_header_items_and_searches_equal_the_file_reading_ones(
    memory_imap, maildir_imap, messages
):
    """Every header FETCH and envelope/HEADER SEARCH gets the same bytes from both stores."""
    for server in (memory_imap, maildir_imap):
        await _fill(server, messages)
    kept = dict(maildir_imap.folder().header_blocks(range(1, len(messages) + 1)))
    assert len(kept) == len(messages) - 1  # all but the huge header block
    expected = await in_thread(_dialog, memory_imap, COMMANDS)
    got = await in_thread(_dialog, maildir_imap, COMMANDS)
    for command, want, have in zip(COMMANDS, expected, got):
        assert have == want, command


def _expunged_meanwhile(server, commands: list[str]) -> list[list[bytes]]:
    """``commands`` in a session that has not yet been told of another one's expunge."""
    reader, other = server.raw(), server.raw()
    for client in (reader, other):
        client.login()
        client.command("S", "SELECT INBOX")
    other.command("D", "STORE 2,5:7 +FLAGS.SILENT (\\Deleted)")
    other.command("E", "EXPUNGE")
    other.close()
    out = []
    for number, command in enumerate(commands):
        reader.send(f"C{number} {command}\r\n")
        out.append(reader.until_bytes(f"C{number}"))
    reader.close()
    return out


@pytest_twisted.ensureDeferred
async def test_after_copy_move_and_expunge_the_answers_still_agree(
    memory_imap, maildir_imap, messages
):
    """Copies and moves carry their header block and texts, expunged messages leave none, and
    a session that has not yet been told of another one's expunge gets the same answers."""
    for server in (memory_imap, maildir_imap):
        await _fill(server, messages[:20])
    steps = [
        "COPY 1:5 Archive",
        "STORE 2,4 +FLAGS.SILENT (\\Deleted)",
        "EXPUNGE",
        "MOVE 1:3 Archive",
        "SELECT Archive",
        *COMMANDS,
    ]
    # The steps before the commands answer with ids of their own (COPYUID, MAILBOXID).
    expected = (await in_thread(_dialog, memory_imap, steps))[5:]
    got = (await in_thread(_dialog, maildir_imap, steps))[5:]
    for command, want, have in zip(COMMANDS, expected, got):
        assert have == want, command
    expected = await in_thread(_expunged_meanwhile, memory_imap, COMMANDS)
    got = await in_thread(_expunged_meanwhile, maildir_imap, COMMANDS)
    for command, want, have in zip(COMMANDS, expected, got):
        assert have == want, command
