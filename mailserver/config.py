"""The configuration tree: every key, its type, default and meaning live in this module.

A config file is TOML (read with :mod:`tomllib`). Every section and key is optional; a missing
key takes the default given here, and ``load(None)`` runs entirely on these embedded defaults.
``etc/mailserver.toml.example`` is generated from the dataclasses below by
:func:`render_example` (``mailserver config example``) and a test keeps the two in step.

Every problem raises :class:`mailserver.errors.ConfigError` naming the dotted key and the fix,
so that start-up and ``mailserver config check`` can report it as one line.

To add a key: add a field with :func:`_key` (default, one-line doc, optional check) to its
section dataclass, then regenerate the example. To add a section: add a frozen dataclass and a
field of that type on :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mailserver.errors import ConfigError

#: A field check: returns ``None`` when the value is fine, else ``(problem, fix)``.
Check = Callable[[Any], "tuple[str, str] | None"]

EMBEDDED = "embedded defaults"
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")
TRACE_LISTENERS = ("smtp", "submission", "imap", "pop3")


def _key(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare one config key: its default, its one-line documentation and an optional check."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return field(default=default, metadata=metadata)


def _positive(value: Any) -> tuple[str, str] | None:
    """Accept numbers greater than zero."""
    if value <= 0:
        return f"must be greater than 0, got {value!r}", "use a positive number"
    return None


def _not_negative(value: Any) -> tuple[str, str] | None:
    """Accept zero and positive numbers."""
    if value < 0:
        return f"must not be negative, got {value!r}", "use 0 to turn it off, or a positive number"
    return None


def _not_empty(value: str) -> tuple[str, str] | None:
    """Accept non-blank strings."""
    if not value.strip():
        return "must not be empty", "give a value or remove the key to use the default"
    return None


def _between(low: int, high: int) -> Check:
    """A check accepting integers in ``low..high`` inclusive."""

    def check(value: int) -> tuple[str, str] | None:
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}", f"use {low}..{high}"
        return None

    return check


def _one_of(*choices: str) -> Check:
    """A check accepting exactly one of ``choices``."""

    def check(value: str) -> tuple[str, str] | None:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            return f"unknown value {value!r}", f"use one of {allowed}"
        return None

    return check


def _each_of(*choices: str) -> Check:
    """A check accepting a list whose every item is one of ``choices``."""
    one = _one_of(*choices)

    def check(value: tuple[str, ...]) -> tuple[str, str] | None:
        return next((problem for item in value if (problem := one(item))), None)

    return check


def _addresses(version: int) -> Check:
    """A check accepting a list of IP addresses of one ``version`` (4 or 6)."""

    def check(value: tuple[str, ...]) -> tuple[str, str] | None:
        for index, text in enumerate(value):
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                address = None
            if address is None or address.version != version:
                example = "192.0.2.1" if version == 4 else "2001:db8::1"
                return f"[{index}] {text!r} is not an IPv{version} address", f'e.g. "{example}"'
        return None

    return check


def _endpoints(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept a list of server endpoint strings Twisted can parse (nothing is opened)."""
    for index, description in enumerate(value):
        problem = endpoint_problem(description)
        if problem:
            return (
                f"[{index}] {description!r} is not a valid listener: {problem}",
                'use a Twisted endpoint string such as "tcp:2525:interface=127.0.0.1"',
            )
    return None


def endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable server endpoint string, or ``None`` if it is.

    Parses with :func:`twisted.internet.endpoints.serverFromString` against a MemoryReactor,
    so nothing listens and no file is touched beyond what the endpoint's parser reads.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception as error:  # parsers raise ValueError, TypeError, KeyError, SSL errors
        return str(error) or type(error).__name__
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        return f"port {port} is out of range 0..65535"
    return None


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


def _at_least(low: float) -> Check:
    """A check accepting numbers of at least ``low``."""

    def check(value: float) -> tuple[str, str] | None:
        if value < low:
            return f"must be at least {low}, got {value!r}", f"use a number >= {low}"
        return None

    return check


@dataclass(frozen=True)
class SecurityConfig:
    """[security]: brute-force throttling of logins and the audit log."""

    throttle_base_delay: float = _key(
        1.0,
        "Seconds the next login attempt waits after a first failure (per IP and per account).",
        _at_least(0),
    )
    throttle_factor: float = _key(
        2.0, "Each further failure multiplies that wait by this factor.", _at_least(1)
    )
    throttle_max_delay: float = _key(
        30.0, "Longest wait after a failure, in seconds.", _at_least(0)
    )
    throttle_ip_ban_after: int = _key(
        10, "Failed logins from one IP (IPv6: one /64), all accounts, that ban it.", _positive
    )
    throttle_ip_ban_seconds: float = _key(900.0, "Seconds an IP ban lasts.", _positive)
    throttle_account_ban_after: int = _key(
        20,
        "Failed logins to one account, from all IPs, that ban it (even the right password).",
        _positive,
    )
    throttle_account_ban_seconds: float = _key(900.0, "Seconds an account ban lasts.", _positive)
    throttle_decay_seconds: float = _key(
        300.0, "Each failure counter forgets one failure every this many seconds.", _positive
    )
    throttle_max_tracked: int = _key(
        100_000, "Most IPs (and accounts) tracked; the least recently seen are dropped.", _positive
    )
    audit_log: str = _key(
        "",
        'Audit log file (JSON lines, rotated); "" = <data_dir>/audit/audit.jsonl.',
    )
    audit_max_bytes: int = _key(
        10 * 1024 * 1024, "Size in bytes at which the audit log is rotated.", _positive
    )
    audit_keep: int = _key(
        10, "Rotated audit logs kept (audit.jsonl.1 .. .N; the oldest is deleted).", _positive
    )
    audit_fsync: bool = _key(
        False, "fsync each audit line (survives a power loss; costs a disk flush per event)."
    )

    def audit_path(self, data_path: str) -> str:
        """The absolute audit log path, given :attr:`ServerConfig.data_path`."""
        if self.audit_log:
            return os.path.abspath(self.audit_log)
        return os.path.join(data_path, "audit", "audit.jsonl")


def _authserv_id(value: str) -> tuple[str, str] | None:
    """Accept "" or a domain-like name (RFC 8601 §2.5: the authserv-id names this host)."""
    if value and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?", value):
        return f"not a host name: {value!r}", 'e.g. "mx.example.org", or "" for [server] hostname'
    return None


def _report_local_part(value: str) -> tuple[str, str] | None:
    """Accept "" or a plain local part (no @, no spaces)."""
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", value):
        return f"not a local part: {value!r}", 'e.g. "dmarc-reports" (no @domain), or ""'
    return None


@dataclass(frozen=True)
class MsgAuthConfig:
    """[msgauth]: SPF, DKIM, ARC and DMARC checks of mail arriving on port 25."""

    enabled: bool = _key(
        True,
        "Check SPF, DKIM, ARC and DMARC of port-25 mail and add an Authentication-Results "
        "header (DNS through [delivery] nameservers).",
    )
    authserv_id: str = _key(
        "",
        'The name in our Authentication-Results headers; "" = [server] hostname.',
        _authserv_id,
    )
    dmarc_reject: str = _key(
        "refuse",
        'DMARC p=reject failures: "refuse" (550 5.7.1 at the end of DATA) or "quarantine" '
        "(filed into Junk, like p=quarantine failures).",
        _one_of("refuse", "quarantine"),
    )
    timeout: float = _key(
        20.0, "Seconds each check may take before it counts as temperror.", _positive
    )
    report_address: str = _key(
        "dmarc-reports",
        "Local part receiving DMARC aggregate reports at any served domain (the rua of "
        "'mailserver dns'): port-25 mail to it is parsed and summarised for 'mailserver "
        "dmarc'; works with enabled = false too; \"\" = off.",
        _report_local_part,
    )


def _zones(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept DNS list zones in postscreen's syntax (parsed by mailserver.filter.dnsbl)."""
    from mailserver.filter.dnsbl import parse_zone

    for index, text in enumerate(value):
        try:
            parse_zone(text)
        except ValueError as error:
            return f"[{index}] {error}", 'e.g. "zen.spamhaus.org=127.0.0.[2..11]*3 reject"'
    return None


def _clamd(value: str) -> tuple[str, str] | None:
    """Accept "" (off) or a clamd address."""
    from mailserver.filter.clamd import parse_address

    if value:
        try:
            parse_address(value)
        except ValueError as error:
            return str(error), 'use "unix:/run/clamav/clamd.ctl" or "tcp:127.0.0.1:3310"'
    return None


def _networks(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept a list of IP networks (or single addresses)."""
    for index, text in enumerate(value):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"[{index}] {text!r} is not an IP network", 'e.g. "192.0.2.0/24" or "::1/128"'
    return None


@dataclass(frozen=True)
class FilterConfig:
    """[filter]: spam and virus checks of port-25 mail (rate limits, viruses: submission too)."""

    enabled: bool = _key(True, "Run the filter pipeline (the checks below) on port 25.")
    quarantine_score: float = _key(
        5.0,
        "Points (SpamAssassin-style, positive = spammy) from which a message is filed into "
        "the recipient's Junk folder.",
        _positive,
    )
    reject_score: float = _key(
        0.0,
        "Points from which a message is refused with 550 5.7.1 at the end of DATA; 0 = never "
        "(spam is filed into Junk instead).",
        _not_negative,
    )
    timeout: float = _key(30.0, "Seconds each check may take per SMTP phase.", _positive)
    add_headers: bool = _key(
        True, "Add X-Spam-Status and X-Spam-Report headers that explain every verdict."
    )
    lists: bool = _key(
        True, "Honour the allow and block lists ('mailserver filter allow|block')."
    )
    spam: bool = _key(
        True,
        "Score messages with the trained classifiers ('mailserver spam train'); no model "
        "trained = no score.",
    )
    spam_points: float = _key(
        6.0,
        "Points a message gets at classifier certainty (probability 1); a message at the "
        "classifier's own threshold gets quarantine_score, clear ham 0.",
        _positive,
    )
    learn_global: bool = _key(
        False,
        "Also train the global model (not only the user's own) when a user moves mail into "
        "or out of Junk.",
    )
    dnsbl_zones: tuple[str, ...] = _key(
        (),
        'Block lists for the client address: "NAME[=PATTERN][*POINTS][ reject]", e.g. '
        '"zen.spamhaus.org*3" (RFC 5782).',
        _zones,
    )
    dnswl_zones: tuple[str, ...] = _key(
        (),
        'Allow lists for the client address: "NAME[=PATTERN][*POINTS][ trusted]", '
        "points default -1.",
        _zones,
    )
    rhsbl_zones: tuple[str, ...] = _key(
        (), "Block lists for the MAIL FROM domain, same syntax as dnsbl_zones.", _zones
    )
    dnsbl_timeout: float = _key(
        5.0, "Seconds to wait for each list before counting the client as not listed.", _positive
    )
    dnsbl_selftest_interval: float = _key(
        3600.0,
        "Seconds between the RFC 5782 §5 self-tests of each DNS list (a list that lists "
        "127.0.0.1 or INVALID is ignored until it passes again); 0 = no self-tests.",
        _not_negative,
    )
    signals: bool = _key(
        True,
        "Score reverse DNS and HELO signals (no PTR, PTR not confirmed, HELO not a FQDN, "
        "HELO forged as ours...).",
    )
    rate_window: float = _key(
        60.0, "Seconds over which the per-address limits below count.", _positive
    )
    rate_connections: int = _key(
        30, "Connections per client address (IPv6: per /64) per window; 0 = no limit.",
        _not_negative,
    )
    rate_messages: int = _key(
        60, "Messages (MAIL) per client address per window; 0 = no limit.", _not_negative
    )
    rate_recipients: int = _key(
        300, "Recipients (RCPT) per client address per window; 0 = no limit.", _not_negative
    )
    rate_user_window: float = _key(
        3600.0, "Seconds over which the per-user (submission) limits count.", _positive
    )
    rate_user_messages: int = _key(
        500, "Messages per authenticated user per user window; 0 = no limit.", _not_negative
    )
    rate_user_recipients: int = _key(
        2000, "Recipients per authenticated user per user window; 0 = no limit.", _not_negative
    )
    rate_exempt_networks: tuple[str, ...] = _key(
        ("127.0.0.0/8", "::1/128"), "Client networks the per-address limits skip.", _networks
    )
    greylist: bool = _key(
        False,
        "Greylist unknown (client network, sender, recipient) triplets with 450 4.2.0 "
        "(RFC 6647); authenticated and allow-listed senders are never greylisted.",
    )
    greylist_delay: float = _key(
        60.0, "Seconds a new triplet must wait before a retry is accepted.", _positive
    )
    greylist_window: float = _key(
        86400.0, "Seconds after the first try within which the retry must come.", _positive
    )
    greylist_max_age: float = _key(
        35 * 86400.0, "Seconds a passed triplet is remembered without new mail.", _positive
    )
    greylist_auto_allow: int = _key(
        5, "Passes after which a client network is no longer greylisted; 0 = never.",
        _not_negative,
    )
    greylist_exempt_networks: tuple[str, ...] = _key(
        (), "Client networks never greylisted.", _networks
    )
    greylist_known_domain_passes: int = _key(
        1,
        "Passes after which a sender domain whose SPF passes for the client is no longer "
        "greylisted; 0 = off.",
        _not_negative,
    )
    greylist_ipv4_prefix: int = _key(
        24, "IPv4 prefix length grouping client addresses into one greylist network.",
        _between(8, 32),
    )
    greylist_ipv6_prefix: int = _key(
        64, "IPv6 prefix length grouping client addresses into one greylist network.",
        _between(16, 128),
    )
    greylist_prune_interval: float = _key(
        3600.0, "Seconds between deletions of expired greylist records.", _positive
    )
    clamd: str = _key(
        "",
        'clamd address for virus scanning: "unix:/run/clamav/clamd.ctl" or '
        '"tcp:127.0.0.1:3310"; "" = no virus scanning.',
        _clamd,
    )
    clamd_timeout: float = _key(
        20.0, "Seconds for one scan (connect, upload, reply); keep it below timeout.", _positive
    )
    virus_fail: str = _key(
        "open",
        'When clamd cannot scan: "open" delivers marked unscanned, "closed" answers 451 '
        "4.7.1 so the sender retries.",
        _one_of("open", "closed"),
    )
    virus_max_size: int = _key(
        25 * 1024 * 1024,
        "Largest message sent to clamd, in bytes (0 = no limit); larger ones are delivered "
        "unscanned with a header. Set clamd's StreamMaxLength at least this large.",
        _not_negative,
    )


@dataclass(frozen=True)
class TrackingConfig:
    """[tracking]: the message trace log behind the admin API's "where is my mail"."""

    enabled: bool = _key(
        True,
        "Record each message's path (SMTP session, filter verdict, storage, queue, delivery "
        "attempts, DSNs) in the index for GET /api/v1/admin/track.",
    )
    max_age_days: float = _key(
        30.0, "Days a trace record is kept; older ones are pruned.", _positive
    )
    max_records: int = _key(
        1_000_000, "Trace records kept at most; the oldest are pruned first.", _positive
    )
    flush_interval: float = _key(
        1.0,
        "Seconds trace records wait in memory to be written together (one index commit for "
        "all of them); a crash loses at most this many seconds of records, never mail.",
        _positive,
    )
    prune_interval: float = _key(
        3600.0, "Seconds between prunings of old trace records.", _positive
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration; each field of a dataclass type is one TOML section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    log: LogConfig = field(default_factory=LogConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    msgauth: MsgAuthConfig = field(default_factory=MsgAuthConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    #: Where this configuration came from: a file path or "embedded defaults" (not a key).
    source: str = EMBEDDED


# --- reading -------------------------------------------------------------------------------


def load(path: str | None) -> Config:
    """Read the TOML file at ``path``; ``None`` gives the embedded defaults.

    Raises ConfigError for an unreadable file, a TOML syntax error or any invalid key.
    """
    if path is None:
        return Config()
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise ConfigError(
            path,
            f"cannot read the config file: {error.strerror or error}",
            "check the --config path, or leave --config out to run on embedded defaults",
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(path, f"not UTF-8 ({error.reason})", "save the file as UTF-8") from None
    return loads(text, source=path)


def loads(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in errors and in Config.source."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            source, f"TOML syntax error: {error}", "fix the TOML syntax at that line"
        ) from None
    return from_mapping(document, source=source)


def from_mapping(document: Mapping[str, Any], source: str = "<mapping>") -> Config:
    """Build a validated Config from parsed TOML (nested dicts); unknown keys are errors."""
    sections = _sections()
    values: dict[str, Any] = {}
    for name, body in document.items():
        if name not in sections:
            raise ConfigError(name, "unknown section", _suggest(name, list(sections), "section"))
        if not isinstance(body, Mapping):
            raise ConfigError(
                name, f"expected a table, got {_type_name(body)}", f"write it as [{name}]"
            )
        values[name] = _section(name, sections[name], body)
    config = Config(**values, source=source)
    _check_files(config)
    return config


def _sections() -> dict[str, type]:
    """Section name -> section dataclass, in declaration order."""
    hints = typing.get_type_hints(Config)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _section(name: str, cls: type, body: Mapping[str, Any]) -> Any:
    """Validate one section's keys and values and build its dataclass."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in body.items():
        dotted = f"{name}.{key}"
        if key not in fields:
            known = [f"{name}.{k}" for k in fields]
            raise ConfigError(dotted, "unknown key", _suggest(dotted, known, "key"))
        value = _coerce(dotted, hints[key], raw)
        check = fields[key].metadata.get("check")
        if check is not None:
            result = check(value)
            if result is not None:
                raise ConfigError(dotted, *result)
        values[key] = value
    return cls(**values)


def _coerce(dotted: str, expected: Any, raw: Any) -> Any:
    """Check ``raw`` against the annotated type and convert it (int -> float, list -> tuple)."""
    if expected is bool:
        ok = isinstance(raw, bool)
    elif expected is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif expected is float:
        ok = isinstance(raw, int | float) and not isinstance(raw, bool)
        raw = float(raw) if ok else raw
    elif expected is str:
        ok = isinstance(raw, str)
    elif typing.get_origin(expected) is tuple:
        item = typing.get_args(expected)[0]
        ok = isinstance(raw, list) and all(isinstance(v, item) for v in raw)
        raw = tuple(raw) if ok else raw
    else:  # pragma: no cover - a new annotation needs a branch here
        raise TypeError(f"unsupported config type {expected!r} for {dotted}")
    if not ok:
        raise ConfigError(
            dotted,
            f"expected {_expected_name(expected)}, got {_type_name(raw)} {_short(raw)}",
            f"write it like the default: {dotted.split('.')[-1]} = {_example_value(dotted)}",
        )
    return raw


def _check_files(config: Config) -> None:
    """Refuse configured certificate/key files that are missing or given without the other."""
    tls = config.tls
    if bool(tls.cert) != bool(tls.key):
        missing = "tls.key" if tls.cert else "tls.cert"
        raise ConfigError(
            missing,
            "tls.cert and tls.key must be given together",
            'set both, or set both to "" for a self-signed certificate',
        )
    for key, path in (("tls.cert", tls.cert), ("tls.key", tls.key)):
        if path and not os.path.isfile(path):
            raise ConfigError(
                key,
                f"file not found: {os.path.abspath(path)}",
                'fix the path, or set tls.cert and tls.key to "" for a self-signed certificate',
            )


def _suggest(name: str, known: list[str], what: str) -> str:
    """A fix naming the closest known ``what`` (a section or a key), or listing them all."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known {what}s: {', '.join(known)}"


def _expected_name(expected: Any) -> str:
    """A reader's name for an annotated type."""
    if typing.get_origin(expected) is tuple:
        return f"a list of {_expected_name(typing.get_args(expected)[0]).split()[-1]}s"
    names = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}
    return names.get(expected, str(expected))


def _type_name(value: Any) -> str:
    """A reader's name for the type of a parsed TOML value."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    return names.get(type(value), "table" if isinstance(value, Mapping) else type(value).__name__)


def _short(value: Any) -> str:
    """``value`` in TOML notation, cut to a readable length."""
    text = _toml_value(value) if not isinstance(value, Mapping) else "{...}"
    return text if len(text) <= 40 else text[:37] + "..."


def _example_value(dotted: str) -> str:
    """The default of ``dotted`` in TOML notation."""
    section, key = dotted.split(".", 1)
    return _toml_value(getattr(getattr(Config(), section), key))


# --- writing -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    """Render a scalar or a list as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")


def render_example() -> str:
    """The annotated example config: every section, every key commented out with its default
    and its one-line doc. ``etc/mailserver.toml.example`` is exactly this text."""
    lines = [
        "# mailserver configuration (TOML).",
        "#",
        "# Generated from mailserver/config.py: `mailserver config example > "
        "etc/mailserver.toml.example`.",
        "# Every key is optional and shown commented out with its default; uncomment to change.",
        "# Check a file with `mailserver config check --config PATH`.",
    ]
    defaults = Config()
    for name, cls in _sections().items():
        summary = (cls.__doc__ or "").strip().split(":", 1)[-1].strip()
        lines += ["", f"[{name}]", f"# {summary[:1].upper()}{summary[1:]}"]
        for f in dataclasses.fields(cls):
            value = getattr(getattr(defaults, name), f.name)
            lines += ["", f"# {f.metadata['doc']}", f"#{f.name} = {_toml_value(value)}"]
    return "\n".join(lines) + "\n"
