"""SMTPFactory: an ESMTP listener built from a Portal, a policy and TLS options.

Design rule: the factory holds no global state; everything a session needs comes from the
portal (its avatar decides who may receive mail), the policy (limits) and the TLS options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailserver.listener import ListenerFactory
from mailserver.smtp.server import ESMTPServer


@dataclass(frozen=True)
class SMTPPolicy:
    """The limits and choices of one SMTP listener (RFC sections where they come from)."""

    hostname: str = "localhost"
    #: RFC 1870: advertised SIZE and the cap enforced while reading; 0 = no limit.
    max_message_size: int = 50 * 1024 * 1024
    #: RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
    max_recipients: int = 100
    #: RFC 5321 §4.5.3.1.4 gives 512 octets; extensions (SIZE, DSN, AUTH, SMTPUTF8) may add
    #: to it (RFC 1869 §4.1.2, RFC 3461 §5), so the cap is configurable.
    max_line_length: int = 2048
    #: RFC 5321 §4.5.3.1.6: text lines of 1000 octets including CRLF; 0 = no check.
    max_text_line: int = 0
    #: RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
    command_timeout: float = 300.0
    #: RFC 5321 §4.5.3.2.5: 3 minutes between data blocks.
    data_timeout: float = 180.0
    #: Slow-sender defence: a message's content (DATA, or every BDAT chunk of it) must
    #: arrive within ``data_timeout`` plus one second per ``min_data_rate`` bytes; 0 = no
    #: overall limit (only ``data_timeout`` between blocks).
    min_data_rate: int = 0
    max_connections: int = 200
    max_connections_per_ip: int = 20
    #: RFC 5321 §6.3: refuse a message with more Received fields than this (at least 100).
    max_hops: int = 100
    #: Bad commands tolerated before the session is dropped with 421.
    max_errors: int = 20
    #: "syntax": any valid domain or literal; "fqdn": a dotted name or an address literal.
    helo_check: str = "syntax"
    #: "cannot": 252 (RFC 5321 §3.5.3); "disabled": 502.
    vrfy: str = "cannot"
    #: "reject" (bare CR/LF -> 521 and disconnect) or "normalize"; see smtp/data.py.
    bare_newline: str = "reject"
    #: Protocol name in Received headers ("ESMTP") and whether STARTTLS is offered.
    offer_starttls: bool = True
    #: RFC 4954 AUTH (PLAIN, LOGIN) offered; on submission ports (RFC 6409).
    auth: bool = False
    #: SASL mechanisms offered, in EHLO order (OAUTHBEARER needs a token checker).
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    #: MAIL needs a prior AUTH (530 5.7.0), and no anonymous avatar is asked for.
    require_auth: bool = False
    #: AUTH only over TLS (RFC 8314 §3, RFC 4954 §4): 538 5.7.11 before it.
    auth_needs_tls: bool = True
    #: The listener wraps connections in TLS from the first byte (port 465, RFC 8314 §3.3).
    implicit_tls: bool = False


class SMTPFactory(ListenerFactory):
    """Builds an :class:`ESMTPServer` per connection and counts connections per client."""

    protocol = ESMTPServer
    policy: SMTPPolicy

    def buildProtocol(self, addr: Any) -> ESMTPServer:
        protocol = ESMTPServer(self)
        return protocol
