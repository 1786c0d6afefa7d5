"""The sections for the process and what it serves: [server], [tls], [store], [auth], [smtp],
[submission], [imap], [pop3], [delivery], [http] and [log].

Each section is a frozen dataclass; each field is one key declared with :func:`_key` (its
default, one-line doc and check). :class:`mailserver.config.tree.Config` holds one of each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mailserver.config.checks import (
    _addresses,
    _between,
    _each_of,
    _endpoints,
    _key,
    _not_empty,
    _not_negative,
    _one_of,
    _positive,
)

LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")
TRACE_LISTENERS = ("smtp", "submission", "imap", "pop3")


@dataclass(frozen=True)
class ServerConfig:
    """[server]: identity, data location and process life cycle."""

    hostname: str = _key(
        "localhost",
        "The server's own host name: greetings, Received headers, the self-signed certificate.",
        _not_empty,
    )
    data_dir: str = _key(
        "var",
        "Directory for the mail store, index and generated TLS files (relative: to the cwd).",
        _not_empty,
    )
    shutdown_timeout: float = _key(
        10.0,
        "Seconds SIGTERM waits for in-flight work (deliveries, index writes) before closing.",
        _positive,
    )
    public_ipv4: tuple[str, ...] = _key(
        (),
        "The server's public IPv4 addresses, for the DNS records 'mailserver dns' prints "
        "(SPF ip4:, the host's A records); [] = name none.",
        _addresses(4),
    )
    public_ipv6: tuple[str, ...] = _key(
        (),
        "The server's public IPv6 addresses (SPF ip6:, the host's AAAA records); [] = none.",
        _addresses(6),
    )

    @property
    def data_path(self) -> str:
        """:attr:`data_dir` as an absolute path (relative paths are taken from the cwd)."""
        return os.path.abspath(self.data_dir)


@dataclass(frozen=True)
class TLSConfig:
    """[tls]: the certificate every TLS listener presents."""

    cert: str = _key(
        "",
        'PEM certificate (chain) file; "" = self-signed, made once under <data_dir>/tls/.',
    )
    key: str = _key(
        "",
        'PEM private key file for cert; "" when cert is "" (the self-signed key is generated).',
    )
    sni_dir: str = _key(
        "",
        "Directory of per-host certificates chosen by SNI: <sni_dir>/<host name>/cert.pem and "
        'key.pem; "" = one certificate for all. SIGHUP reloads every certificate.',
    )


@dataclass(frozen=True)
class StoreConfig:
    """[store]: the maildir store and its LMDB index."""

    map_size_mb: int = _key(
        1024,
        "Maximum size of the LMDB index in MiB (address space reserved, not disk used).",
        _positive,
    )
    fsync: bool = _key(
        True,
        "fsync mail and index before acknowledging; false is UNSAFE (throwaway test setups).",
    )
    quota_mb: int = _key(
        0,
        "Default quota of every account in MiB (RFC 9208 STORAGE), 0 = unlimited; "
        "'mailserver user quota' sets one account's own.",
        _between(0, 1 << 30),
    )
    quota_messages: int = _key(
        0,
        "Default limit on the number of messages of every account (RFC 9208 MESSAGE), "
        "0 = unlimited.",
        _between(0, 1 << 40),
    )
    min_free_mb: int = _key(
        100,
        "Free space in MiB kept on the data directory's disk: below it new mail is refused "
        "with 452 4.3.1 (IMAP APPEND: NO [UNAVAILABLE]) until space returns; 0 = no reserve. "
        "SIGHUP reloads it.",
        _between(0, 1 << 30),
    )


@dataclass(frozen=True)
class AuthConfig:
    """[auth]: password hashing and authentication."""

    bcrypt_cost: int = _key(
        12,
        "bcrypt work factor (log2 rounds, 4..31) for new password hashes.",
        _between(4, 31),
    )


@dataclass(frozen=True)
class SMTPConfig:
    """[smtp]: the inbound MX listener (port 25 in production): local recipients only."""

    listen: tuple[str, ...] = _key(
        ("tcp:2525:interface=127.0.0.1",),
        'Endpoint strings for inbound SMTP (production: "tcp:25"); [] disables it.',
        _endpoints,
    )
    max_message_size: int = _key(
        50 * 1024 * 1024,
        "Largest message accepted, in bytes (advertised as SIZE, RFC 1870).",
        _positive,
    )
    max_recipients: int = _key(
        100,
        "Recipients per message; RFC 5321 §4.5.3.1.8 asks for at least 100.",
        _between(100, 100_000),
    )
    max_line_length: int = _key(
        2048,
        "Longest command line in bytes incl. CRLF (RFC 5321: 512 plus extension allowances).",
        _between(512, 65536),
    )
    max_connections: int = _key(200, "Concurrent SMTP sessions in all.", _positive)
    max_connections_per_ip: int = _key(20, "Concurrent SMTP sessions per client IP.", _positive)
    command_timeout: float = _key(
        300.0,
        "Seconds a client has to send each whole command line (RFC 5321 §4.5.3.2.7: at least "
        "300); bytes of an unfinished line do not extend it.",
        _positive,
    )
    data_timeout: float = _key(
        180.0,
        "Seconds to wait for the next block of message data (RFC 5321 §4.5.3.2.5).",
        _positive,
    )
    min_data_rate: int = _key(
        500,
        "Slow-sender defence: a message (DATA or all BDAT chunks) must arrive within "
        "data_timeout plus one second per this many bytes, or 421 4.4.2 (as Postfix "
        "smtpd_min_data_rate); 0 = only data_timeout between blocks.",
        _not_negative,
    )
    helo_check: str = _key(
        "syntax",
        'EHLO/HELO name check: "syntax" (any valid name) or "fqdn" (dotted name or literal).',
        _one_of("syntax", "fqdn"),
    )
    vrfy: str = _key(
        "cannot",
        'VRFY reply: "cannot" (252, no user enumeration) or "disabled" (502).',
        _one_of("cannot", "disabled"),
    )
    bare_newline: str = _key(
        "reject",
        'Bare CR/LF: "reject" (521 and disconnect, SMTP smuggling defence) or "normalize".',
        _one_of("reject", "normalize"),
    )
    starttls: bool = _key(True, "Offer STARTTLS (RFC 3207) with the [tls] certificate.")
    workers: int = _key(
        1,
        "Processes serving the listen endpoints (tcp only): the server itself plus "
        "workers - 1 children sharing its listening sockets and data directory; "
        "connection limits and [filter] rate limits count per process.",
        _between(1, 64),
    )


@dataclass(frozen=True)
class SubmissionConfig:
    """[submission]: mail from your users' clients (RFC 6409), AUTH over TLS only."""

    listen: tuple[str, ...] = _key(
        ("tcp:2587:interface=127.0.0.1",),
        'Endpoints with STARTTLS (production: "tcp:587"); [] disables them.',
        _endpoints,
    )
    tls_listen: tuple[str, ...] = _key(
        ("tcp:2465:interface=127.0.0.1",),
        'Endpoints with implicit TLS, RFC 8314 (production: "tcp:465"); [] disables them.',
        _endpoints,
    )
    max_message_size: int = _key(
        50 * 1024 * 1024, "Largest message a user may send, in bytes (SIZE).", _positive
    )
    max_recipients: int = _key(
        100, "Recipients per message (RFC 5321 §4.5.3.1.8: at least 100).", _between(100, 100_000)
    )


@dataclass(frozen=True)
class IMAPConfig:
    """[imap]: mail clients reading the store (IMAP4rev2, RFC 9051; IMAP4rev1, RFC 3501)."""

    listen: tuple[str, ...] = _key(
        ("tcp:2143:interface=127.0.0.1",),
        'Endpoints with STARTTLS, LOGINDISABLED before it (production: "tcp:143"); [] disables '
        "them.",
        _endpoints,
    )
    tls_listen: tuple[str, ...] = _key(
        ("tcp:2993:interface=127.0.0.1",),
        'Endpoints with implicit TLS, RFC 8314 (production: "tcp:993"); [] disables them.',
        _endpoints,
    )
    max_connections: int = _key(1000, "Concurrent IMAP sessions in all.", _positive)
    max_connections_per_ip: int = _key(
        50, "Concurrent IMAP sessions per client IP (clients open several).", _positive
    )
    max_literal: int = _key(
        50 * 1024 * 1024,
        "Largest literal of one command: the APPEND size limit, in bytes (NO [TOOBIG]).",
        _positive,
    )
    idle_timeout: float = _key(
        1800.0, "Seconds of silence before a logged-in session is closed (RFC 9051: >= 30 min).",
        _between(1800, 86400),
    )


@dataclass(frozen=True)
class POP3Config:
    """[pop3]: download clients (RFC 1939 with CAPA, STLS, SASL, UIDL); they read the INBOX."""

    listen: tuple[str, ...] = _key(
        ("tcp:2110:interface=127.0.0.1",),
        'Endpoints with STLS, no login before it (production: "tcp:110"); [] disables them.',
        _endpoints,
    )
    tls_listen: tuple[str, ...] = _key(
        ("tcp:2995:interface=127.0.0.1",),
        'Endpoints with implicit TLS, RFC 8314 (production: "tcp:995"); [] disables them.',
        _endpoints,
    )
    max_connections: int = _key(500, "Concurrent POP3 sessions in all.", _positive)
    max_connections_per_ip: int = _key(20, "Concurrent POP3 sessions per client IP.", _positive)
    leave_on_server: bool = _key(
        False,
        "Keep mail a client deletes: DELE hides it for the session, QUIT marks it \\Seen"
        " instead of removing it.",
    )
    login_delay: int = _key(
        0, "Seconds between two logins of one user (RFC 2449 LOGIN-DELAY); 0: no delay.",
        _between(0, 86400),
    )
    timeout: float = _key(
        600.0, "Seconds of silence before a session is closed (RFC 1939: >= 10 min).",
        _between(600, 86400),
    )


@dataclass(frozen=True)
class DeliveryConfig:
    """[delivery]: the outbound spool: DNS, remote SMTP, retries and bounces."""

    nameservers: tuple[str, ...] = _key(
        (), 'DNS servers ("host" or "host:port"); [] uses /etc/resolv.conf.'
    )
    port: int = _key(25, "TCP port of remote mail servers (25; tests use others).", _positive)
    tls: str = _key(
        "may",
        'STARTTLS to remote servers: "may" (opportunistic), "verify" (required and '
        'verified) or "none".',
        _one_of("may", "verify", "none"),
    )
    mta_sts: bool = _key(
        True, "Honour MTA-STS policies (RFC 8461): enforce mode needs verified TLS to a listed MX."
    )
    first_retry: float = _key(300.0, "Seconds before the first retry.", _positive)
    max_retry: float = _key(4 * 3600.0, "Longest wait between retries, in seconds.", _positive)
    give_up: float = _key(
        5 * 86400.0, "Seconds after which a message is bounced (RFC 5321: 4-5 days).", _positive
    )
    delay_warning: float = _key(
        0.0, 'Seconds after which the sender gets a "delayed" DSN once; 0 = never.'
    )
    max_in_flight: int = _key(50, "Messages being delivered at once.", _positive)
    max_per_domain: int = _key(10, "Concurrent deliveries to one recipient domain.", _positive)


@dataclass(frozen=True)
class HTTPConfig:
    """[http]: the HTTP listener: /healthz and the REST API under /api/v1."""

    listen: tuple[str, ...] = _key(
        ("tcp:8080:interface=127.0.0.1",),
        "Endpoint strings to serve HTTP on (GET /healthz, /api/v1); [] disables HTTP.",
        _endpoints,
    )
    api_rate: float = _key(
        10.0, "API requests per second per token (0 = no limit).", _not_negative
    )
    api_burst: int = _key(60, "API requests a token may make at once.", _positive)
    api_ip_rate: float = _key(
        20.0, "API requests per second per client IP (0 = no limit).", _not_negative
    )
    api_ip_burst: int = _key(120, "API requests a client IP may make at once.", _positive)
    api_max_body: int = _key(1048576, "Largest API request body in bytes.", _positive)
    api_access_ttl: float = _key(900.0, "Seconds an API access token lasts.", _positive)
    api_refresh_ttl: float = _key(
        2592000.0, "Seconds an API refresh token lasts (30 days).", _positive
    )
    metrics: bool = _key(True, "Serve Prometheus metrics at GET /metrics.")
    metrics_loopback_only: bool = _key(
        True, "Answer /metrics only to clients on 127.0.0.0/8 or ::1 (others get 403)."
    )


@dataclass(frozen=True)
class LogConfig:
    """[log]: what the process logs and how."""

    level: str = _key(
        "info", "Lowest level logged: debug, info, warn or error.", _one_of(*LOG_LEVELS)
    )
    format: str = _key(
        "text",
        'Log line format: "text" or "json" (one JSON object per event).',
        _one_of(*LOG_FORMATS),
    )
    trace: tuple[str, ...] = _key(
        (),
        'Listeners whose sessions log every command and reply at info level ("smtp", '
        '"submission", "imap", "pop3"); AUTH data and passwords are shown as ***.',
        _each_of(*TRACE_LISTENERS),
    )
