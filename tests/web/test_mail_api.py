"""The mail endpoints through real HTTP (treq) over a real maildir store and LMDB index."""

from __future__ import annotations

import io
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import succeed

from mailserver.types import SEEN
from mailserver.web.api import mail
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem

from .test_render import HOSTILE_HTML

USER = "alice@example.test"
PASSWORD = "pw-alice"


class RecordingFeedback:
    """An IJunkFeedback that remembers each judgement."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[int], bool]] = []

    def judged(self, account: Any, folder: str, uids: Any, is_spam: bool) -> Any:
        self.calls.append((account.address, folder, list(uids), is_spam))
        return succeed(None)


def _message(
    subject: str,
    sender: str = "Bob <bob@example.net>",
    text: str = "hello",
    html: str | None = None,
    attachment: bytes | None = None,
) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = USER
    message["Subject"] = subject
    message["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    message["Message-ID"] = f"<{abs(hash(subject))}@example.net>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(attachment, maintype="application", subtype="octet-stream",
                               filename="blob.bin")  # fmt: skip
    return message.as_bytes()


async def _append(api: Any, folder: str, data: bytes, flags: tuple[str, ...] = ()) -> int:
    mailbox = api.storage.store.account(USER).folder(folder)
    return int(await mailbox.append(io.BytesIO(data), flags))


async def _signed_in(api: Any) -> str:
    await api.add_user(USER, PASSWORD)
    await api.storage.store.create_account(USER)
    return str(await api.login(USER, PASSWORD))


@pytest_twisted.ensureDeferred
async def test_needs_a_token(api: Any) -> None:
    """Every mail route refuses an anonymous caller with 401."""
    reply = await api.call("GET", "/folders")
    assert reply.status == 401


@pytest_twisted.ensureDeferred
async def test_folders_create_rename_delete(api: Any) -> None:
    """List with counts; create (201, 409 when it exists, 400 for a bad special use);
    rename (a "/" in a name travels as %2F); delete (204, then 404)."""
    token = await _signed_in(api)
    await _append(api, "INBOX", _message("one"))
    reply = await api.call("GET", "/folders", token=token)
    assert reply.status == 200
    folders = {f["name"]: f for f in reply.json["folders"]}
    assert folders["INBOX"]["exists"] == 1 and folders["INBOX"]["unseen"] == 1
    assert folders["Junk"]["special_use"] == "\\Junk"
    assert folders["INBOX"]["uidnext"] == 2 and folders["INBOX"]["size"] > 0

    reply = await api.call("POST", "/folders", token=token, json_body={"name": "Work/2026"})
    assert reply.status == 201, reply.body
    assert reply.json["name"] == "Work/2026" and reply.json["exists"] == 0
    again = await api.call("POST", "/folders", token=token, json_body={"name": "Work/2026"})
    assert again.status == 409
    bad = await api.call("POST", "/folders", token=token,
                         json_body={"name": "X", "special_use": "Nonsense"})  # fmt: skip
    assert bad.status == 400 and bad.json["field"] == "special_use"

    path = "/folders/" + quote("Work/2026", safe="")
    reply = await api.call("PATCH", path, token=token, json_body={"name": "Work/Old"})
    assert reply.status == 200, reply.body
    assert reply.json["name"] == "Work/Old"
    reply = await api.call("DELETE", "/folders/" + quote("Work/Old", safe=""), token=token)
    assert reply.status == 204
    reply = await api.call("DELETE", "/folders/" + quote("Work/Old", safe=""), token=token)
    assert reply.status == 404
    reply = await api.call("GET", "/folders/Nope/messages", token=token)
    assert reply.status == 404


@pytest_twisted.ensureDeferred
async def test_message_pages_newest_first(api: Any) -> None:
    """Default order pages backwards by UID with a before_uid cursor; ``date`` pages
    forwards; the other sorts page by offset."""
    token = await _signed_in(api)
    uids = []
    for n in range(7):
        uids.append(await _append(api, "INBOX", _message(f"msg {n}", text="x" * (n * 100))))
    seen: list[int] = []
    query = "?limit=3"
    while True:
        reply = await api.call("GET", "/folders/INBOX/messages" + query, token=token)
        assert reply.status == 200, reply.body
        seen += [m["uid"] for m in reply.json["messages"]]
        assert reply.json["total"] == 7
        if reply.json["next"] is None:
            break
        query = f"?limit=3&before_uid={reply.json['next']['before_uid']}"
    assert seen == list(reversed(uids))

    first = (await api.call("GET", "/folders/INBOX/messages?limit=50", token=token)).json
    summary = first["messages"][0]
    assert summary["subject"] == "msg 6"
    assert summary["from"] == [{"name": "Bob", "address": "bob@example.net"}]
    assert summary["to"] == [{"name": None, "address": USER}]
    assert summary["flags"] == [] and summary["has_attachments"] is False
    assert summary["spam"] is None

    reply = await api.call("GET", "/folders/INBOX/messages?sort=date&limit=4", token=token)
    assert [m["uid"] for m in reply.json["messages"]] == uids[:4]
    after = reply.json["next"]["after_uid"]
    reply = await api.call(
        "GET", f"/folders/INBOX/messages?sort=date&limit=4&after_uid={after}", token=token
    )
    assert [m["uid"] for m in reply.json["messages"]] == uids[4:]
    assert reply.json["next"] is None

    reply = await api.call("GET", "/folders/INBOX/messages?sort=-size&limit=2", token=token)
    assert [m["subject"] for m in reply.json["messages"]] == ["msg 6", "msg 5"]
    assert reply.json["next"] == {"offset": 2}
    reply = await api.call("GET", "/folders/INBOX/messages?sort=subject&limit=2&offset=2",
                           token=token)  # fmt: skip
    assert [m["subject"] for m in reply.json["messages"]] == ["msg 2", "msg 3"]

    bad = await api.call("GET", "/folders/INBOX/messages?sort=color", token=token)
    assert bad.status == 400 and bad.json["field"] == "sort"
    bad = await api.call("GET", "/folders/INBOX/messages?limit=0", token=token)
    assert bad.status == 400


@pytest_twisted.ensureDeferred
async def test_read_hostile_message(api: Any) -> None:
    """The parsed message has nothing hostile in its HTML; reading sets \\Seen unless
    ?peek=1; ?images=1 keeps the remote images."""
    token = await _signed_in(api)
    uid = await _append(api, "INBOX", _message("hostile", html=HOSTILE_HTML, attachment=b"\0\1"))
    path = f"/folders/INBOX/messages/{uid}"
    reply = await api.call("GET", path + "?peek=1", token=token)
    assert reply.status == 200, reply.body
    doc = reply.json
    assert doc["flags"] == []
    html = doc["html"].lower()
    for needle in ("<script", "onerror", "onload", "javascript:", "url(", "<iframe", "<form",
                   "tracker.example", "evil.example"):  # fmt: skip
        assert needle not in html, needle
    assert doc["remote_images_blocked"] == 2
    assert doc["text"].strip() == "hello"
    assert {"name": "Subject", "value": "hostile"} in doc["headers"]
    assert doc["attachments"][0]["filename"] == "blob.bin"
    assert doc["has_attachments"] is True
    assert api.storage.store.account(USER).folder("INBOX").message(uid).info.flags == frozenset()

    reply = await api.call("GET", path + "?images=1", token=token)
    assert reply.json["remote_images_blocked"] == 0
    assert "http://tracker.example/pixel.gif" in reply.json["html"]
    assert SEEN in reply.json["flags"]
    assert SEEN in api.storage.store.account(USER).folder("INBOX").message(uid).info.flags

    assert (await api.call("GET", "/folders/INBOX/messages/999", token=token)).status == 404
    # Beyond RFC 9051's 32-bit UIDs (found by schemathesis: the index cannot even key it).
    for method, big in (("GET", "/folders/INBOX/messages/562949953421312"),
                        ("PUT", "/drafts/4294967296")):  # fmt: skip
        reply = await api.call(method, big, token=token, json_body={} if method == "PUT" else None)
        assert reply.status == 404, (big, reply.body)


@pytest_twisted.ensureDeferred
async def test_raw_and_attachment_downloads(api: Any) -> None:
    """Raw bytes as message/rfc822; a part decoded with a safe type and file name."""
    token = await _signed_in(api)
    data = _message("files", attachment=b"\x00binary\xff")
    uid = await _append(api, "INBOX", data)
    reply = await api.call("GET", f"/folders/INBOX/messages/{uid}/raw", token=token)
    assert reply.status == 200
    assert reply.body == data
    assert reply.headers["content-type"].startswith("message/rfc822")
    assert reply.headers["content-disposition"].startswith("attachment;")
    assert reply.headers["x-content-type-options"] == "nosniff"

    doc = (await api.call("GET", f"/folders/INBOX/messages/{uid}?peek=1", token=token)).json
    part = doc["attachments"][0]["part"]
    reply = await api.call("GET", f"/folders/INBOX/messages/{uid}/attachments/{part}",
                           token=token)  # fmt: skip
    assert reply.status == 200
    assert reply.body == b"\x00binary\xff"
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["content-disposition"] == 'attachment; filename="blob.bin"'
    missing = await api.call("GET", f"/folders/INBOX/messages/{uid}/attachments/7",
                             token=token)  # fmt: skip
    assert missing.status == 404


@pytest_twisted.ensureDeferred
async def test_flags(api: Any) -> None:
    """Add, remove and replace flags; keywords allowed; \\Recent and junk refused."""
    token = await _signed_in(api)
    uid = await _append(api, "INBOX", _message("flags"))
    path = f"/folders/INBOX/messages/{uid}"
    reply = await api.call("PATCH", path, token=token,
                           json_body={"flags_add": ["\\Flagged", "$Important"]})  # fmt: skip
    assert reply.status == 200, reply.body
    assert reply.json["flags"] == ["$Important", "\\Flagged"]
    reply = await api.call("PATCH", path, token=token, json_body={"flags_remove": ["\\Flagged"]})
    assert reply.json["flags"] == ["$Important"]
    reply = await api.call("PATCH", path, token=token, json_body={"flags": ["\\Seen"]})
    assert reply.json["flags"] == ["\\Seen"]
    for bad in (["\\Recent"], ["two words"], ["(x"], [""]):
        reply = await api.call("PATCH", path, token=token, json_body={"flags": bad})
        assert reply.status in (400, 422), bad
    reply = await api.call("PATCH", path, token=token, json_body={})
    assert reply.status == 400


@pytest_twisted.ensureDeferred
async def test_move_copy_delete_and_spam(api: Any) -> None:
    """Move and copy return the new UID; moves into and out of Junk and spam reports reach
    the feedback; delete goes to Trash, then expunges from Trash."""
    token = await _signed_in(api)
    feedback = RecordingFeedback()
    api.context.feedback = feedback
    account = api.storage.store.account(USER)
    uid = await _append(api, "INBOX", _message("to move"))

    reply = await api.call("POST", f"/folders/INBOX/messages/{uid}/copy", token=token,
                           json_body={"to": "Archive"})  # fmt: skip
    assert reply.status == 200, reply.body
    assert reply.json["folder"] == "Archive"
    assert account.folder("Archive").info().exists == 1
    reply = await api.call("POST", f"/folders/INBOX/messages/{uid}/move", token=token,
                           json_body={"to": "Junk"})  # fmt: skip
    junk_uid = reply.json["uid"]
    assert account.folder("INBOX").info().exists == 0
    assert feedback.calls == [(USER, "Junk", [junk_uid], True)]
    reply = await api.call("POST", f"/folders/Junk/messages/{junk_uid}/move", token=token,
                           json_body={"to": "Nowhere"})  # fmt: skip
    assert reply.status == 404 and reply.json["field"] == "to"

    reply = await api.call("POST", f"/folders/Junk/messages/{junk_uid}/spam", token=token,
                           json_body={"is_spam": False})  # fmt: skip
    assert reply.status == 200, reply.body
    assert reply.json["folder"] == "INBOX"
    back = reply.json["uid"]
    assert feedback.calls[-1] == (USER, "INBOX", [back], False)
    reply = await api.call("POST", f"/folders/INBOX/messages/{back}/spam", token=token,
                           json_body={"is_spam": True})  # fmt: skip
    assert reply.json["folder"] == "Junk"
    assert feedback.calls[-1] == (USER, "Junk", [reply.json["uid"]], True)

    archived = next(iter(account.folder("Archive").uids()))
    reply = await api.call("DELETE", f"/folders/Archive/messages/{archived}", token=token)
    assert reply.status == 204
    assert account.folder("Archive").info().exists == 0
    trash_uid = next(iter(account.folder("Trash").uids()))
    reply = await api.call("DELETE", f"/folders/Trash/messages/{trash_uid}", token=token)
    assert reply.status == 204
    assert account.folder("Trash").info().exists == 0
    reply = await api.call("DELETE", f"/folders/Trash/messages/{trash_uid}", token=token)
    assert reply.status == 404


@pytest_twisted.ensureDeferred
async def test_search_with_imap_programs(api: Any) -> None:
    """``q`` is an IMAP SEARCH program: addresses, flags, body text, dates, sizes, OR/NOT."""
    token = await _signed_in(api)
    one = await _append(api, "INBOX", _message("invoice", text="please pay the invoice"))
    two = await _append(api, "INBOX", _message("lunch", sender="Carol <carol@example.org>"),
                        (SEEN,))  # fmt: skip
    three = await _append(api, "INBOX", _message("report", text="y" * 5000))

    async def found(q: str) -> list[int]:
        reply = await api.call("GET", "/search?folder=INBOX&q=" + quote(q), token=token)
        assert reply.status == 200, reply.body
        return list(reply.json["uids"])

    assert await found('FROM "bob"') == [one, three]
    assert await found("FROM carol SEEN") == [two]
    assert await found("UNSEEN") == [one, three]
    assert await found('BODY "pay the"') == [one]
    assert await found("LARGER 3000") == [three]
    assert await found("OR SUBJECT lunch SUBJECT report") == [two, three]
    assert await found("NOT SUBJECT invoice") == [two, three]
    assert await found("SENTSINCE 1-Jan-2026 SENTBEFORE 1-Feb-2026") == [one, two, three]
    assert await found('HEADER Message-ID "example.net"') == [one, two, three]
    reply = await api.call("GET", "/search?q=" + quote("SUBJECT report"), token=token)
    assert reply.json["messages"][0]["subject"] == "report"
    for bad in ("FROM", "BOGUS key", "(UNSEEN", ""):
        reply = await api.call("GET", "/search?q=" + quote(bad), token=token)
        assert reply.status == 400 and reply.json["field"] == "q", bad


def _call(storage: Any, params: dict[str, Any], query: dict[str, list[str]] | None = None,
          body: Any = None) -> Call:  # fmt: skip
    context = ApiContext(reactor=reactor, credentials=None, directory=storage.directory,
                         authenticate=lambda *a, **k: None, authorize=lambda *a: None,
                         store=storage.store)  # fmt: skip
    return Call(request=None, context=context, user=USER, scopes=frozenset({"api"}),
                params=params, query=query or {}, json=body, client_ip="127.0.0.1")  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_handlers_called_directly(storage: Any) -> None:
    """Handlers work from a Call alone (no HTTP): a page reads only the page's messages."""
    await storage.store.create_account(USER)
    mailbox = storage.store.account(USER).folder("INBOX")
    for n in range(5):
        await mailbox.append(io.BytesIO(_message(f"direct {n}")), ())
    looked_up: list[list[int]] = []
    real = mailbox.messages

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(mailbox, name)

        def messages(self, uids: Any, meta: Any = True) -> Any:
            looked_up.append(list(uids))
            return real(uids, meta)

    call = _call(storage, {"folder": "INBOX"}, {"limit": ["2"]})
    account = storage.store.account(USER)
    call.context.store = type("S", (), {"account": lambda self, a: account})()
    original = account.folder
    account.folder = lambda name: Spy() if name == "INBOX" else original(name)  # type: ignore[method-assign]
    page = await mail.list_messages(call)
    assert [m["subject"] for m in page["messages"]] == ["direct 4", "direct 3"]
    assert looked_up == [[4, 5]]
    with pytest.raises(Problem) as caught:
        mail.parse_query("FROM")
    assert caught.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parse_query_gives_keys_or_a_problem(q: str) -> None:
    """Any ``q`` parses to a search key or gives a 400 naming ``q``; never another error."""
    try:
        mail.parse_query(q)
    except Problem as problem:
        assert problem.status == 400 and problem.extra["field"] == "q"
