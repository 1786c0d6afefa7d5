"""MailSystem: SMTP, submission, IMAP and POP3 in this process, for tests (import it from
:mod:`mailserver.testing`; this module's path is private).

A :class:`MailSystem` wires the real protocol factories the way ``service.py`` does, over an
in-memory store (:class:`~mailserver.testing.MemoryStore`) or, given ``data_dir``, the real
maildir + LMDB store in that directory, and listens on free ports of a loopback address. Mail
that its users send to domains it does not serve is captured by a
:class:`~mailserver.testing.RecordingTarget` (:attr:`MailSystem.outbound`) instead of being
sent. It is wiring, like ``service.py``: it may import concrete classes.

Every method that changes something returns a Deferred (trial tests return it, pytest-twisted
tests await it). The ``*_blocking`` helpers and :meth:`MailSystem.call` wait instead, through
the :class:`~mailserver.testing.BlockingCall` the system was given (see
:mod:`mailserver.testing_pytest`).

Defaults that suit tests, not production: passwords are accepted without TLS
(``auth_needs_tls=False``; STARTTLS is still offered with a self-signed certificate),
bcrypt's cost is 4, and the maildir store does not fsync.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from weakref import WeakSet

from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.task import deferLater

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.directory import LmdbDirectory
from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.auth.submission import SubmissionTarget
from mailserver.db import Database
from mailserver.errors import InvalidName
from mailserver.imap.factory import IMAPFactory, IMAPPolicy, RecentClaims
from mailserver.interfaces import IDeliveryTarget, IMailStore, IUserDirectory
from mailserver.pop3.factory import MaildropLocks, POP3Factory, POP3Policy
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.spool.router import Router
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.maildir_store import MaildirStore
from mailserver.testing.blocking import BlockingCall
from mailserver.testing.memory import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.testing.recording import CapturedMessage, DeliveryTimeout, RecordingTarget
from mailserver.tls import ensure_self_signed, server_options

__all__ = ["MailSystem"]

#: The self-signed TLS options per host name, made once per process (an RSA key takes a
#: while) in a directory removed at exit.
_TLS: dict[str, Any] = {}
_TLS_DIR: list[str] = []


def self_signed_tls(hostname: str) -> Any:
    """Server TLS options with a self-signed certificate for ``hostname`` (made once per
    process, in a temporary directory removed at exit)."""
    if hostname not in _TLS:
        if not _TLS_DIR:
            _TLS_DIR.append(tempfile.mkdtemp(prefix="mailserver-tls-"))
            atexit.register(shutil.rmtree, _TLS_DIR[0], True)
        directory = os.path.join(_TLS_DIR[0], hostname)
        cert, key = ensure_self_signed(directory, hostname)
        _TLS[hostname] = server_options(cert, key)
    return _TLS[hostname]


class _SMTPFactory(SMTPFactory):
    """An SMTP factory that remembers its sessions, so that stop() can close them."""

    def buildProtocol(self, addr: Any) -> Any:
        return _remember(self, super().buildProtocol(addr))


class _IMAPFactory(IMAPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        return _remember(self, super().buildProtocol(addr))


class _POP3Factory(POP3Factory):
    def buildProtocol(self, addr: Any) -> Any:
        return _remember(self, super().buildProtocol(addr))


def _remember(factory: Any, protocol: Any) -> Any:
    """Add ``protocol`` to ``factory.sessions`` (weakly: a closed session is forgotten)."""
    sessions = factory.__dict__.setdefault("sessions", WeakSet())
    sessions.add(protocol)
    return protocol


#: Reactor turns stop() waits for aborted sessions to see their connection lost.
_CLOSE_TURNS = 100


class MailSystem:
    """SMTP (port-25 rules: local recipients only), submission (AUTH required; remote
    recipients captured in :attr:`outbound`), IMAP and POP3 over one store and directory.

    ``host`` is the loopback address every listener binds (each on a free port, known after
    :meth:`start`). ``data_dir``: None keeps everything in memory; a directory holds a real
    maildir + LMDB store (the index in ``index/``, the mail in ``mail/``). ``tls``: True
    offers STARTTLS/STLS with a self-signed certificate for ``hostname``, False offers none,
    anything else is used as the TLS options. A ``*_policy`` replaces that listener's whole
    policy. ``call`` is what the blocking helpers use (None: they raise RuntimeError).
    """

    def __init__(
        self,
        *,
        hostname: str = "mail.test",
        host: str = "127.0.0.1",
        data_dir: str | os.PathLike[str] | None = None,
        tls: Any = True,
        auth_needs_tls: bool = False,
        reactor: Any = None,
        call: BlockingCall | None = None,
        bcrypt_cost: int = 4,
        smtp_policy: SMTPPolicy | None = None,
        submission_policy: SMTPPolicy | None = None,
        imap_policy: IMAPPolicy | None = None,
        pop3_policy: POP3Policy | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.hostname = hostname
        self.host = host
        self.postmaster = f"postmaster@{hostname}"
        self._call = call
        self.tls = self_signed_tls(hostname) if tls is True else (tls or None)
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self._db: Database | None = None
        self.store: IMailStore
        self.directory: IUserDirectory
        local: IDeliveryTarget
        if self.data_dir is None:
            memory = MemoryStore()
            self.directory = MemoryDirectory(reactor, bcrypt_cost=bcrypt_cost)
            self.store = memory
            local = MemoryDeliveryTarget(memory, self.directory)
        else:
            self._db = Database.open(
                os.path.join(self.data_dir, "index"), map_size=256 << 20, reactor=reactor,
                sync=False,
            )
            maildir = MaildirStore(
                self._db, os.path.join(self.data_dir, "mail"), reactor=reactor, fsync=False
            )
            self.directory = LmdbDirectory(self._db, reactor=reactor, bcrypt_cost=bcrypt_cost)
            self.store = maildir
            local = LocalDeliveryTarget(maildir, self.directory)
        #: Where mail to domains not served here goes: captured, never sent.
        self.outbound_target = RecordingTarget()
        #: Local recipients to the store, the others to :attr:`outbound_target`.
        self.router = Router(local, self.outbound_target, self.directory)
        self.smtp_factory = self._smtp_factory(local, smtp_policy)
        self.submission_factory = self._submission_factory(submission_policy, auth_needs_tls)
        self.imap_factory: IMAPFactory = _IMAPFactory(
            self._login_portal(),
            imap_policy or IMAPPolicy(hostname=hostname, auth_needs_tls=auth_needs_tls),
            self.tls,
            reactor=reactor,
            recent=RecentClaims(),
        )
        self.pop3_factory: POP3Factory = _POP3Factory(
            self._login_portal(),
            pop3_policy or POP3Policy(hostname=hostname, auth_needs_tls=auth_needs_tls),
            self.tls,
            reactor=reactor,
            locks=MaildropLocks(),
        )
        self._ports: dict[str, Any] = {}
        self._stopped = False

    # -- wiring --------------------------------------------------------------------------

    def _login_portal(self) -> Portal:
        """Logins with the directory's passwords; the avatar is the user's account."""
        realm = MailRealm(None, imap_account=self.store.account)
        return Portal(realm, [PasswordChecker(self.directory)])

    def _smtp_factory(self, local: IDeliveryTarget, policy: SMTPPolicy | None) -> SMTPFactory:
        """Port 25: anonymous sessions whose avatar accepts local recipients only."""
        realm = MailRealm(lambda: MXTarget(local, self.directory, self.postmaster))
        return _SMTPFactory(
            Portal(realm, [AllowAnonymousAccess()]),
            policy or SMTPPolicy(hostname=self.hostname),
            self.tls,
            reactor=self.reactor,
        )

    def _submission_factory(self, policy: SMTPPolicy | None, auth_needs_tls: bool) -> SMTPFactory:
        """Submission: AUTH required; the user's own senders only, routed local or captured."""

        def submission(user: str) -> IDeliveryTarget:
            return SubmissionTarget(user, self.directory, self.router, self.hostname, self.reactor)

        realm = MailRealm(None, submission)
        if policy is None:
            policy = replace(
                SMTPPolicy(hostname=self.hostname),
                auth=True,
                require_auth=True,
                auth_needs_tls=auth_needs_tls,
            )
        return _SMTPFactory(
            Portal(realm, [PasswordChecker(self.directory)]), policy, self.tls,
            reactor=self.reactor,
        )

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Deferred[MailSystem]:
        """Listen on a free port of :attr:`host` for each protocol. Deferred[self]."""

        def listen() -> MailSystem:
            if self._stopped:
                raise RuntimeError("a stopped MailSystem cannot start again: make a new one")
            factories = {
                "smtp": self.smtp_factory,
                "submission": self.submission_factory,
                "imap": self.imap_factory,
                "pop3": self.pop3_factory,
            }
            for name, factory in factories.items():
                if name not in self._ports:
                    self._ports[name] = self.reactor.listenTCP(0, factory, interface=self.host)
            return self

        return maybeDeferred(listen)

    def stop(self) -> Deferred[None]:
        """Stop listening, close the sessions still open (so trial finds a clean reactor),
        then close the store (and the index). Deferred; idempotent."""
        self._stopped = True
        ports, self._ports = list(self._ports.values()), {}
        closing: Deferred[Any] = DeferredList(
            [maybeDeferred(port.stopListening) for port in ports], consumeErrors=True
        )
        closing.addCallback(lambda _: self._close_sessions())

        def close_storage(_: object) -> Deferred[Any]:
            store_closed = maybeDeferred(self.store.close)
            db = self._db
            if db is None:
                return store_closed
            self._db = None
            return store_closed.addBoth(lambda _: db.close())

        closing.addCallback(close_storage)
        return closing.addCallback(lambda _: None)

    @property
    def factories(self) -> list[Any]:
        """The SMTP, submission, IMAP and POP3 factories."""
        return [self.smtp_factory, self.submission_factory, self.imap_factory, self.pop3_factory]

    def _close_sessions(self) -> Deferred[None]:
        """Abort every open session, then wait (a bounded number of reactor turns) until
        each has seen its connection lost, which cancels its timers."""
        for factory in self.factories:
            for session in list(factory.__dict__.get("sessions", ())):
                transport = getattr(session, "transport", None)
                if transport is not None and getattr(transport, "connected", False):
                    transport.abortConnection()

        def settled(turns: int) -> Deferred[None]:
            if turns <= 0 or not any(f.connections for f in self.factories):
                return succeed(None)
            waiting: Deferred[Deferred[None]] = deferLater(self.reactor, 0, settled, turns - 1)
            return waiting.addCallback(lambda _: None)

        return settled(_CLOSE_TURNS)

    def port(self, name: str) -> int:
        """The port ``name`` (smtp, submission, imap or pop3) listens on."""
        if name not in self._ports:
            raise RuntimeError(f"{name} is not listening: start() the MailSystem first")
        return int(self._ports[name].getHost().port)

    @property
    def smtp(self) -> tuple[str, int]:
        """(host, port) of the port-25-style SMTP listener."""
        return self.host, self.port("smtp")

    @property
    def submission(self) -> tuple[str, int]:
        """(host, port) of the submission listener (AUTH required)."""
        return self.host, self.port("submission")

    @property
    def imap(self) -> tuple[str, int]:
        return self.host, self.port("imap")

    @property
    def pop3(self) -> tuple[str, int]:
        return self.host, self.port("pop3")

    # -- users ---------------------------------------------------------------------------

    def add_domain(self, name: str) -> Deferred[None]:
        """Serve ``name`` (nothing happens when it is served already)."""
        if self.directory.has_domain(name):
            return succeed(None)
        return maybeDeferred(self.directory.add_domain, name).addCallback(lambda _: None)

    def add_user(self, address: str, password: str = "secret") -> Deferred[None]:
        """A user with ``password`` and a mail account (its domain is served from now on)."""
        _, at, domain = address.rpartition("@")
        if not at or not domain:
            return fail(InvalidName("an address needs a domain", detail=address))
        adding = self.add_domain(domain)
        adding.addCallback(lambda _: self.directory.add_user(address, password))
        adding.addCallback(lambda _: self.store.create_account(address))
        return adding.addCallback(lambda _: None)

    def add_alias(self, source: str, targets: Iterable[str]) -> Deferred[None]:
        """Forward ``source`` (or a catch-all ``@domain``) to ``targets``."""
        adding = maybeDeferred(self.directory.add_alias, source, list(targets))
        return adding.addCallback(lambda _: None)

    # -- reading mail --------------------------------------------------------------------

    def messages(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """The bytes of every message in ``address``'s ``folder``, in UID order (as
        delivered, with the Return-Path the delivery added). Reads on the calling thread:
        from a test in another thread use :meth:`messages_blocking`."""
        mailbox = self.store.account(address).folder(folder)
        found = []
        for uid in list(mailbox.uids()):
            with mailbox.message(uid).open() as source:
                found.append(source.read())
        return found

    def wait_for_delivery(
        self, address: str, count: int = 1, folder: str = "INBOX", timeout: float = 10.0
    ) -> Deferred[list[bytes]]:
        """Fires with :meth:`messages` once ``address``'s ``folder`` holds at least ``count``
        messages (at once if it does already); fails with DeliveryTimeout, saying how many
        it holds, after ``timeout`` seconds, or with NoSuchUser/NoSuchFolder."""
        try:
            account = self.store.account(address)
            mailbox = account.folder(folder)
        except Exception as error:
            return fail(error)
        if mailbox.info().exists >= count:
            return succeed(self.messages(address, folder))
        waiting: Deferred[list[bytes]] = Deferred()

        def check() -> None:
            if waiting.called:
                return
            try:
                enough = account.folder(folder).info().exists >= count
                if enough:
                    waiting.callback(self.messages(address, folder))
            except Exception as error:  # the folder was deleted or renamed meanwhile
                waiting.errback(error)

        def expire() -> None:
            if not waiting.called:
                held = account.folder(folder).info().exists
                waiting.errback(
                    DeliveryTimeout(
                        f"{address} {folder} holds {held} message(s) after {timeout}s,"
                        f" expected {count}"
                    )
                )

        unwatch = account.watch(folder, check)
        timer = self.reactor.callLater(timeout, expire)

        def done(result: Any) -> Any:
            unwatch()
            if timer.active():
                timer.cancel()
            return result

        return waiting.addBoth(done)

    @property
    def outbound(self) -> list[CapturedMessage]:
        """Every message captured for other domains so far, oldest first."""
        return self.outbound_target.messages

    def wait_for_outbound(
        self, count: int = 1, timeout: float = 10.0
    ) -> Deferred[list[CapturedMessage]]:
        """Fires with :attr:`outbound` once at least ``count`` messages were captured; fails
        with DeliveryTimeout after ``timeout`` seconds."""
        return self.outbound_target.wait_for(count, timeout, self.reactor)

    # -- blocking helpers ----------------------------------------------------------------

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` in the reactor's context and wait for its result, through the
        ``call`` this system was given."""
        if self._call is None:
            raise RuntimeError(
                "this MailSystem has no blocking call: return or await its Deferreds (trial,"
                " pytest-twisted), or make it with call=ReactorThread() (see"
                " mailserver.testing_pytest)"
            )
        return self._call(function, *args, **kwargs)

    def add_user_blocking(self, address: str, password: str = "secret") -> None:
        """:meth:`add_user`, waiting until it is done."""
        self.call(self.add_user, address, password)

    def messages_blocking(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """:meth:`messages`, read in the reactor's context (safe from a test's thread)."""
        result: list[bytes] = self.call(self.messages, address, folder)
        return result

    def wait_for_delivery_blocking(
        self, address: str, count: int = 1, folder: str = "INBOX", timeout: float = 10.0
    ) -> list[bytes]:
        """:meth:`wait_for_delivery`, waiting for its result."""
        result: list[bytes] = self.call(self.wait_for_delivery, address, count, folder, timeout)
        return result

    def wait_for_outbound_blocking(
        self, count: int = 1, timeout: float = 10.0
    ) -> list[CapturedMessage]:
        """:meth:`wait_for_outbound`, waiting for its result."""
        result: list[CapturedMessage] = self.call(self.wait_for_outbound, count, timeout)
        return result
