"""CAPABILITY, NOOP, ID, ENABLE, NAMESPACE and LOGIN (RFC 9051 §6.1-6.3, RFC 2971, RFC 5161).

LOGOUT, STARTTLS, AUTHENTICATE and IDLE talk to the connection itself and live in
:mod:`mailserver.imap.server` / :mod:`mailserver.imap.commands.idle`.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver import __version__
from mailserver.imap import parse_session, response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.session import ENABLEABLE, Session

__all__ = ["capability", "enable", "id_", "login", "namespace", "noop"]

log = Logger(namespace="mailserver.imap")


def capability(session: Session, command: Command) -> Result:
    """``* CAPABILITY ...`` for the current state (RFC 9051 §6.1.1)."""
    line = response.untagged(*[c.encode("ascii") for c in ["CAPABILITY", *session.capabilities()]])
    return Result(text="CAPABILITY completed", untagged=[line])


def noop(session: Session, command: Command) -> Result:
    """Nothing; the server reports mailbox changes after it (RFC 9051 §6.1.2)."""
    return Result(text=f"{command.name} completed")


def id_(session: Session, command: Command) -> Result:
    """RFC 2971: the server's name and version; the client's values are only logged."""
    args = command.args
    if isinstance(args, parse_session.Id) and args.params:
        log.info("{peer}: client ID {params}", peer=session.peer, params=dict(args.params))
    fields = [
        response.quoted("name"),
        response.quoted("mailserver"),
        response.quoted("version"),
        response.quoted(__version__),
    ]
    return Result(text="ID completed", untagged=[response.untagged(b"ID", response.plist(fields))])


def enable(session: Session, command: Command) -> Result:
    """RFC 5161: ``* ENABLED`` lists the extensions this command newly enabled; unknown ones
    are ignored. IMAP4rev2 and UTF8=ACCEPT switch the session to UTF-8 (RFC 9051 §6.3.1,
    RFC 6855 §3); the server tells the command reader before reading on. CONDSTORE and
    QRESYNC (which implies CONDSTORE) are RFC 7162's."""
    args = command.args
    assert isinstance(args, parse_session.Enable)
    newly: list[str] = []
    for name in args.capabilities:
        if name in ENABLEABLE:
            spelled = "IMAP4rev2" if name == "IMAP4REV2" else name
            if spelled not in session.enabled:
                session.enabled.add(spelled)
                newly.append(spelled)
    if "IMAP4rev2" in session.enabled:
        session.rev2 = True
    session.utf8 = bool(session.enabled & {"IMAP4rev2", "UTF8=ACCEPT"})
    if session.enabled & {"CONDSTORE", "QRESYNC"}:  # RFC 7162 §3.2: QRESYNC implies it
        session.use_condstore()
    line = response.untagged(b"ENABLED", *[name.encode("ascii") for name in newly])
    return Result(text="ENABLE completed", untagged=[line])


def namespace(session: Session, command: Command) -> Result:
    """One personal namespace, no prefix, "/" as the delimiter (RFC 2342, RFC 9051 §6.3.10)."""
    line = response.untagged(b"NAMESPACE", b'(("" "/"))', b"NIL", b"NIL")
    return Result(text="NAMESPACE completed", untagged=[line])


def login(session: Session, command: Command) -> Result | Deferred[Any]:
    """RFC 9051 §6.2.3: refused with ``NO [PRIVACYREQUIRED]`` before TLS when the policy
    wants TLS (LOGINDISABLED is advertised then)."""
    args = command.args
    assert isinstance(args, parse_session.Login)
    if not session.auth_allowed():
        raise no("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
    credentials = UsernamePassword(args.username.encode("utf-8"), args.password.encode("utf-8"))
    d = session.authenticate(credentials)
    return d.addCallbacks(session.logged_in, session.login_failed)
