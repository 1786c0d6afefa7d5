"""The audit log's vocabulary (event names, outcomes, :data:`WHERE_CLI`, :data:`MAX_FIELD`)
and :class:`AuditRecord`, one event as stored on one line of JSON.

See :mod:`mailserver.auth.audit` for the log itself; every name here is re-exported there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: A login (any protocol, any mechanism) succeeded; ``details``: service, mechanism.
LOGIN_OK = "login_ok"
#: A login failed (wrong password or unknown account: the same event).
LOGIN_FAILED = "login_failed"
#: A password was set or changed (by the user or an admin).
PASSWORD_CHANGED = "password_changed"
#: An app password was added; ``details``: its label, never the password.
APP_PASSWORD_ADDED = "app_password_added"
#: An app password was revoked.
APP_PASSWORD_REVOKED = "app_password_revoked"
#: TOTP was enabled for an account.
TOTP_ENABLED = "totp_enabled"
#: TOTP was disabled for an account.
TOTP_DISABLED = "totp_disabled"
#: An administrative change (domain, user, alias, role...); ``details``: action, target.
ADMIN_ACTION = "admin_action"
#: A queue operation (flush, delete, bounce...); ``details``: action, message id.
QUEUE_ACTION = "queue_action"
#: A login attempt refused without checking it, because a throttle delay was running.
THROTTLED = "throttled"
#: An IP or an account was banned (``details``: reason "ip"/"account", until).
BANNED = "banned"

#: Every event name defined here (others may be recorded; names are ``[a-z0-9_.]+``).
EVENTS = (
    LOGIN_OK,
    LOGIN_FAILED,
    PASSWORD_CHANGED,
    APP_PASSWORD_ADDED,
    APP_PASSWORD_REVOKED,
    TOTP_ENABLED,
    TOTP_DISABLED,
    ADMIN_ACTION,
    QUEUE_ACTION,
    THROTTLED,
    BANNED,
)

#: Outcomes: it happened; it was attempted and failed; it was refused without trying.
OK = "ok"
FAILED = "failed"
REFUSED = "refused"
OUTCOMES = (OK, FAILED, REFUSED)

#: ``where`` for actions taken on the command line.
WHERE_CLI = "cli"

#: Strings in who, where and details are cut to this many characters (keeps lines short).
MAX_FIELD = 500


@dataclass(frozen=True)
class AuditRecord:
    """One audit event, as stored on one line."""

    ts: str
    epoch: float
    event: str
    who: str | None
    where: str | None
    outcome: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as one line of JSON (no newline), ASCII only."""
        body = {
            "ts": self.ts,
            "epoch": self.epoch,
            "event": self.event,
            "who": self.who,
            "where": self.where,
            "outcome": self.outcome,
            "details": dict(self.details),
        }
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, line: str | bytes) -> AuditRecord:
        """Parse one line; ValueError when it is not an audit record."""
        body = json.loads(line)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                ts=body["ts"],
                epoch=float(body["epoch"]),
                event=body["event"],
                who=body.get("who"),
                where=body.get("where"),
                outcome=body["outcome"],
                details=body.get("details") or {},
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"missing or bad field: {error}") from None
        texts = (record.ts, record.event, record.outcome)
        optional = (record.who, record.where)
        if not all(isinstance(t, str) for t in texts) or not all(
            o is None or isinstance(o, str) for o in optional
        ):
            raise ValueError("a field has the wrong type")
        if not isinstance(record.details, dict):
            raise ValueError("details is not an object")
        return record

