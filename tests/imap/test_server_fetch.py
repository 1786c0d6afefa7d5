"""APPEND and FETCH: byte-exact round trips, sections, BINARY, metadata and implicit \\Seen,
against both store providers."""

from __future__ import annotations

import imaplib

import pytest_twisted

from tests.imap.conftest import in_thread, message

MULTIPART = (
    b"From: Carol <carol@example.net>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Date: Tue, 01 Jul 2025 10:00:00 +0200\r\n"
    b"Message-ID: <m1@example.net>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"caf\xc3\xa9 body\r\n"
    b"--XX\r\n"
    b'Content-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQ=\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
)


def raw_command(client, tag: str, text: str) -> list[bytes]:
    client.send(f"{tag} {text}\r\n")
    return client.until_bytes(tag)


def lit(data: bytes, binary: bool = False) -> bytes:
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


@pytest_twisted.ensureDeferred
async def test_append_then_fetch_is_byte_exact(imap_server):
    """APPEND answers OK [APPENDUID uidvalidity uid] after the store has the message; FETCH
    BODY[] gives back exactly the octets appended (8-bit text included)."""
    data = message("Round trip", "Grüße, 8-bit body\r\n.leading dot\r\n\r\nend\r\n")
    uidvalidity = imap_server.folder().info().uidvalidity

    def session():
        client = imap_server.imaplib()
        status, detail = client.append("INBOX", "(\\Flagged $Work)", None, data)
        assert status == "OK"
        assert detail[0].decode().startswith(f"[APPENDUID {uidvalidity} 1]")
        client.select("INBOX")
        status, fetched = client.uid("FETCH", "1", "(BODY.PEEK[] RFC822.SIZE FLAGS)")
        assert status == "OK"
        head, body = fetched[0]
        assert head == b"1 (UID 1 BODY[] {%d}" % len(data)
        assert body == data
        assert fetched[1] == b" RFC822.SIZE %d FLAGS (\\Flagged $Work))" % len(data)
        client.logout()

    await in_thread(session)
    assert imap_server.folder().message(1).open().read() == data


@pytest_twisted.ensureDeferred
async def test_append_errors(imap_server):
    """APPEND to a missing mailbox is NO [TRYCREATE]; an empty message is refused."""

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "APPEND Nowhere {3+}\r\nabc") == [
            "a NO [TRYCREATE] The target mailbox does not exist"
        ]
        assert client.command("b", "APPEND INBOX {0+}\r\n") == [
            "b NO [CANNOT] An empty message cannot be appended"
        ]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_fetch_sections(imap_server):
    """Sections by part number, MIME headers, attached messages, HEADER.FIELDS(.NOT),
    TEXT, partial fetches, a missing part, and BINARY decoding (RFC 9051 §6.4.5, RFC 3516)."""
    await imap_server.deliver(MULTIPART)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "EXAMINE INBOX")
        items = [
            ("BODY.PEEK[1]", b"BODY[1] " + lit(b"caf\xc3\xa9 body")),
            (
                "BODY.PEEK[1.MIME]",
                b"BODY[1.MIME] "
                + lit(
                    b"Content-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                ),
            ),
            ("BODY.PEEK[2]", b"BODY[2] " + lit(b"AAECAwQ=")),
            ("BINARY.PEEK[2]", b"BINARY[2] " + lit(b"\x00\x01\x02\x03\x04", binary=True)),
            ("BINARY.SIZE[2]", b"BINARY.SIZE[2] 5"),
            ("BINARY.PEEK[1]", b"BINARY[1] " + lit(b"caf\xc3\xa9 body")),
            ("BODY.PEEK[3]", b"BODY[3] " + lit(b"Subject: inner\r\n\r\ninner body")),
            ("BODY.PEEK[3.HEADER]", b"BODY[3.HEADER] " + lit(b"Subject: inner\r\n\r\n")),
            ("BODY.PEEK[3.TEXT]", b"BODY[3.TEXT] " + lit(b"inner body")),
            ("BODY.PEEK[3.1]", b"BODY[3.1] " + lit(b"inner body")),
            ("BODY.PEEK[4]", b"BODY[4] NIL"),
            ("BODY.PEEK[2.1]", b"BODY[2.1] NIL"),
            (
                "BODY.PEEK[HEADER.FIELDS (subject TO)]",
                b"BODY[HEADER.FIELDS (SUBJECT TO)] "
                + lit(b"To: alice@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"),
            ),
            (
                "BODY.PEEK[HEADER.FIELDS.NOT (From To Subject Date Message-ID)]",
                b"BODY[HEADER.FIELDS.NOT (FROM TO SUBJECT DATE MESSAGE-ID)] "
                + lit(b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'),
            ),
            ("BODY.PEEK[TEXT]<0.8>", b"BODY[TEXT]<0> " + lit(b"preamble")),
            ("BODY.PEEK[]<6.5>", b"BODY[]<6> " + lit(b"Carol")),
            ("BODY.PEEK[]<100000.5>", b"BODY[]<100000> " + lit(b"")),
            ("RFC822.HEADER", b"RFC822.HEADER " + lit(MULTIPART[: MULTIPART.index(b"preamble")])),
        ]
        for index, (item, expected) in enumerate(items):
            lines = raw_command(client, f"f{index}", f"FETCH 1 ({item})")
            assert lines == [b"* 1 FETCH (" + expected + b")", b"f%d OK FETCH completed" % index]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_fetch_metadata(imap_server):
    """FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY and BODYSTRUCTURE from the
    index; UID FETCH always includes the UID; the ALL macro expands."""
    await imap_server.deliver(MULTIPART)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        line = client.command("a", "UID FETCH 1 (ENVELOPE RFC822.SIZE)")[0]
        assert line.startswith('* 1 FETCH (UID 1 ENVELOPE ("Tue, 01 Jul 2025 10:00:00 +0200" ')
        assert '"=?utf-8?b?Y2Fmw6k=?=" (("Carol" NIL "carol" "example.net"))' in line
        assert '((NIL NIL "alice" "example.org")) NIL NIL NIL "<m1@example.net>")' in line
        assert line.endswith(f" RFC822.SIZE {len(MULTIPART)})")
        line = client.command("b", "FETCH 1 (BODYSTRUCTURE)")[0]
        assert line.startswith(
            '* 1 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 10 1 '
        )
        assert '("APPLICATION" "OCTET-STREAM" ("NAME" "a.bin") NIL NIL "BASE64" 8 ' in line
        assert ' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL))' in line
        line = client.command("c", "FETCH 1 BODY")[0]
        assert line.startswith(
            '* 1 FETCH (BODY (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "8BIT" 10 1)'
        )
        line = client.command("d", "FETCH 1 ALL")[0]
        assert line.startswith('* 1 FETCH (FLAGS () INTERNALDATE "')
        assert f"RFC822.SIZE {len(MULTIPART)} ENVELOPE (" in line
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_fetch_without_peek_sets_seen(imap_server):
    """BODY[] and RFC822.TEXT set \\Seen and report the new FLAGS with the data; BODY.PEEK
    does not; in a read-only (EXAMINE) mailbox nothing is set."""
    data = message()
    await imap_server.deliver(data)
    await imap_server.deliver(data)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("x", "EXAMINE INBOX")
        assert raw_command(client, "a", "FETCH 1 (BODY[TEXT])")[0] == (
            b"* 1 FETCH (BODY[TEXT] " + lit(b"Hi there.\r\n") + b")"
        )
        client.command("y", "SELECT INBOX")
        assert raw_command(client, "c", "FETCH 1 (BODY.PEEK[TEXT])")[0] == (
            b"* 1 FETCH (BODY[TEXT] " + lit(b"Hi there.\r\n") + b")"
        )
        lines = raw_command(client, "d", "FETCH 1:2 (UID BODY[TEXT])")
        assert lines[0] == (
            b"* 1 FETCH (UID 1 BODY[TEXT] " + lit(b"Hi there.\r\n") + b" FLAGS (\\Seen))"
        )
        assert lines[1].startswith(b"* 2 FETCH (UID 2 BODY[TEXT] ")
        assert client.command("e", "FETCH 1:2 FLAGS")[:2] == [
            "* 1 FETCH (FLAGS (\\Seen))",
            "* 2 FETCH (FLAGS (\\Seen))",
        ]
        client.close()

    await in_thread(dialog)
    assert [f.flags for f in imap_server.folder().flags()] == [frozenset({"\\Seen"})] * 2


@pytest_twisted.ensureDeferred
async def test_imaplib_fetch_and_append_literal_plus(memory_imap):
    """imaplib's usual calls work: fetch by sequence number and RFC822."""
    data = message("Hello imaplib")

    def session():
        client = memory_imap.imaplib()
        client.append("INBOX", None, imaplib.Time2Internaldate(1_700_000_000), data)
        client.select("INBOX")
        status, fetched = client.fetch("1", "(RFC822 INTERNALDATE)")
        assert status == "OK" and fetched[0][1] == data
        assert b'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in fetched[0][0] + fetched[1]
        client.logout()

    await in_thread(session)
