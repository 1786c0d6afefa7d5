"""The one place where concrete parts are wired together (DESIGN: dependency direction 4).

:func:`build` opens the storage, makes the TLS options and puts every listener under one
:class:`MailService`. Start-up: listeners bind in ``privilegedStartService``; ``startService``
runs the store's crash recovery, and ``/healthz`` says ``ok`` once it is done. Shut-down
(SIGTERM: twistd stops the reactor and calls ``stopService``): stop accepting first, then give
in-flight work ``server.shutdown_timeout`` seconds, then close the store and the index.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from mailserver import __version__
from mailserver.api_service import api_root
from mailserver.auth.audit import AuditLog
from mailserver.auth.checkers import mail_checkers
from mailserver.auth.credentials import CredentialStore, load_or_create_secret, secret_path
from mailserver.auth.directory import LmdbDirectory
from mailserver.auth.guard import guard
from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.auth.submission import SubmissionTarget
from mailserver.auth.throttle import Throttle, policy_from_config
from mailserver.config import Config
from mailserver.db import Database
from mailserver.diskspace import FreeSpace, ReserveTarget
from mailserver.dns import Resolver
from mailserver.errors import ConfigError
from mailserver.filter.feedback import VerdictFeedback
from mailserver.filtering import Filters
from mailserver.imap.factory import IMAPFactory, IMAPPolicy, RecentClaims
from mailserver.interfaces import IDeliveryTarget
from mailserver.listener import ListenerFactory
from mailserver.msgauth.arc import ARCVerifier
from mailserver.msgauth.dkim import DKIMSigner, DKIMVerifier
from mailserver.msgauth.dmarc import DMARCEvaluator
from mailserver.msgauth.inbound import AuthenticatingTarget, InboundPolicy
from mailserver.msgauth.keys import KeyStore
from mailserver.msgauth.report_store import ReportStore
from mailserver.msgauth.report_target import ReportRecordingTarget
from mailserver.msgauth.signing import DKIMSigningTarget
from mailserver.msgauth.spf import SPFChecker
from mailserver.observe.wiring import install as observe
from mailserver.pop3.factory import MaildropLocks, POP3Factory, POP3Policy
from mailserver.reload import reload_config
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.smtp_workers import WorkerPool
from mailserver.spool.mtasts import MTASTS
from mailserver.spool.queue import LmdbSpool
from mailserver.spool.remote import RemoteCourier
from mailserver.spool.router import Router
from mailserver.spool.scheduler import RetryPolicy, Scheduler
from mailserver.store.consistency import damaged_index, verify_at_start
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.maildir_store import MaildirStore
from mailserver.store.quota import QuotaRules
from mailserver.tls import ServerTLS, ensure_self_signed
from mailserver.trace import TraceLog, TraceService
from mailserver.web.health import HealthResource
from mailserver.web.webmail import WebmailResource

log = Logger(namespace="mailserver.service")


class ListenerService(StreamServerEndpointService):
    """A listener built from an endpoint string; a failure to bind becomes a ConfigError that
    names the config key (e.g. ``http.listen``) and the endpoint."""

    def __init__(self, key: str, description: str, factory: IProtocolFactory, reactor: Any):
        super().__init__(serverFromString(reactor, description), factory)
        self.key = key
        self.description = description
        self.name = f"{key}={description}"
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        """Bind now (so ports below 1024 work before twistd drops privileges)."""
        try:
            super().privilegedStartService()
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            raise ConfigError(
                self.key,
                f"cannot listen on {self.description!r}: {reason}",
                "stop whatever holds that address or choose another endpoint",
            ) from None
        log.info("listening on {endpoint} ({key})", endpoint=self.description, key=self.key)


class MailService(MultiService):
    """The running server: listeners as child services, storage owned directly.

    ``status()`` is the document ``/healthz`` serves: ``starting`` until recovery is done,
    then ``ok``; ``stopping`` once SIGTERM arrives; ``failed`` if recovery failed.
    """

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        db: Database,
        store: MaildirStore,
        directory: LmdbDirectory,
        tls: ServerTLS,
        spool: LmdbSpool | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.db = db
        self.store = store
        self.directory = directory
        self.tls = tls
        self.spool = spool
        self.credentials: CredentialStore | None = None
        self.throttle: Throttle | None = None
        self.audit: AuditLog | None = None
        #: The filter pipeline's checks ([filter]); None when the filter is off.
        self.filters: Filters | None = None
        #: The message trace log ([tracking]); None when tracking is off.
        self.trace: TraceLog | None = None
        self.state = "starting"
        #: After stopService: True when in-flight work finished and storage closed in time.
        self.stopped_cleanly = False
        self._closed = False
        #: Every protocol factory served; told ``shutting_down`` when SIGTERM arrives.
        self.factories: list[IProtocolFactory] = []

    # --- wiring helpers (used by build) ---------------------------------------------------

    def add_listeners(
        self, key: str, descriptions: Iterable[str], factory: IProtocolFactory
    ) -> list[ListenerService]:
        """Serve ``factory`` on each endpoint string; ``key`` names them in errors and logs."""
        self.factories.append(factory)
        services = []
        for description in descriptions:
            service = ListenerService(key, description, factory, self.reactor)
            service.setServiceParent(self)
            services.append(service)
        return services

    def status(self) -> dict[str, object]:
        """The health document: status, package version and index schema version."""
        document: dict[str, object] = {"status": self.state, "version": __version__}
        if not self._closed:
            document["schema_version"] = self.db.schema_version
        return document

    # --- life cycle -----------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener (before twistd drops privileges)."""
        log.info(
            "mailserver {version} starting: config {source}, data in {data_dir}",
            version=__version__,
            source=self.config.source,
            data_dir=self.config.server.data_path,
        )
        super().privilegedStartService()

    def startService(self) -> None:
        """Start the listeners' services and recover the store (files a crash left behind)."""
        super().startService()
        self._install_sighup()
        recovering = maybeDeferred(self.store.recover)
        if self.spool is not None:
            spool = self.spool
            recovering.addCallback(lambda count: spool.recover().addCallback(lambda _: count))
        recovering.addCallbacks(self._recovered, self._recovery_failed)

    def _recovered(self, count: object) -> None:
        """Mark the server ready."""
        if self.state == "starting":
            self.state = "ok"
        log.info("store recovered ({count} message(s) indexed); ready", count=count)
        verify_at_start(self.store, self.db.env.path())  # logs what is out of step

    def _recovery_failed(self, failure: Failure) -> None:
        """Keep running (so /healthz can say so) but never report ``ok``; a damaged index
        is one error line naming the repair."""
        self.state = "failed"
        damaged = damaged_index(failure.value, self.db.env.path())  # type: ignore[arg-type]
        if damaged is not None:
            log.error("store recovery failed, /healthz reports 'failed': {damaged}",
                      damaged=damaged)
            return
        log.failure("store recovery failed; /healthz reports 'failed'", failure)

    # --- SIGHUP: reload TLS certificates and the config ----------------------------------

    def _install_sighup(self) -> None:
        """SIGHUP reloads the certificates and the config (main thread only; restored on
        stop)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previous_sighup = signal.signal(
            signal.SIGHUP, lambda _signum, _frame: self.reactor.callFromThread(self.reload)
        )

    def reload(self) -> None:
        """SIGHUP: the certificates, then the reloadable part of the config file
        (:mod:`mailserver.reload`); open sessions are kept."""
        self.reload_tls()
        reload_config(self)

    def reload_tls(self) -> bool:
        """Read every certificate again; on failure keep the old ones. True when reloaded."""
        try:
            self.tls.reload()
        except (ConfigError, OSError) as error:
            log.error("TLS reload failed, keeping the old certificates: {error}", error=error)
            return False
        log.info(
            "TLS certificates reloaded (generation {n}; SNI names: {names})",
            n=self.tls.generation,
            names=", ".join(self.tls.names()) or "none",
        )
        return True

    def stopService(self) -> Deferred[None]:
        """Stop accepting, wait for in-flight work up to the shutdown timeout, close storage."""
        Service.stopService(self)
        previous = getattr(self, "_previous_sighup", None)
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)
        self.state = "stopping"
        for factory in self.factories:
            if hasattr(factory, "shutting_down"):
                factory.shutting_down = True  # sessions get 421 on their next command
        log.info("shutting down: closing {n} listener(s)", n=len(self.services))
        stopping = [maybeDeferred(s.stopService) for s in reversed(self.services) if s.running]
        closing: Deferred[Any] = DeferredList(stopping, consumeErrors=True)
        closing.addCallback(lambda _: self._close_storage())
        return closing

    def _close_storage(self) -> Deferred[None]:
        """Close the store (bounded by shutdown_timeout), then the index; log each outcome."""
        timeout = self.config.server.shutdown_timeout
        started = self.reactor.seconds()
        log.info("listeners closed; waiting up to {timeout}s for in-flight work", timeout=timeout)

        def store_closed(_: object) -> Deferred[Any]:
            log.info("in-flight work finished; store closed")
            return self._close_db(started + timeout, clean=True)

        def store_not_closed(failure: Failure) -> Deferred[Any]:
            if failure.check(TimeoutError):
                log.error(
                    "in-flight work did not finish within {timeout}s; closing the index anyway",
                    timeout=timeout,
                )
            else:
                log.failure("closing the store failed", failure)
            return self._close_db(started + timeout, clean=False)

        closing = _within(maybeDeferred(self.store.close), timeout, self.reactor)
        closing.addCallbacks(store_closed, store_not_closed)
        return closing

    def _close_db(self, deadline: float, clean: bool) -> Deferred[None]:
        """Close the index within what is left of the deadline (at least one second);
        ``clean`` says whether the store closed in time."""
        self._closed = True
        if self.audit is not None:
            self.audit.close()
        budget = max(deadline - self.reactor.seconds(), 1.0)
        closing = _within(maybeDeferred(self.db.close), budget, self.reactor)

        def closed(_: object) -> None:
            self.stopped_cleanly = clean
            if clean:
                log.info("index closed; mailserver stopped cleanly")
            else:
                log.error("index closed; mailserver stopped uncleanly")

        def not_closed(failure: Failure) -> None:
            log.failure("closing the index failed; mailserver stopped uncleanly", failure)

        closing.addCallbacks(closed, not_closed)
        return closing


def _within(deferred: Deferred[Any], seconds: float, reactor: Any) -> Deferred[Any]:
    """A Deferred with ``deferred``'s result, or TimeoutError after ``seconds``.

    Unlike ``deferred.addTimeout`` this never cancels ``deferred`` itself: work the store
    still has in its threads is left alone rather than interrupted halfway.
    """
    result: Deferred[Any] = Deferred()
    result.addTimeout(seconds, reactor)

    def forward(outcome: object) -> None:
        if result.called:
            if isinstance(outcome, Failure):
                log.failure("late failure after the shutdown timeout", outcome)
        elif isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    deferred.addBoth(forward)
    return result


def server_tls(config: Config) -> ServerTLS:
    """The configured certificate (or the self-signed one under ``<data_dir>/tls``) plus
    the per-host certificates of ``tls.sni_dir``."""
    cert, key = config.tls.cert, config.tls.key
    if not cert:
        directory = os.path.join(config.server.data_path, "tls")
        try:
            cert, key = ensure_self_signed(directory, config.server.hostname)
        except OSError as error:
            raise _data_dir_error(config, error) from None
        log.info("using the self-signed certificate in {directory}", directory=directory)
    return ServerTLS(cert, key, config.tls.sni_dir)


def _data_dir_error(config: Config, error: OSError) -> ConfigError:
    """A ConfigError for a data directory the server cannot write."""
    where = error.filename or config.server.data_path
    return ConfigError(
        "server.data_dir",
        f"cannot write {where}: {error.strerror or error}",
        "create it writable for the server's user, or choose another data_dir",
    )


def _web_root(status: Any) -> Resource:
    """The HTTP resource tree: ``/healthz`` (``build`` mounts the REST API at ``/api``)."""
    root = Resource()
    root.putChild(b"healthz", HealthResource(status))
    return root


def open_storage(config: Config, reactor: Any) -> tuple[Database, LmdbDirectory, MaildirStore]:
    """Open the index, the directory and the maildir store under ``server.data_dir``.

    Used by :func:`build` and by the admin command line, so both see the same storage.
    Raises StoreUnavailable when the index cannot be opened.
    """
    data_dir = config.server.data_path
    db = Database.open(
        os.path.join(data_dir, "index"),
        map_size=config.store.map_size_mb * 1024 * 1024,
        sync=config.store.fsync,
        reactor=reactor,
    )
    directory = LmdbDirectory(db, reactor=reactor, bcrypt_cost=config.auth.bcrypt_cost)
    quota_rules = QuotaRules(  # RFC 9208: [store] defaults, the user's own quota_bytes first
        default_bytes=config.store.quota_mb * 1024 * 1024,
        default_messages=config.store.quota_messages,
        override=lambda address: getattr(directory.get_user(address), "quota_bytes", 0),
    )
    store = MaildirStore(
        db,
        root=os.path.join(data_dir, "mail"),
        reactor=reactor,
        fsync=config.store.fsync,
        quota_rules=quota_rules,
        free_space=FreeSpace(data_dir, config.store.min_free_mb * 1024 * 1024),
    )
    return db, directory, store


def build(config: Config, reactor: Any) -> MailService:
    """Wire the whole server for ``config`` on ``reactor``; nothing listens until started.

    Creates the data directory, the self-signed certificate if needed, and opens the index
    (synchronously). Raises ConfigError for TLS problems and StoreUnavailable when the index
    cannot be opened.
    """
    data_dir = config.server.data_path
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as error:
        raise _data_dir_error(config, error) from None
    tls = server_tls(config)
    db, directory, store = open_storage(config, reactor)
    root = MailService(config, reactor, db=db, store=store, directory=directory, tls=tls)
    site = Site(_web_root(root.status))
    site.displayTracebacks = False
    site.noisy = False
    root.add_listeners("http.listen", config.http.listen, site)
    _security(config, root, reactor)
    if config.filter.enabled:
        root.filters = Filters(config, db, directory, store.account, reactor)
        root.filters.setServiceParent(root)
    local = LocalDeliveryTarget(store, directory)
    spool = LmdbSpool(db, os.path.join(data_dir, "spool"), reactor, fsync=config.store.fsync)
    root.spool = spool
    scheduler = _scheduler(config, spool, reactor)
    router = Router(local, spool, directory, queued=scheduler.poke)
    scheduler.bounces = router
    submit = submission_targets(config, root, _reserved(root, router), reactor)
    _tracking(config, root, reactor)  # before the API, which reads root.trace
    site.resource.putChild(b"api", api_root(config, root, submit, reactor))
    site.resource.putChild(b"mail", WebmailResource())  # the web mail page, /mail/
    scheduler.setServiceParent(root)
    if config.smtp.listen:
        mx_factory = port25_factory(config, root, reactor)
        mx = root.add_listeners("smtp.listen", config.smtp.listen, mx_factory)
        if config.smtp.workers > 1:  # worker processes on the same sockets (smtp_workers.py)
            WorkerPool(config, mx, lambda: root.state, reactor).setServiceParent(root)
    submission = config.submission
    _listener_pair(
        root,
        "submission",
        submission.listen,
        submission.tls_listen,
        lambda implicit_tls: _submission_factory(
            config, root, _reserved(root, router), reactor, implicit_tls=implicit_tls
        ),
    )
    _imap_listeners(config, root, reactor)
    _pop3_listeners(config, root, reactor)
    observe(config, root, site.resource, reactor, spool=spool)  # /metrics, mail log, trace
    return root


def _tracking(config: Config, service: MailService, reactor: Any) -> None:
    """[tracking]: the trace log in the index, fed by the log events while the server runs
    (mailserver.trace); the API reads it (api_service.py)."""
    tracking = config.tracking
    if not tracking.enabled:
        return
    service.trace = TraceLog(
        service.db,
        reactor,
        max_age=tracking.max_age_days * 86400.0,
        max_records=tracking.max_records,
        flush_interval=tracking.flush_interval,
        prune_interval=tracking.prune_interval,
    )
    TraceService(service.trace).setServiceParent(service)


def _listener_pair(
    service: MailService,
    name: str,
    listen: Any,
    tls_listen: Any,
    make: Callable[[bool], ListenerFactory],
) -> None:
    """The ``name.listen`` listeners (STARTTLS offered) and the ``name.tls_listen`` ones (TLS
    from the first byte); ``make(implicit_tls)`` builds each kind's factory."""
    if listen:
        service.add_listeners(f"{name}.listen", listen, make(False))
    if tls_listen:
        factory = make(True)
        wrapped = TLSMemoryBIOFactory(service.tls, False, factory)
        service.add_listeners(f"{name}.tls_listen", tls_listen, wrapped)
        service.factories.append(factory)


def _guarded_portal(service: MailService, realm: MailRealm, scope: str) -> Portal:
    """A portal whose logins go through the guard (throttle, audit) to the password, app
    password (of ``scope``) and token checkers."""
    assert service.credentials is not None
    checkers = mail_checkers(service.directory, service.credentials, scope)
    return Portal(realm, guard(checkers, service.throttle, service.audit))


def _imap_listeners(config: Config, service: MailService, reactor: Any) -> None:
    """IMAP with STARTTLS (LOGINDISABLED before it) and with implicit TLS."""
    imap = config.imap
    recent = RecentClaims()  # \Recent is per server (RFC 3501 §2.3.2), not per listener
    _listener_pair(
        service,
        "imap",
        imap.listen,
        imap.tls_listen,
        lambda implicit_tls: _imap_factory(
            config, service, reactor, recent, implicit_tls=implicit_tls
        ),
    )


def _imap_factory(
    config: Config, service: MailService, reactor: Any, recent: RecentClaims, *,
    implicit_tls: bool,
) -> IMAPFactory:
    """An IMAP listener: the user's account from the portal, logins through the guard."""
    imap = config.imap
    realm = MailRealm(None, imap_account=service.store.account)
    portal = _guarded_portal(service, realm, "imap")
    spool_directory = os.path.join(config.server.data_path, "tmp")  # large APPEND literals
    os.makedirs(spool_directory, mode=0o700, exist_ok=True)
    policy = IMAPPolicy(
        hostname=config.server.hostname,
        idle_timeout=imap.idle_timeout,
        max_literal=imap.max_literal,
        spool_directory=spool_directory,
        max_connections=imap.max_connections,
        max_connections_per_ip=imap.max_connections_per_ip,
        auth_needs_tls=True,
        auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER"),
        implicit_tls=implicit_tls,
        offer_starttls=not implicit_tls,
    )
    feedback = service.filters.feedback() if service.filters else VerdictFeedback()
    return IMAPFactory(
        portal, policy, service.tls, reactor=reactor, recent=recent, feedback=feedback
    )


def _pop3_listeners(config: Config, service: MailService, reactor: Any) -> None:
    """POP3 with STLS (no login before it) and with implicit TLS; both listeners share one
    set of maildrop locks (RFC 1939 §8)."""
    pop3 = config.pop3
    locks = MaildropLocks()
    _listener_pair(
        service,
        "pop3",
        pop3.listen,
        pop3.tls_listen,
        lambda implicit_tls: _pop3_factory(
            config, service, reactor, locks, implicit_tls=implicit_tls
        ),
    )


def _pop3_factory(
    config: Config, service: MailService, reactor: Any, locks: MaildropLocks, *, implicit_tls: bool
) -> POP3Factory:
    """A POP3 listener: the user's account (its INBOX) from the portal, logins through the
    guard with pop3-scoped app passwords and tokens."""
    pop3 = config.pop3
    realm = MailRealm(None, imap_account=service.store.account)
    portal = _guarded_portal(service, realm, "pop3")
    policy = POP3Policy(
        hostname=config.server.hostname,
        timeout=pop3.timeout,
        max_connections=pop3.max_connections,
        max_connections_per_ip=pop3.max_connections_per_ip,
        auth_needs_tls=True,
        auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER"),
        implicit_tls=implicit_tls,
        offer_starttls=not implicit_tls,
        leave_on_server=pop3.leave_on_server,
        login_delay=pop3.login_delay,
        implementation=f"mailserver-{__version__}",
    )
    directory = service.directory

    def account_setting(user: str) -> bool | None:
        record = directory.get_user(user)  # an LMDB read: fine on the reactor
        return None if record is None else record.pop3_leave_on_server

    return POP3Factory(
        portal,
        policy,
        service.tls,
        reactor=reactor,
        locks=locks,
        account_leave_on_server=account_setting,
    )


def _security(config: Config, service: MailService, reactor: Any) -> None:
    """The credentials store (app passwords, TOTP, tokens), the login throttle and the
    audit log, shared by every listener that takes passwords."""
    data_dir = config.server.data_path
    try:
        key = load_or_create_secret(secret_path(data_dir))
    except OSError as error:
        raise _data_dir_error(config, error) from None
    service.credentials = CredentialStore(
        service.db, reactor, key, issuer=config.server.hostname
    )
    service.throttle = Throttle(reactor, policy_from_config(config.security))
    security = config.security
    service.audit = AuditLog(
        security.audit_path(data_dir),
        clock=reactor,
        max_bytes=security.audit_max_bytes,
        keep=security.audit_keep,
        fsync=security.audit_fsync,
    )


def _scheduler(config: Config, spool: LmdbSpool, reactor: Any) -> Scheduler:
    """The outbound side: DNS, the remote courier and the retry schedule."""
    delivery = config.delivery
    hostname = config.server.hostname
    resolver = Resolver(reactor, delivery.nameservers)
    mta_sts = MTASTS(reactor, resolver) if delivery.mta_sts else None
    courier = RemoteCourier(
        reactor,
        resolver,
        hostname,
        port=delivery.port,
        tls=delivery.tls,
        own_names=[hostname],
        mta_sts=mta_sts,
    )
    policy = RetryPolicy(
        first=delivery.first_retry,
        maximum=delivery.max_retry,
        give_up=delivery.give_up,
        delay_warning=delivery.delay_warning,
    )
    return Scheduler(
        spool,
        courier,
        reactor,
        hostname=hostname,
        policy=policy,
        max_in_flight=delivery.max_in_flight,
        max_per_domain=delivery.max_per_domain,
    )


def _policy_fields(config: Config) -> dict[str, Any]:
    smtp = config.smtp
    return {
        "hostname": config.server.hostname,
        "max_message_size": smtp.max_message_size,
        "max_recipients": smtp.max_recipients,
        "max_line_length": smtp.max_line_length,
        "command_timeout": smtp.command_timeout,
        "data_timeout": smtp.data_timeout,
        "min_data_rate": smtp.min_data_rate,
        "max_connections": smtp.max_connections,
        "max_connections_per_ip": smtp.max_connections_per_ip,
        "helo_check": smtp.helo_check,
        "vrfy": smtp.vrfy,
        "bare_newline": smtp.bare_newline,
        "offer_starttls": smtp.starttls,
    }


def port25_factory(config: Config, service: MailService, reactor: Any) -> SMTPFactory:
    """The port-25 SMTP factory: anonymous sessions that may deliver only to local users.
    Each ``[smtp] workers`` process builds its own with this (``worker.py``)."""
    postmaster = f"postmaster@{config.server.hostname}"
    # the free-space reserve is checked by the local target on the thread writing the body
    target: Any = LocalDeliveryTarget(
        service.store, service.directory, reserve=service.store.free_space
    )
    if config.msgauth.enabled:
        target = _inbound_authentication(config, target, reactor)
    if config.msgauth.report_address:  # DMARC aggregate reports (RFC 7489 §7.2) to the index
        target = ReportRecordingTarget(
            target,
            ReportStore(service.db),
            config.msgauth.report_address,
            service.directory.has_domain,
            reactor=reactor,
        )
    filters = service.filters

    def avatar() -> IDeliveryTarget:
        mx = MXTarget(target, service.directory, postmaster)
        return filters.inbound(mx) if filters is not None else mx

    portal = Portal(MailRealm(avatar), [AllowAnonymousAccess()])
    return SMTPFactory(portal, SMTPPolicy(**_policy_fields(config)), service.tls, reactor=reactor)


def _reserved(service: MailService, target: Any) -> ReserveTarget:
    """``target`` behind the store's free-space reserve ([store] min_free_mb): a message
    body is refused with 452 4.3.1 while the disk is too full (mailserver.diskspace)."""
    space = service.store.free_space
    assert space is not None
    return ReserveTarget(target, space, service.reactor)


def _inbound_authentication(config: Config, target: Any, reactor: Any) -> AuthenticatingTarget:
    """[msgauth]: SPF, DKIM, ARC and DMARC of port-25 mail, in front of local delivery."""
    msgauth = config.msgauth
    hostname = config.server.hostname
    resolver = Resolver(reactor, config.delivery.nameservers)
    policy = InboundPolicy(
        msgauth.authserv_id or hostname, msgauth.dmarc_reject, timeout=msgauth.timeout
    )
    return AuthenticatingTarget(
        target,
        policy,
        spf=SPFChecker(resolver, receiver=hostname, clock=reactor),
        dkim=DKIMVerifier(resolver, reactor),
        dmarc=DMARCEvaluator(resolver),
        arc=ARCVerifier(resolver, reactor),
        reactor=reactor,
    )


def submission_targets(
    config: Config, service: MailService, router: Router, reactor: Any
) -> Callable[[str], IDeliveryTarget]:
    """What an authenticated user sends through (submission and the web API): their own
    senders only, DKIM-signed with the keys of 'mailserver dkim keygen', then the filter's
    submission checks, then the router (local or the spool)."""
    hostname = config.server.hostname
    directory = service.directory
    keys = KeyStore(os.path.join(config.server.data_path, "dkim"))
    signed = DKIMSigningTarget(router, DKIMSigner(keys), reactor)
    filters = service.filters

    def target(user: str) -> IDeliveryTarget:
        own = SubmissionTarget(user, directory, signed, hostname, reactor)
        return filters.submission(own) if filters is not None else own

    return target


def _submission_factory(
    config: Config, service: MailService, router: Router, reactor: Any, *, implicit_tls: bool
) -> SMTPFactory:
    """Submission (RFC 6409): AUTH over TLS required; local and remote recipients."""
    hostname = config.server.hostname
    avatar = submission_targets(config, service, router, reactor)
    realm = MailRealm(lambda: MXTarget(router, service.directory, f"postmaster@{hostname}"), avatar)
    portal = _guarded_portal(service, realm, "smtp")
    fields = _policy_fields(config)
    fields.update(
        max_message_size=config.submission.max_message_size,
        max_recipients=config.submission.max_recipients,
        auth=True,
        auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER"),
        require_auth=True,
        implicit_tls=implicit_tls,
        offer_starttls=not implicit_tls,
    )
    return SMTPFactory(portal, SMTPPolicy(**fields), service.tls, reactor=reactor)
