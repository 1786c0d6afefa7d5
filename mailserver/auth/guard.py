"""The guard around every login: throttle first, then the real checker, then the audit log.

:class:`GuardedChecker` wraps a credentials checker (or a list of them, one per credentials
interface, as :func:`mailserver.auth.checkers.mail_checkers` returns) so that every protocol
gets the same protection without knowing about it:

1. :meth:`Throttle.check` with the client address and the claimed account: a banned or
   waiting client is refused *without* the password being checked, with the same generic
   failure whether the account exists or not;
2. the wrapped checker decides;
3. a failure is counted, audited (``login_failed``, and ``banned`` once when it starts a
   ban) and reported only after the throttle's delay, so a brute-force client slows
   down without blocking the reactor; a success resets the pair's counters and is audited.

The client address and protocol come from the credentials (``MailLogin``/``BearerToken``
carry them; see ``smtp/sasl.py``).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.auth import audit
from mailserver.auth.audit import AuditLog
from mailserver.auth.throttle import Throttle

__all__ = ["GuardedChecker", "Throttled", "guard"]


class Throttled(UnauthorizedLogin):
    """Refused before checking: too many failures from this address or for this account.
    ``tell_user``/``temporary``: protocols show the text and use a temporary reply
    (SMTP 454 4.7.0) so clients try again later instead of giving up on the account."""

    tell_user = True
    temporary = True


def _who(credentials: Any) -> str:
    for name in ("username", "user_hint"):
        value = getattr(credentials, name, None)
        if value:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return ""


@implementer(ICredentialsChecker)
class GuardedChecker:
    """``inner`` behind ``throttle`` and ``audit`` (either may be None)."""

    def __init__(self, inner: Any, throttle: Throttle | None, audit_log: AuditLog | None) -> None:
        self.inner = inner
        self.throttle = throttle
        self.audit = audit_log
        self.credentialInterfaces = tuple(inner.credentialInterfaces)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        ip = str(getattr(credentials, "ip", "") or "")
        protocol = str(getattr(credentials, "protocol", "") or "")
        account = _who(credentials)
        if self.throttle is not None:
            decision = self.throttle.check(ip, account)
            if not decision.allowed:
                self._record(audit.THROTTLED, account, ip, audit.REFUSED, protocol,
                             reason=decision.reason)
                refused: Deferred[Any] = Deferred()
                refused.errback(Throttled("too many failed logins; try again later"))
                return refused
        d = maybeDeferred(self.inner.requestAvatarId, credentials)
        d.addCallbacks(self._ok, self._failed, callbackArgs=(ip, account, protocol),
                       errbackArgs=(ip, account, protocol))
        return d

    def _ok(self, avatar_id: Any, ip: str, account: str, protocol: str) -> Any:
        if self.throttle is not None:
            self.throttle.succeeded(ip, account)
        self._record(audit.LOGIN_OK, str(avatar_id), ip, audit.OK, protocol)
        return avatar_id

    def _failed(self, failure: Failure, ip: str, account: str, protocol: str) -> Any:
        if not failure.check(UnauthorizedLogin):
            return failure  # an internal error: not the client's fault, not counted
        self._record(audit.LOGIN_FAILED, account, ip, audit.FAILED, protocol,
                     reason=failure.getErrorMessage())
        if self.throttle is None:
            return failure
        decision = self.throttle.failed(ip, account)
        if decision.new_ban:
            self._record(audit.BANNED, account, ip, audit.REFUSED, protocol,
                         reason=decision.reason, until=decision.until)
        delay = self.throttle.delay(ip, account)
        delay.addCallback(lambda _: failure)
        return delay

    def _record(self, event: str, who: str, ip: str, outcome: str, protocol: str,
                **details: Any) -> None:
        if self.audit is not None:
            self.audit.submit(event, who=who or None, where=ip or None, outcome=outcome,
                              protocol=protocol, **details)


def guard(checkers: list[Any], throttle: Throttle | None, audit_log: AuditLog | None) -> list[Any]:
    """Every checker of a portal wrapped in one shared throttle and audit log."""
    return [GuardedChecker(checker, throttle, audit_log) for checker in checkers]
