"""IMAP4rev2 (RFC 9051) with IMAP4rev1 (RFC 3501) compatibility: the wire level.

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

1. These modules are leaves: the standard library, :mod:`mailserver.types`,
   :mod:`mailserver.errors`, :mod:`mailserver.message` and each other; no I/O, no Twisted.
2. Parsing never raises on client input: every outcome is an event (a command, a bad command,
   a continuation request, a literal too big), and the session always continues.
3. Literal octets are data, never commands; limits are checked before a continuation is sent.
4. Values are typed once, at the edge: mailbox names decoded, flags' case normalised, macros
   expanded, sequence sets parsed; a handler never sees wire syntax.
"""
