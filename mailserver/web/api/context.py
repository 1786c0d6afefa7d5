"""Everything concrete the API uses, handed in by the wiring (``service.py``) or a test.

The web package is a protocol (DESIGN: dependency direction 2): it may not import
``mailserver.auth``, ``store``, ``spool`` or ``filter``. So :class:`ApiContext` is a bag of
plain attributes typed with interfaces or ``Any``; the wiring fills it from the running
service. Attributes an installation lacks stay None and the routes that need them answer
503 (see :meth:`ApiContext.need`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.interfaces import ITraceLog
from mailserver.web.api.routing import Problem

__all__ = ["ApiContext"]


@dataclass
class ApiContext:
    """What the API's handlers reach through ``call.context``.

    ``authenticate(user, password, *, ip="", otp=None) -> Deferred[str]``: the guarded
    account-password check (throttle first, audit after; service.py builds it from
    ``GuardedChecker(PasswordChecker(directory, credentials), throttle, audit)`` over a
    ``MailLogin(user, password, "api", ip, otp)``). It fires with the canonical address, or
    fails with ``UnauthorizedLogin``. Two-factor accounts: the checker verifies ``otp``
    (a TOTP or recovery code, through ``CredentialStore.verify_second_factor``); when the
    password was right but the code is missing or wrong it fails with an exception whose
    ``tell_user`` is true and ``temporary`` is not (``SecondFactorRequired``); a throttled
    login has both ``tell_user`` and ``temporary`` (``Throttled``).

    ``authorize(user, action, target) -> None`` raises (``Forbidden``) unless the user's
    roles allow ``action`` (an ``auth.roles.Action`` value such as ``"manage-users"``) on
    ``target``: ``roles.require(Actor.of(directory.get_user(user)), Action(action), target)``.

    ``credentials`` is the CredentialStore (tokens with scopes ``api`` and ``api-refresh``,
    app passwords, TOTP). ``store`` provides ``account(address) -> IAccount``; ``directory``
    IUserDirectory plus the LmdbDirectory admin methods; ``audit`` an AuditLog (``submit``)
    or None; ``submit(user) -> IDeliveryTarget`` the submission path of a signed-in user;
    ``feedback`` IJunkFeedback; ``changes`` the store's change notices (Server-Sent Events);
    ``spool`` ISpool; ``classifications`` the spam classification log
    (``recent(limit, message_id=..., address=...)``); ``trace`` the message trace log
    (:class:`~mailserver.interfaces.ITraceLog`, None when ``[tracking]`` is off);
    ``config`` the Config.

    ``session(request) -> Deferred[str | None]`` (optional, for the web page): the account
    of a request that carries no ``Authorization`` header but the page's session cookie, or
    None. It must do its own CSRF check for unsafe methods (the cookie is sent by the
    browser whatever page made the request).

    ``events``: the live update streams' EventHub (:mod:`mailserver.web.api.events`); made
    with its defaults on first use when None.
    """

    reactor: Any
    credentials: Any
    directory: Any
    authenticate: Callable[..., Deferred[str]]
    authorize: Callable[[str, str, str | None], None]
    store: Any = None
    config: Any = None
    audit: Any = None
    submit: Callable[[str], Any] | None = None
    feedback: Any = None
    changes: Any = None
    spool: Any = None
    classifications: Any = None
    trace: ITraceLog | None = None
    session: Callable[[Any], Any] | None = None
    events: Any = None

    def need(self, name: str) -> Any:
        """Attribute ``name``, or a 503 Problem when this server was built without it."""
        value = getattr(self, name, None)
        if value is None:
            raise Problem(503, "Service Unavailable", f"this server has no {name} configured")
        return value

    def record(self, event: str, user: str | None, ip: str, outcome: str, **details: Any) -> None:
        """An audit event from the API (``protocol=api``); nothing without an audit log."""
        if self.audit is not None:
            self.audit.submit(event, who=user, where=ip or None, outcome=outcome,
                              protocol="api", **details)
