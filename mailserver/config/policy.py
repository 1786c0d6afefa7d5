"""The policy sections: [security] (login throttling, audit log), [msgauth] (SPF, DKIM, ARC,
DMARC), [filter] (spam and virus checks, rate limits, greylisting) and [tracking].

Each section is a frozen dataclass; each field is one key declared with :func:`_key` (its
default, one-line doc and check). :class:`mailserver.config.tree.Config` holds one of each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mailserver.config.checks import (
    _at_least,
    _authserv_id,
    _between,
    _clamd,
    _key,
    _networks,
    _not_negative,
    _one_of,
    _positive,
    _report_local_part,
    _zones,
)


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
