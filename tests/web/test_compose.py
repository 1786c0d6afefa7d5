"""Send and drafts through real HTTP, with the store's LocalDeliveryTarget as the submission
path, so a sent message really arrives in the recipient's INBOX."""

from __future__ import annotations

import base64
import email
import email.policy
import io
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import DRAFT, SEEN
from mailserver.web.api import compose
from mailserver.web.api.routing import Problem

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"


class CountingTarget:
    """The local target, remembering each transaction's envelope and whether it aborted."""

    def __init__(self, inner: LocalDeliveryTarget) -> None:
        self.inner = inner
        self.envelopes: list[Any] = []

    def start(self, envelope: Any) -> Any:
        self.envelopes.append(envelope)
        return self.inner.start(envelope)


async def _setup(api: Any) -> tuple[str, CountingTarget]:
    for address in (ALICE, BOB, CAROL):
        await api.add_user(address, "pw-" + address)
        await api.storage.store.create_account(address)
    target = CountingTarget(LocalDeliveryTarget(api.storage.store, api.storage.directory))
    api.context.submit = lambda user: target
    return str(await api.login(ALICE, "pw-" + ALICE)), target


def _inbox(api: Any, address: str, folder: str = "INBOX") -> list[tuple[bytes, frozenset[str]]]:
    mailbox = api.storage.store.account(address).folder(folder)
    out = []
    for message in mailbox.messages(list(mailbox.uids()), False):
        with message.open() as source:
            out.append((source.read(), message.info.flags))
    return out


@pytest_twisted.ensureDeferred
async def test_send_arrives_with_attachments_and_sent_copy(api: Any) -> None:
    """To, Cc and Bcc all receive it; Bcc is not in the header; From is the user; the
    attachment round-trips; a \\Seen copy lands in Sent; the reply is marked \\Answered."""
    token, target = await _setup(api)
    question = b"Subject: question\r\nMessage-ID: <q@x>\r\n\r\nhi\r\n"
    original = (
        await api.storage.store.account(ALICE).folder("INBOX").append(io.BytesIO(question), ())
    )
    body = {
        "to": [f"Bob Example <{BOB}>"],
        "cc": [CAROL],
        "bcc": [ALICE],
        "subject": "Grüße",
        "text": "Hello Bob\n",
        "html": "<p>Hello <b>Bob</b></p>",
        "in_reply_to": "<q@x>",
        "reply_to_message": {"folder": "INBOX", "uid": original},
        "attachments": [
            {"filename": "data.bin", "content_type": "application/octet-stream",
             "data_base64": base64.b64encode(b"\x00\x01binary").decode()},
        ],
    }  # fmt: skip
    reply = await api.call("POST", "/send", token=token, json_body=body)
    assert reply.status == 200, reply.body
    assert sorted(reply.json["recipients"]) == sorted([BOB, CAROL, ALICE])
    assert reply.json["sent"]["folder"] == "Sent"
    assert str(target.envelopes[0].sender) == ALICE
    assert target.envelopes[0].authenticated_as == ALICE

    ((data, _),) = _inbox(api, BOB)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["From"] == ALICE
    assert parsed["To"] == f"Bob Example <{BOB}>"
    assert parsed["Cc"] == CAROL
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Grüße"
    assert parsed["In-Reply-To"] == "<q@x>" and parsed["References"] == "<q@x>"
    assert parsed["Message-ID"] == reply.json["message_id"]
    assert parsed["Date"]
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Bob\n"
    assert "<b>Bob</b>" in parsed.get_body(("html",)).get_content()
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "data.bin"
    assert attachment.get_content() == b"\x00\x01binary"
    assert len(_inbox(api, CAROL)) == 1
    assert any(b"Subject: =?utf-8?" in d for d, _ in _inbox(api, ALICE))  # Bcc'd to herself

    ((sent, flags),) = _inbox(api, ALICE, "Sent")
    assert SEEN in flags and sent.split(b"\r\n\r\n")[0].isascii()  # RFC 2047 subject
    answered = api.storage.store.account(ALICE).folder("INBOX").message(original).info.flags
    assert "\\Answered" in answered


@pytest_twisted.ensureDeferred
async def test_refused_recipient_sends_nothing(api: Any) -> None:
    """One unknown recipient refuses the whole send with a 400 listing it."""
    token, _ = await _setup(api)
    body = {"to": [BOB, "nobody@example.test"], "subject": "s", "text": "t"}
    reply = await api.call("POST", "/send", token=token, json_body=body)
    assert reply.status == 400, reply.body
    assert [r["address"] for r in reply.json["refused"]] == ["nobody@example.test"]
    assert _inbox(api, BOB) == []
    assert _inbox(api, ALICE, "Sent") == []


@pytest_twisted.ensureDeferred
async def test_bad_input_names_the_field(api: Any) -> None:
    token, _ = await _setup(api)
    cases = [
        ({"to": [], "text": "x"}, "to"),
        ({"to": ["not an address"]}, "to"),
        ({"to": [BOB], "subject": "a\r\nBcc: victim@example.net"}, "subject"),
        ({"to": [BOB], "cc": ["x@y\nBcc: z@w"]}, "cc"),
        ({"to": [BOB], "attachments": [{"data_base64": "!!!"}]}, "attachments[0]"),
        ({"to": [BOB], "attachments": [{"data_base64": "", "content_type": "a b"}]},
         "attachments[0]"),
        ({"to": [BOB], "in_reply_to": "no-brackets"}, "in_reply_to"),
    ]  # fmt: skip
    for body, field in cases:
        reply = await api.call("POST", "/send", token=token, json_body=body)
        assert reply.status in (400, 422), (body, reply.body)
        if reply.status == 400:
            assert reply.json["field"] == field, body
    assert _inbox(api, BOB) == []


@pytest_twisted.ensureDeferred
async def test_drafts_save_and_replace(api: Any) -> None:
    """A draft lands in Drafts flagged \\Draft \\Seen (Bcc kept); replacing it gives a new
    UID and removes the old one; sending with draft_uid removes the draft."""
    token, _ = await _setup(api)
    draft = {"to": [BOB], "bcc": [CAROL], "subject": "draft 1"}
    reply = await api.call("POST", "/drafts", token=token, json_body=draft)
    assert reply.status == 201, reply.body
    first = reply.json["uid"]
    ((data, flags),) = _inbox(api, ALICE, "Drafts")
    assert {DRAFT, SEEN} <= flags and b"Bcc: " + CAROL.encode() in data
    reply = await api.call("PUT", f"/drafts/{first}", token=token,
                           json_body={"subject": "draft 2"})  # fmt: skip
    assert reply.status == 200, reply.body
    second = reply.json["uid"]
    assert second != first
    ((data, _),) = _inbox(api, ALICE, "Drafts")
    assert b"draft 2" in data
    reply = await api.call("PUT", f"/drafts/{first}", token=token, json_body={"subject": "x"})
    assert reply.status == 404
    final = {"to": [BOB], "subject": "final", "draft_uid": second}
    reply = await api.call("POST", "/send", token=token, json_body=final)
    assert reply.status == 200, reply.body
    assert _inbox(api, ALICE, "Drafts") == []
    assert len(_inbox(api, BOB)) == 1


_TEXT = st.text(max_size=40)
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "to": st.lists(st.one_of(_TEXT, st.just(BOB), st.integers()), max_size=3),
        "cc": st.one_of(_TEXT, st.lists(_TEXT, max_size=2)),
        "subject": st.one_of(_TEXT, st.integers(), st.none()),
        "text": _TEXT,
        "html": _TEXT,
        "in_reply_to": _TEXT,
        "attachments": st.lists(st.dictionaries(_TEXT, _TEXT, max_size=3), max_size=2),
    },
)


@settings(max_examples=300, deadline=None)
@given(_BODY)
def test_build_message_gives_a_message_or_a_problem(body: dict[str, Any]) -> None:
    """Any JSON body gives a parseable message or a 400 Problem naming a field."""
    try:
        data, recipients, message_id = compose.build_message(ALICE, body)
    except Problem as problem:
        assert problem.status == 400 and problem.extra.get("field")
        return
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["From"] == ALICE and parsed["Message-ID"] == message_id
    assert recipients
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in head


def test_build_message_requires_a_recipient_unless_draft() -> None:
    with pytest.raises(Problem):
        compose.build_message(ALICE, {"subject": "x"})
    data, recipients, _ = compose.build_message(ALICE, {"subject": "x"}, draft=True)
    assert recipients == [] and b"Subject: x" in data
