"""IMAP4rev2 (RFC 9051) with IMAP4rev1 (RFC 3501) compatibility.

**Public API** (the names in ``__all__``; every submodule's path is private and may change):
:class:`IMAPFactory`, an IMAP listener built from a ``twisted.cred`` Portal, an
:class:`IMAPPolicy` and TLS options (a ``twisted.internet.ssl`` server context factory, or None
for no STARTTLS). LOGIN and AUTHENTICATE ask the portal for an
:class:`~mailserver.interfaces.IAccount` avatar, and every command works on that account
through the store interfaces, so any IAccount provider can be served. Give the factories of
one process the same :class:`RecentClaims` (\\Recent is per server)::

    portal = Portal(MyRealm(), [MyPasswordChecker()])
    factory = IMAPFactory(portal, IMAPPolicy(hostname="imap.example.org"), tls, reactor=reactor)
    reactor.listenTCP(1143, factory, interface="127.0.0.1")

The wire level:

- :mod:`~mailserver.imap.grammar`: :class:`~mailserver.imap.grammar.CommandReader`, the
  incremental reader (literals, limits, resynchronisation) and the command dispatch table.
- :mod:`~mailserver.imap.scanner`: the lexical values (atoms, strings, literals, mailboxes,
  flags, dates) every command parser is built from.
- :mod:`~mailserver.imap.parse_session`, :mod:`~mailserver.imap.parse_mailbox`,
  :mod:`~mailserver.imap.parse_fetch`, :mod:`~mailserver.imap.parse_search`: one module per
  command family, each command's arguments a frozen dataclass.
- :mod:`~mailserver.imap.sequence`: :class:`~mailserver.imap.sequence.SequenceSet`.
- :mod:`~mailserver.imap.response`: serialisation (quoting, literals, status lines, response
  codes, ENVELOPE, BODYSTRUCTURE).

Design rules:

1. The wire-level modules are leaves: the standard library, :mod:`mailserver.types`,
   :mod:`mailserver.errors`, :mod:`mailserver.message` and each other; no I/O, no Twisted.
2. Parsing never raises on client input: every outcome is an event (a command, a bad command,
   a continuation request, a literal too big), and the session always continues.
3. Literal octets are data, never commands; limits are checked before a continuation is sent.
4. Values are typed once, at the edge: mailbox names decoded, flags' case normalised, macros
   expanded, sequence sets parsed; a handler never sees wire syntax.
"""

from mailserver.imap.factory import IMAPFactory, IMAPPolicy, RecentClaims

__all__ = ["IMAPFactory", "IMAPPolicy", "RecentClaims"]
