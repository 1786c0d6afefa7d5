"""POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL AUTH (RFC 5034) and UTF8 (RFC
6856), over the same store as IMAP: a session's maildrop is its account's INBOX.

**Public API** (the names in ``__all__``; every submodule's path is private and may change):
:class:`POP3Factory`, a POP3 listener built from a ``twisted.cred`` Portal, a
:class:`POP3Policy` and TLS options (or None for no STLS). USER/PASS and AUTH ask the portal
for an :class:`~mailserver.interfaces.IAccount` avatar, whose INBOX is the maildrop. Give the
STLS and the implicit-TLS factories of one process the same :class:`MaildropLocks`.

- :mod:`~mailserver.pop3.grammar`: the wire level (a leaf): the line reader, command
  parsing, status lines, byte-stuffing and TOP's line limit.
- :mod:`~mailserver.pop3.maildrop`: the session's snapshot of the INBOX and UPDATE.
- :mod:`~mailserver.pop3.sender`: RETR/TOP streamed from the message file.
- :mod:`~mailserver.pop3.server`: the protocol (states, the command table, CAPA, STLS, USER/PASS
  and AUTH through the portal, QUIT and UPDATE).
- :mod:`~mailserver.pop3.transaction`: the TRANSACTION state's commands.
- :mod:`~mailserver.pop3.factory`: :class:`~mailserver.pop3.factory.POP3Factory`, its
  :class:`~mailserver.pop3.factory.POP3Policy` and the per-process maildrop locks.
"""

from mailserver.pop3.factory import MaildropLocks, POP3Factory, POP3Policy

__all__ = ["MaildropLocks", "POP3Factory", "POP3Policy"]
