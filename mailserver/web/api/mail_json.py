"""The JSON the mail endpoints answer with: a folder, a message summary in a list, and
their schemas for the OpenAPI document."""

from __future__ import annotations

from mailserver.types import FolderInfo, MessageInfo
from mailserver.web.api import render


def folder_json(info: FolderInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "special_use": info.special_use.value if info.special_use else None,
        "exists": info.exists,
        "unseen": info.unseen,
        "size": info.size,
        "uidvalidity": info.uidvalidity,
        "uidnext": info.uidnext,
        "subscribed": info.subscribed,
        "mailbox_id": info.mailbox_id,
    }


def summary_json(info: MessageInfo) -> dict[str, object]:
    """One message of a list: flags, sizes, dates and the cached envelope."""
    env = info.envelope
    spam = info.spam
    return {
        "uid": info.uid,
        "flags": sorted(info.flags),
        "size": info.size,
        "internaldate": info.internaldate,
        "from": render.addresses(env.get("from")),
        "to": render.addresses(env.get("to")),
        "subject": env.get("subject"),
        "date": env.get("date"),
        "message_id": env.get("message_id"),
        "has_attachments": bool(info.attachments),
        "spam": None
        if spam is None
        else {
            "score": spam.score,
            "is_spam": spam.is_spam,
            "classifier": spam.classifier,
            "reasons": list(spam.reasons),
        },
    }


_FOLDER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "special_use": {"type": ["string", "null"]},
        "exists": {"type": "integer"},
        "unseen": {"type": "integer"},
        "size": {"type": "integer"},
        "uidvalidity": {"type": "integer"},
        "uidnext": {"type": "integer"},
    },
}
_SUMMARY = {"type": "object", "properties": {"uid": {"type": "integer"},
                                             "flags": {"type": "array"}}}  # fmt: skip
_PAGE = {
    "type": "object",
    "properties": {
        "messages": {"type": "array", "items": _SUMMARY},
        "total": {"type": "integer"},
        "next": {"type": ["object", "null"]},
    },
}
