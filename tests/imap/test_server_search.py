"""SEARCH and UID SEARCH: common keys, ESEARCH results, SAVE and $, against both providers."""

from __future__ import annotations

import io
import time

import pytest_twisted

from tests.imap.conftest import in_thread, message

DAY = 86400
BASE64_BODY = (
    b"From: Dave <dave@example.com>\r\nTo: bob@example.org\r\nSubject: encoded\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
    b"X-Tag: Important stuff\r\n\r\n" + b"bWVldGluZyBhdCBub29uIGluIHRoZSBjYWbDqQ==\r\n"
)


async def populate(server) -> None:
    inbox = server.folder()
    now = time.time()
    await inbox.append(io.BytesIO(message("Lunch plans", "Pizza?\r\n")), [], now - 10 * DAY)
    await inbox.append(
        io.BytesIO(message("Report", "Numbers attached.\r\n" + "x" * 2000 + "\r\n")),
        ["\\Seen", "\\Flagged"],
        now - 2 * DAY,
    )
    await inbox.append(io.BytesIO(BASE64_BODY), ["\\Seen", "$Work"], now)


@pytest_twisted.ensureDeferred
async def test_search_keys(imap_server):
    """Flags, keywords, sizes, dates, envelope fields, headers and decoded body text."""
    await populate(imap_server)
    today = time.strftime("%d-%b-%Y", time.gmtime())
    five_days_ago = time.strftime("%d-%b-%Y", time.gmtime(time.time() - 5 * DAY))
    cases = {
        "ALL": "1 2 3",
        "SEEN": "2 3",
        "UNSEEN": "1",
        "FLAGGED UNDELETED": "2",
        "KEYWORD $work": "3",
        "UNKEYWORD $Work": "1 2",
        "LARGER 1000": "2",
        "SMALLER 1000": "1 3",
        f"SINCE {five_days_ago}": "2 3",
        f"BEFORE {five_days_ago}": "1",
        f"ON {today}": "3",
        'SUBJECT "lunch"': "1",
        "FROM dave@example.com": "3",
        "FROM carol": "1 2",
        "TO bob": "3",
        "HEADER X-Tag important": "3",
        'HEADER X-Tag ""': "3",
        "BODY {5+}\r\ncafé": "3",
        "BODY pizza": "1",
        "TEXT Report": "2",
        "OR SUBJECT lunch SUBJECT report": "1 2",
        "NOT SEEN": "1",
        "2:3 SEEN": "2 3",
        "(1:* NOT 3) UID 2:*": "2",
        "NEW": "",
    }
    uid_cases = {"UID 2:*": "2 3", "1,3": "1 3", "*": "3"}

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        for n, (program, expected) in enumerate(cases.items()):
            found = client.command(f"a{n}", f"SEARCH CHARSET UTF-8 {program}")
            assert found == [f"* SEARCH {expected}".rstrip(), f"a{n} OK SEARCH completed"], program
        for n, (program, expected) in enumerate(uid_cases.items()):
            found = client.command(f"u{n}", f"UID SEARCH {program}")
            assert found == [f"* SEARCH {expected}", f"u{n} OK UID SEARCH completed"], program
        assert client.command("b", "SEARCH CHARSET X-UNKNOWN ALL") == [
            "b NO [BADCHARSET] Unsupported charset X-UNKNOWN"
        ]
        assert client.command("d", "SEARCH FOO")[-1].startswith("d BAD ")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_esearch_and_saved_results(imap_server):
    """RETURN (MIN MAX COUNT ALL) gives ESEARCH; SAVE stores the result for "$" (RFC 5182);
    an IMAP4rev2 client gets ESEARCH for a plain SEARCH."""
    await populate(imap_server)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        assert client.command("a", "SEARCH RETURN (MIN MAX COUNT ALL) SEEN") == [
            '* ESEARCH (TAG "a") MIN 2 MAX 3 ALL 2:3 COUNT 2',
            "a OK SEARCH completed",
        ]
        assert client.command("b", "UID SEARCH RETURN () UNSEEN") == [
            '* ESEARCH (TAG "b") UID ALL 1',
            "b OK UID SEARCH completed",
        ]
        assert client.command("c", "SEARCH RETURN (COUNT MIN) DELETED") == [
            '* ESEARCH (TAG "c") COUNT 0',
            "c OK SEARCH completed",
        ]
        assert client.command("d", "SEARCH RETURN (SAVE) SEEN") == ["d OK SEARCH completed"]
        assert client.command("e", "FETCH $ (UID)") == [
            "* 2 FETCH (UID 2)",
            "* 3 FETCH (UID 3)",
            "e OK FETCH completed",
        ]
        assert client.command("f", "SEARCH $ FLAGGED") == ["* SEARCH 2", "f OK SEARCH completed"]
        rev2 = imap_server.raw()
        rev2.login()
        rev2.command("g", "ENABLE IMAP4rev2")
        rev2.command("h", "EXAMINE INBOX")
        assert rev2.command("i", "SEARCH UNSEEN") == [
            '* ESEARCH (TAG "i") ALL 1',
            "i OK SEARCH completed",
        ]
        client.close()
        rev2.close()

    await in_thread(dialog)
