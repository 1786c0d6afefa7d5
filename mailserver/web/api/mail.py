"""Folders, messages and search: the mail endpoints of the REST API (issue #10).

Every route acts on the signed-in user's own account, ``context.store.account(call.user)``
(an :class:`~mailserver.interfaces.IAccount`); a store error (NoSuchFolder, NoSuchMessage,
FolderExists, InvalidName, QuotaExceeded) is mapped to its problem by the app.

Design rules:

1. **Never load a whole mailbox for a page.** The default order, newest first (``-date``),
   pages by UID (UIDs ascend with arrival, RFC 9051 §2.3.1.1): the UIDs below the cursor are
   read from the index in windows going backwards, and only the page's messages are looked
   up, in one :meth:`IMailbox.messages` batch. ``date`` (oldest first) pages forward the
   same way. The other sorts (``size``, ``from``, ``subject``, each with ``-`` for
   descending) make one pass over the folder's index metadata (sizes alone, or the cached
   envelopes), at most :data:`MAX_SORTED` messages, in batches of :data:`BATCH` per store
   call, and page by offset: O(folder) index reads, no message file opened.
2. **Bytes are read and parsed in the thread pool** (message files, MIME, sanitising).
3. **Reading sets \\Seen** (as IMAP ``BODY[]`` does) unless ``?peek=1``.
4. **Junk moves are spam judgements** exactly as IMAP's (``junk_judgement``): moving into
   Junk or out of it, or ``POST .../spam``, goes to ``context.feedback`` (IJunkFeedback);
   its failure is logged, never shown.
5. **Search has the power of IMAP SEARCH**: ``q`` is an IMAP search program parsed by the
   IMAP parser and matched by the IMAP server's matcher (a UID-only view: no sequence-number
   session state, ``RECENT`` never matches, ``$`` is empty).

The folder listing (rule 1) is in :mod:`mailserver.web.api.mail_listing` and the JSON shapes
in :mod:`mailserver.web.api.mail_json`; their names are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.errors import NoSuchFolder, NoSuchMessage
from mailserver.imap.commands.copy import junk_judgement
from mailserver.imap.commands.fetch import read_headers, read_messages
from mailserver.imap.commands.search import Candidate, Matcher, all_keys
from mailserver.imap.parse_search import Contains, DateKey, Header, ObjectId, SizeKey, Within
from mailserver.imap.parse_search import parse_search as _parse_search
from mailserver.imap.scanner import ParseError, Scanner
from mailserver.types import DELETED, SEEN, FlagMode, FolderInfo, SpecialUse
from mailserver.web.api import compose, render
from mailserver.web.api.compose import account_of, deferred_handler, folder_by_use, uid_param

# The JSON shapes and the folder listing live in these modules.
from mailserver.web.api.mail_json import (
    _FOLDER,
    _PAGE,
    folder_json,
    summary_json,
)
from mailserver.web.api.mail_listing import (
    _SORTS,
    BATCH,
    MAX_LIMIT,
    MAX_SORTED,
    _infos,
    list_messages,
)
from mailserver.web.api.routing import Call, Problem, Response, Route

__all__ = [
    "BATCH",
    "MAX_SORTED",
    "ROUTES",
    "account_of",
    "deferred_handler",
    "folder_by_use",
    "folder_json",
    "summary_json",
]

log = Logger(namespace="mailserver.web.api")


def _in_thread(call: Call, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    reactor = call.context.reactor
    return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args, **kwargs)


def _bool_arg(call: Call, name: str) -> bool:
    return (call.arg(name) or "").lower() in ("1", "true", "yes")


def _special_use(text: object, field: str = "special_use") -> SpecialUse | None:
    if text is None or text == "":
        return None
    wanted = str(text).lstrip("\\").lower()
    for use in SpecialUse:
        if use.value.lstrip("\\").lower() == wanted:
            return use
    names = ", ".join(u.value.lstrip("\\") for u in SpecialUse)
    raise Problem(400, "Bad request", f"{field} must be one of {names}", field=field)


# -- folders --------------------------------------------------------------------------------


def list_folders(call: Call) -> dict[str, object]:
    """Every folder with its counts."""
    return {"folders": [folder_json(info) for info in account_of(call).list_folders()]}


async def create_folder(call: Call) -> dict[str, object]:
    body = call.json or {}
    name = str(body.get("name") or "").strip()
    if not name:
        raise Problem(400, "Bad request", "name must not be empty", field="name")
    info = await account_of(call).create_folder(name, _special_use(body.get("special_use")))
    if not isinstance(info, FolderInfo):
        info = account_of(call).folder(name).info()
    return folder_json(info)


async def rename_folder(call: Call) -> dict[str, object]:
    body = call.json or {}
    new = str(body.get("name") or "").strip()
    if not new:
        raise Problem(400, "Bad request", "name must not be empty", field="name")
    account = account_of(call)
    account.folder(call.params["folder"])  # NoSuchFolder -> 404 before anything changes
    await account.rename_folder(call.params["folder"], new)
    return folder_json(account.folder(new).info())


async def delete_folder(call: Call) -> None:
    account = account_of(call)
    account.folder(call.params["folder"])
    await account.delete_folder(call.params["folder"])


# -- one message ----------------------------------------------------------------------------


def _read(message: Any) -> bytes:
    with message.open() as source:
        data: bytes = source.read()
        return data


async def _bytes(call: Call, message: Any) -> bytes:
    try:
        data: bytes = await _in_thread(call, _read, message)
    except OSError:
        raise NoSuchMessage(detail="the message file is gone") from None
    return data


async def get_message(call: Call) -> dict[str, object]:
    """The parsed message; sets \\Seen unless ``?peek=1``."""
    mailbox = account_of(call).folder(call.params["folder"])
    uid = uid_param(call)
    message = mailbox.message(uid)
    data = await _bytes(call, message)
    rendered = await _in_thread(call, render.render, data, images=_bool_arg(call, "images"))
    flags = set(message.info.flags)
    if SEEN not in flags and not _bool_arg(call, "peek"):
        changed = await mailbox.store_flags([uid], [SEEN], FlagMode.ADD)
        flags = set(changed[0].flags) if changed else flags | {SEEN}
    result = summary_json(message.info)
    result["flags"] = sorted(flags)
    result.update(rendered.json())
    return result


async def raw_message(call: Call) -> Response:
    mailbox = account_of(call).folder(call.params["folder"])
    message = mailbox.message(uid_param(call))
    data = await _bytes(call, message)
    return Response(
        body=data,
        content_type="message/rfc822",
        headers={
            "Content-Disposition": render.content_disposition(f"message-{message.info.uid}.eml"),
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


async def attachment(call: Call) -> Response:
    mailbox = account_of(call).folder(call.params["folder"])
    message = mailbox.message(uid_param(call))
    data = await _bytes(call, message)
    found = await _in_thread(call, render.part_bytes, data, call.params["part"])
    if found is None:
        raise Problem(404, "Not Found", "the message has no such part", field="part")
    body, content_type, filename = found
    default = f"part-{call.params['part']}"
    return Response(
        body=body,
        content_type=render.safe_content_type(content_type),
        headers={
            "Content-Disposition": render.content_disposition(filename, default),
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def _flag(text: object, field: str) -> str:
    if not isinstance(text, str) or not text:
        raise Problem(400, "Bad request", f"{field} must hold flag names", field=field)
    try:
        s = Scanner(text.encode("utf-8"))
        flag = s.flag()
        if not s.at_end():
            raise ParseError("trailing characters")
    except (ParseError, UnicodeError):
        raise Problem(400, "Bad request", f"{text!r} is not a flag", field=field) from None
    if flag.lower() == "\\recent":
        raise Problem(400, "Bad request", "\\Recent cannot be set", field=field)
    return flag


def _flags(body: dict[str, Any], field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise Problem(400, "Bad request", f"{field} must be a list", field=field)
    return [_flag(v, field) for v in value]


async def patch_flags(call: Call) -> dict[str, object]:
    body = call.json or {}
    mailbox = account_of(call).folder(call.params["folder"])
    uid = uid_param(call)
    message = mailbox.message(uid)
    flags = set(message.info.flags)
    replace = _flags(body, "flags")
    add = _flags(body, "flags_add")
    remove = _flags(body, "flags_remove")
    if replace is None and add is None and remove is None:
        raise Problem(400, "Bad request", "give flags, flags_add or flags_remove", field="flags")
    for mode, given in ((FlagMode.REPLACE, replace), (FlagMode.ADD, add),
                        (FlagMode.REMOVE, remove)):  # fmt: skip
        if given is not None:
            changed = await mailbox.store_flags([uid], given, mode)
            if changed:
                flags = set(changed[0].flags)
    return {"uid": uid, "flags": sorted(flags)}


def _report(call: Call, account: Any, folder: str, uids: list[int], is_spam: bool) -> None:
    feedback = getattr(call.context, "feedback", None)
    if feedback is None or not uids:
        return
    d = maybeDeferred(feedback.judged, account, folder, uids, is_spam)
    d.addErrback(lambda failure: log.failure("junk feedback failed", failure))


async def _transfer(call: Call, move: bool) -> dict[str, object]:
    body = call.json or {}
    to = body.get("to")
    if not isinstance(to, str) or not to:
        raise Problem(400, "Bad request", "to must name a folder", field="to")
    account = account_of(call)
    mailbox = account.folder(call.params["folder"])
    uid = uid_param(call)
    mailbox.message(uid)  # 404 when absent
    try:
        target = account.folder(to)
    except NoSuchFolder:
        raise Problem(404, "Not Found", f"no folder {to!r}", field="to") from None
    source_use = mailbox.info().special_use
    pairs = await (mailbox.move if move else mailbox.copy)([uid], target.name)
    if not pairs:
        raise NoSuchMessage()
    judgement = junk_judgement(source_use, target.info().special_use)
    if judgement is not None:
        _report(call, account, target.name, [new for _, new in pairs], judgement)
    return {"folder": target.name, "uid": pairs[0][1]}


async def move_message(call: Call) -> dict[str, object]:
    return await _transfer(call, True)


async def copy_message(call: Call) -> dict[str, object]:
    return await _transfer(call, False)


async def delete_message(call: Call) -> None:
    """Into Trash; expunged when already there, with ``?expunge=1``, or with no Trash."""
    account = account_of(call)
    mailbox = account.folder(call.params["folder"])
    uid = uid_param(call)
    mailbox.message(uid)
    trash = folder_by_use(account, SpecialUse.TRASH)
    if _bool_arg(call, "expunge") or trash is None or trash.name == mailbox.name:
        await mailbox.store_flags([uid], [DELETED], FlagMode.ADD)
        await mailbox.expunge([uid])
        return
    await mailbox.move([uid], trash.name)


async def report_spam(call: Call) -> dict[str, object]:
    """The user's judgement: into Junk (spam) or out of it into INBOX (not spam); the
    classifiers learn it either way."""
    body = call.json or {}
    is_spam = body.get("is_spam")
    if not isinstance(is_spam, bool):
        raise Problem(400, "Bad request", "is_spam must be true or false", field="is_spam")
    account = account_of(call)
    mailbox = account.folder(call.params["folder"])
    uid = uid_param(call)
    mailbox.message(uid)
    here = mailbox.info().special_use
    if is_spam:
        junk = folder_by_use(account, SpecialUse.JUNK)
        if junk is None:
            raise Problem(409, "Conflict", "the account has no Junk folder")
        destination = junk.name
    else:
        destination = "INBOX" if here is SpecialUse.JUNK else mailbox.name
    folder, new_uid = mailbox.name, uid
    if destination != mailbox.name:
        pairs = await mailbox.move([uid], destination)
        if not pairs:
            raise NoSuchMessage()
        folder, new_uid = account.folder(destination).name, pairs[0][1]
    _report(call, account, folder, [new_uid], is_spam)
    return {"folder": folder, "uid": new_uid, "is_spam": is_spam}


# -- search ---------------------------------------------------------------------------------


def parse_query(q: str) -> Any:
    """An IMAP search program (RFC 9051 §6.4.4) as the IMAP parser's key tree; a 400
    Problem naming the fault otherwise."""
    try:
        raw = q.encode("utf-8")
        if not raw.strip() or len(raw) > 8192 or b"\r" in raw or b"\n" in raw:
            raise ParseError("q must be a one-line search program")
        return _parse_search(Scanner(b" " + raw, utf8=True), uid=True).key
    except (ParseError, UnicodeError) as error:
        raise Problem(400, "Bad search", str(error), field="q") from None


async def search(call: Call) -> dict[str, object]:
    """``q`` matched over one folder (the IMAP SEARCH rules, see rule 5); the newest
    ``limit`` matches are returned with the UIDs of all of them."""
    folder = call.arg("folder", "INBOX") or "INBOX"
    mailbox = account_of(call).folder(folder)
    limit = call.int_arg("limit", 50, 1, MAX_LIMIT)
    key = parse_query(call.arg("q", "") or "")
    keys = all_keys(key)
    needs_body = any(isinstance(k, Contains) and k.field in ("BODY", "TEXT") for k in keys)
    needs_bytes = needs_body or any(isinstance(k, Header) for k in keys)
    needs_info = needs_bytes or any(
        isinstance(k, SizeKey | DateKey | Within | Contains | ObjectId) for k in keys
    )
    meta: bool | str = needs_body or (
        "envelope"
        if any(isinstance(k, Contains) or (isinstance(k, DateKey) and k.field == "sent")
               for k in keys)
        else False
    )  # fmt: skip
    current = list(mailbox.flags())[:MAX_SORTED]
    view = SimpleNamespace(uids=[f.uid for f in current], recent=set(), saved=None)
    matcher = Matcher(view, time.time())  # type: ignore[arg-type]
    candidates = [Candidate(n, f.uid, f.flags, f.modseq) for n, f in enumerate(current, 1)]
    matched: list[int] = []
    step = 64 if needs_bytes else BATCH
    for start in range(0, len(candidates), step):
        batch = candidates[start : start + step]
        if needs_info:
            found = {m.info.uid: m for m in mailbox.messages([c.uid for c in batch], meta)}
            batch = [c for c in batch if c.uid in found]
            for candidate in batch:
                candidate.info = found[candidate.uid].info
            if needs_bytes:
                reader = read_messages if needs_body else read_headers
                datas = await _in_thread(call, reader, [found[c.uid] for c in batch])
                for candidate, data in zip(batch, datas, strict=True):
                    candidate.data = data
                batch = [c for c in batch if c.data is not None]
        matched += [c.uid for c in batch if matcher.match(key, c)]
        for candidate in batch:  # keep one batch of bytes and metadata in memory, not all
            candidate.data = None
            candidate.info = None
        if needs_info and not needs_bytes:
            await deferLater(call.context.reactor, 0, lambda: None)  # let the reactor run
    newest = list(reversed(matched))[:limit]
    return {
        "folder": mailbox.name,
        "uids": matched,
        "total": len(matched),
        "messages": [summary_json(i) for i in _infos(mailbox, newest)],
    }


# -- routes ---------------------------------------------------------------------------------

_TO = {"type": "object", "properties": {"to": {"type": "string", "minLength": 1}},
       "required": ["to"]}  # fmt: skip
_MSG = "/folders/{folder}/messages/{uid:int}"
_BOOL = {"type": "string", "enum": ["0", "1", "true", "false"]}

ROUTES: list[Route] = [
    Route("GET", "/folders", list_folders, "List folders with their counts", tag="mail",
          response={"type": "object", "properties": {"folders": {"type": "array",
                                                                 "items": _FOLDER}}}),
    Route("POST", "/folders", deferred_handler(create_folder), "Create a folder", tag="mail",
          status=201, response=_FOLDER,
          body={"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1},
                               "special_use": {"type": ["string", "null"]}}}),
    Route("PATCH", "/folders/{folder}", deferred_handler(rename_folder), "Rename a folder",
          tag="mail", response=_FOLDER,
          body={"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}}}),
    Route("DELETE", "/folders/{folder}", deferred_handler(delete_folder),
          "Delete a folder and its messages", tag="mail", status=204),
    Route("GET", "/folders/{folder}/messages", deferred_handler(list_messages),
          "List a page of messages",
          tag="mail", response=_PAGE,
          query={"limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                 "sort": {"type": "string", "enum": list(_SORTS)},
                 "before_uid": {"type": "integer", "minimum": 1, "maximum": compose.MAX_UID + 1},
                 "after_uid": {"type": "integer", "minimum": 0, "maximum": compose.MAX_UID},
                 "offset": {"type": "integer", "minimum": 0}}),
    Route("GET", _MSG, deferred_handler(get_message),
          "A parsed message: headers, text, sanitised HTML, attachments (sets \\Seen)",
          tag="mail", query={"peek": _BOOL, "images": _BOOL}),
    Route("GET", _MSG + "/raw", deferred_handler(raw_message), "The message as delivered",
          tag="mail"),
    Route("GET", _MSG + "/attachments/{part}", deferred_handler(attachment),
          "One part of the message, decoded", tag="mail"),
    Route("PATCH", _MSG, deferred_handler(patch_flags), "Change the message's flags", tag="mail",
          body={"type": "object",
                "properties": {k: {"type": "array", "items": {"type": "string"}}
                               for k in ("flags", "flags_add", "flags_remove")}}),
    Route("POST", _MSG + "/move", deferred_handler(move_message), "Move to another folder",
          tag="mail", body=_TO),
    Route("POST", _MSG + "/copy", deferred_handler(copy_message), "Copy to another folder",
          tag="mail", body=_TO),
    Route("DELETE", _MSG, deferred_handler(delete_message),
          "Move to Trash (expunge when in Trash or with ?expunge=1)", tag="mail",
          status=204, query={"expunge": _BOOL}),
    Route("POST", _MSG + "/spam", deferred_handler(report_spam),
          "Report as spam (to Junk) or not spam (out of Junk)", tag="mail",
          body={"type": "object", "required": ["is_spam"],
                "properties": {"is_spam": {"type": "boolean"}}}),
    Route("GET", "/search", deferred_handler(search), "Search a folder with an IMAP SEARCH program",
          tag="mail",
          query={"folder": {"type": "string"}, "q": {"type": "string"},
                 "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}}),
    *compose.ROUTES,  # send and drafts: served with these (the app collects this module)
]  # fmt: skip
