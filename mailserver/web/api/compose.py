"""Send and drafts: the compose endpoints of the REST API (issue #10).

``POST /send`` builds an RFC 5322 message from JSON (:func:`build_message`) and hands it to
the submission path, ``context.submit(user)`` (an
:class:`~mailserver.interfaces.IDeliveryTarget`: the same filters, rate limits, DKIM signing
and spool as port 587), as one transaction: ``start(Envelope)``, ``add_recipient`` for each
of to, cc and bcc, ``body``, ``commit``. A copy goes into the account's Sent folder
(special use ``\\Sent``) flagged ``\\Seen``, only after the commit succeeded.

Design rules:

1. **All or nothing.** A refused recipient aborts the whole send with a 400 naming every
   refused address and the server's reason (an API caller fixes the list and sends again;
   nothing went out).
2. **The From is the signed-in user**, never taken from the request; Bcc is in the envelope
   only, never in the header.
3. **Header injection is impossible**: every header value goes through
   :class:`email.message.EmailMessage` with the SMTP policy, which refuses CR and LF in
   values; addresses are parsed by :func:`mailserver.message.address.parse_address` first.
4. **Bounded**: at most :data:`MAX_RECIPIENTS` recipients and :data:`MAX_ATTACHMENTS`
   attachments; the size limit of the message is the submission path's.
5. Drafts are messages in the Drafts folder flagged ``\\Draft \\Seen``; saving a draft
   again (``PUT /drafts/{uid}``) appends the new version and expunges the old one, since
   stored messages never change (the new UID is returned).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import io
from collections.abc import Callable, Coroutine
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.errors import MailError, NoSuchMessage
from mailserver.message.address import parse_address
from mailserver.types import ANSWERED, DELETED, DRAFT, SEEN, Address, Envelope, FlagMode, SpecialUse
from mailserver.web.api.routing import Call, Problem, Route

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_RECIPIENTS",
    "ROUTES",
    "account_of",
    "build_message",
    "deferred_handler",
    "folder_by_use",
    "uid_param",
    "valid_uid",
]

MAX_RECIPIENTS = 100
MAX_ATTACHMENTS = 50
_MAX_SUBJECT = 998


def deferred_handler(fn: Callable[[Call], Coroutine[Any, Any, Any]]) -> Callable[[Call], Any]:
    """An ``async def`` handler as the Deferred-returning handler the router expects."""

    def handler(call: Call) -> Deferred[Any]:
        return Deferred.fromCoroutine(fn(call))

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def account_of(call: Call) -> Any:
    """The signed-in user's IAccount."""
    return call.context.store.account(call.user)


def folder_by_use(account: Any, use: SpecialUse) -> Any:
    """The account's FolderInfo with special use ``use``, or None."""
    for info in account.list_folders():
        if info.special_use is use:
            return info
    return None


#: RFC 9051 §9 nz-number: UIDs are 1..2**32-1.
MAX_UID = 4_294_967_295


def valid_uid(value: object) -> int | None:
    """``value`` when it is a UID a folder can hold (an int in 1..MAX_UID), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_UID:
        return value
    return None


def uid_param(call: Call) -> int:
    """The path's ``{uid:int}``; NoSuchMessage (404) when no folder can hold it."""
    uid = valid_uid(call.params.get("uid"))
    if uid is None:
        raise NoSuchMessage(detail="UIDs are 1 to 4294967295")
    return uid


def _bad(detail: str, field: str) -> Problem:
    return Problem(400, "Bad request", detail, field=field)


def _mailbox(text: object, field: str) -> tuple[str, Address]:
    """``"Name <a@b>"`` or ``"a@b"`` -> (display name, parsed address)."""
    if not isinstance(text, str) or not text.strip() or "\r" in text or "\n" in text:
        raise _bad(f"{field} must hold addresses", field)
    name, addr = email.utils.parseaddr(text) if "<" in text else ("", text.strip())
    try:
        return name, parse_address(addr)
    except ValueError as error:
        raise _bad(f"{text!r} in {field} is not an address: {error}", field) from None


def _addresses(body: dict[str, Any], field: str) -> list[tuple[str, Address]]:
    value = body.get(field) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _bad(f"{field} must be a list of addresses", field)
    return [_mailbox(v, field) for v in value]


def _header_address(name: str, address: Address) -> HeaderAddress:
    name = " ".join(name.splitlines())  # every line break Python knows, CR and LF among them
    try:
        return HeaderAddress(display_name=name, username=address.local, domain=address.domain)
    except (ValueError, TypeError):
        return HeaderAddress(username=address.local, domain=address.domain)


def _multiline(value: str) -> bool:
    """True when ``value`` breaks a header line: CR, LF, or any other line boundary Python's
    email package refuses in a header (vertical tab, form feed, U+2028, ...)."""
    return "\r" in value or "\n" in value or len(value.splitlines()) > 1


def _text(body: dict[str, Any], field: str, limit: int | None = None) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{field} must be a string", field)
    if limit is not None and len(value) > limit:
        raise _bad(f"{field} is longer than {limit} characters", field)
    return value


def build_message(user: str, body: dict[str, Any], *, now: float | None = None,
                  draft: bool = False) -> tuple[bytes, list[Address], str]:  # fmt: skip
    """The RFC 5322 message for a compose request, its envelope recipients (to + cc + bcc,
    deduplicated) and its Message-ID. A 400 Problem names the field at fault."""
    if not isinstance(body, dict):
        raise _bad("the body must be an object", "body")
    to, cc, bcc = (_addresses(body, f) for f in ("to", "cc", "bcc"))
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise _bad(f"at most {MAX_RECIPIENTS} recipients", "to")
    if not draft and not (to or cc or bcc):
        raise _bad("at least one recipient is needed", "to")
    subject = _text(body, "subject", _MAX_SUBJECT)
    if _multiline(subject):
        raise _bad("subject must be one line", "subject")
    text = _text(body, "text")
    html = _text(body, "html")
    try:
        sender = parse_address(user)
    except ValueError:
        raise _bad("the signed-in user has no valid address", "from") from None
    message = EmailMessage(policy=SMTP)
    message["From"] = _header_address(_text(body, "from_name", 200), sender)
    if to:
        message["To"] = [_header_address(n, a) for n, a in to]
    if cc:
        message["Cc"] = [_header_address(n, a) for n, a in cc]
    if draft and bcc:
        message["Bcc"] = [_header_address(n, a) for n, a in bcc]  # kept in the draft only
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(now, localtime=False)
    message_id = email.utils.make_msgid(domain=sender.domain)
    message["Message-ID"] = message_id
    reply = _text(body, "in_reply_to", 998).strip()
    if reply:
        if _multiline(reply) or not (reply.startswith("<") and reply.endswith(">")):
            raise _bad("in_reply_to must be a <message-id>", "in_reply_to")
        message["In-Reply-To"] = reply
        references = _text(body, "references", 8000).strip()
        if _multiline(references):
            raise _bad("references must be one line", "references")
        message["References"] = f"{references} {reply}".strip() if references else reply
    message["MIME-Version"] = "1.0"
    message.set_content(text or "", cte="quoted-printable")
    if html:
        message.add_alternative(html, subtype="html", cte="quoted-printable")
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise _bad(f"attachments must be a list of at most {MAX_ATTACHMENTS}", "attachments")
    for index, item in enumerate(attachments):
        field = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{field} must be an object", field)
        filename = _text(item, "filename", 255) or "attachment"
        if any(c in filename for c in "\r\n\0"):
            raise _bad(f"{field}.filename must be one line", field)
        content_type = _text(item, "content_type", 255) or "application/octet-stream"
        maintype, _, subtype = content_type.lower().partition("/")
        if not maintype.isascii() or not subtype or not maintype.replace("-", "").isalnum() \
                or not all(c.isalnum() or c in "+-._" for c in subtype):  # fmt: skip
            raise _bad(f"{field}.content_type must be type/subtype", field)
        try:
            data = base64.b64decode(_text(item, "data_base64"), validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{field}.data_base64 is not base64", field) from None
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    recipients = list({a.key: a for _, a in (*to, *cc, *bcc)}.values())
    return message.as_bytes(), recipients, message_id


async def _send(call: Call, data: bytes, recipients: list[Address]) -> None:
    """One submission transaction; all or nothing (rule 1)."""
    assert call.user is not None
    envelope = Envelope(
        sender=parse_address(call.user),
        helo="api",
        client_address=call.client_ip,
        authenticated_as=call.user,
        params={"SIZE": str(len(data))},
        received_at=call.context.reactor.seconds(),
    )
    delivery = call.context.submit(call.user).start(envelope)
    refused: list[dict[str, str]] = []
    try:
        for address in recipients:
            try:
                await delivery.add_recipient(address)
            except MailError as error:
                refused.append({"address": str(address), "reason": error.text,
                                "code": f"{error.code} {error.enhanced}"})  # fmt: skip
        if refused:
            raise Problem(400, "Recipients refused",
                          ", ".join(f"{r['address']}: {r['reason']}" for r in refused),
                          field="to", refused=refused)  # fmt: skip
        await delivery.body(io.BytesIO(data))
        await delivery.commit()
    except BaseException:
        try:
            await delivery.abort()
        except Exception:
            pass
        raise


async def _append(call: Call, use: SpecialUse, data: bytes, flags: list[str]) -> tuple[str, int]:
    account = account_of(call)
    folder = folder_by_use(account, use)
    if folder is None:
        raise Problem(409, "Conflict", f"the account has no {use.value} folder")
    uid = await account.folder(folder.name).append(io.BytesIO(data), flags)
    return folder.name, int(uid)


async def send(call: Call) -> dict[str, object]:
    """Build, submit, then keep a copy in Sent; optionally mark the replied-to message
    \\Answered and drop the draft it came from."""
    assert call.user is not None
    body = call.json or {}
    now = call.context.reactor.seconds()
    data, recipients, message_id = build_message(call.user, body, now=now)
    await _send(call, data, recipients)
    result: dict[str, object] = {
        "message_id": message_id,
        "recipients": [str(a) for a in recipients],
        "sent": None,
    }
    try:
        folder, uid = await _append(call, SpecialUse.SENT, data, [SEEN])
        result["sent"] = {"folder": folder, "uid": uid}
    except (MailError, Problem) as error:  # sent all the same: say so, do not fail
        result["sent_error"] = str(error)
    await _after_send(call, body)
    return result


async def _after_send(call: Call, body: dict[str, Any]) -> None:
    account = account_of(call)
    reply = body.get("reply_to_message")
    if isinstance(reply, dict) and valid_uid(reply.get("uid")) is not None:
        try:
            folder = account.folder(str(reply.get("folder") or "INBOX"))
            await folder.store_flags([reply["uid"]], [ANSWERED], FlagMode.ADD)
        except MailError:
            pass  # the original is gone: nothing to mark
    draft = valid_uid(body.get("draft_uid"))
    if draft is not None:
        drafts = folder_by_use(account, SpecialUse.DRAFTS)
        if drafts is not None:
            mailbox = account.folder(drafts.name)
            await mailbox.store_flags([draft], [DELETED], FlagMode.ADD)
            await mailbox.expunge([draft])


async def save_draft(call: Call) -> dict[str, object]:
    assert call.user is not None
    data, _, message_id = build_message(
        call.user, call.json or {}, now=call.context.reactor.seconds(), draft=True
    )
    folder, uid = await _append(call, SpecialUse.DRAFTS, data, [DRAFT, SEEN])
    return {"folder": folder, "uid": uid, "message_id": message_id}


async def replace_draft(call: Call) -> dict[str, object]:
    assert call.user is not None
    account = account_of(call)
    drafts = folder_by_use(account, SpecialUse.DRAFTS)
    if drafts is None:
        raise Problem(409, "Conflict", "the account has no Drafts folder")
    mailbox = account.folder(drafts.name)
    old = uid_param(call)
    mailbox.message(old)  # NoSuchMessage -> 404 before anything is saved
    data, _, message_id = build_message(
        call.user, call.json or {}, now=call.context.reactor.seconds(), draft=True
    )
    folder, uid = await _append(call, SpecialUse.DRAFTS, data, [DRAFT, SEEN])
    await mailbox.store_flags([old], [DELETED], FlagMode.ADD)
    await mailbox.expunge([old])
    return {"folder": folder, "uid": uid, "message_id": message_id, "replaced": old}


_UID = {"type": "integer", "minimum": 1, "maximum": MAX_UID}
_ADDRESSES = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_RECIPIENTS}
_COMPOSE = {
    "type": "object",
    "properties": {
        "to": _ADDRESSES,
        "cc": _ADDRESSES,
        "bcc": _ADDRESSES,
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "html": {"type": "string"},
        "from_name": {"type": "string"},
        "in_reply_to": {"type": "string"},
        "references": {"type": "string"},
        "reply_to_message": {"type": "object", "properties": {"folder": {"type": "string"},
                                                              "uid": _UID}},
        "draft_uid": _UID,
        "attachments": {
            "type": "array",
            "maxItems": MAX_ATTACHMENTS,
            "items": {
                "type": "object",
                "required": ["data_base64"],
                "properties": {
                    "filename": {"type": "string"},
                    "content_type": {"type": "string"},
                    "data_base64": {"type": "string"},
                },
            },
        },
    },
}  # fmt: skip
_SAVED = {"type": "object", "properties": {"folder": {"type": "string"},
                                           "uid": {"type": "integer"}}}  # fmt: skip

ROUTES: list[Route] = [
    Route("POST", "/send", deferred_handler(send), "Send a message through the submission path",
          tag="mail", body=_COMPOSE),
    Route("POST", "/drafts", deferred_handler(save_draft), "Save a draft", tag="mail", status=201,
          body=_COMPOSE, response=_SAVED),
    Route("PUT", "/drafts/{uid:int}", deferred_handler(replace_draft),
          "Replace a draft (the new version gets a new UID)", tag="mail", body=_COMPOSE,
          response=_SAVED),
]  # fmt: skip
