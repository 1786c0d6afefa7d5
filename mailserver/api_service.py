"""Wiring of the REST API for the server (part of ``service.py``'s wiring, kept apart so each
stays readable): the :class:`~mailserver.web.api.ApiContext` the endpoints work through, and
the resource mounted at ``/api/v1``.

The web package is a protocol: it may not import the store, the directory's implementation,
roles or the filter, so everything concrete it needs is handed to it here: the guarded
password check (throttle and audit, the same as IMAP's), the roles check of
:mod:`mailserver.auth.roles`, the submission path of an authenticated user, the Junk
feedback and the classification log of the filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource

from mailserver.auth.checkers import MailLogin, PasswordChecker
from mailserver.auth.guard import GuardedChecker
from mailserver.auth.roles import Action, Actor, Forbidden, require
from mailserver.config import Config
from mailserver.filter.classifications import ClassificationLog
from mailserver.filter.feedback import VerdictFeedback
from mailserver.interfaces import IDeliveryTarget
from mailserver.web.api import ApiContext, api_resource
from mailserver.web.api.session_routes import session_hook

if TYPE_CHECKING:
    from mailserver.service import MailService

__all__ = ["api_root"]


def api_context(
    config: Config,
    service: MailService,
    submit: Callable[[str], IDeliveryTarget],
    reactor: Any,
) -> ApiContext:
    assert service.credentials is not None
    directory = service.directory
    checker = GuardedChecker(
        PasswordChecker(directory, service.credentials), service.throttle, service.audit
    )

    def authenticate(
        user: str, password: str, *, ip: str = "", otp: str | None = None
    ) -> Deferred[str]:
        login = MailLogin(user.encode("utf-8"), password.encode("utf-8"), "api", ip, otp)
        result: Deferred[str] = checker.requestAvatarId(login)
        return result

    def authorize(user: str, action: str, target: str | None = None) -> None:
        record = directory.get_user(user)
        if record is None:
            raise Forbidden(f"{user} no longer exists")
        require(Actor.of(record), Action(action), target)

    filters = service.filters
    context = ApiContext(
        reactor=reactor,
        credentials=service.credentials,
        directory=directory,
        authenticate=authenticate,
        authorize=authorize,
        store=service.store,
        config=config,
        audit=service.audit,
        submit=submit,
        feedback=filters.feedback() if filters is not None else VerdictFeedback(),
        changes=service.store.changes,
        spool=service.spool,
        trace=service.trace,
        classifications=(
            filters.classifications
            if filters is not None
            else ClassificationLog(service.db, reactor)
        ),
    )
    context.session = session_hook(context)  # the web page's cookie (with its CSRF check)
    return context


def api_root(
    config: Config,
    service: MailService,
    submit: Callable[[str], IDeliveryTarget],
    reactor: Any,
) -> Resource:
    """The ``/api`` resource: version 1 under ``/api/v1`` with the [http] limits."""
    http = config.http
    root = Resource()
    root.putChild(
        b"v1",
        api_resource(
            api_context(config, service, submit, reactor),
            rate=http.api_rate or None,
            burst=http.api_burst,
            ip_rate=http.api_ip_rate or None,
            ip_burst=http.api_ip_burst,
            max_body=http.api_max_body,
            access_ttl=http.api_access_ttl,
            refresh_ttl=http.api_refresh_ttl,
        ),
    )
    return root
