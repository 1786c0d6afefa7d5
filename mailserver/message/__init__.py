"""RFC 5322 / MIME helpers shared by the protocols and the store (a leaf package).

- :mod:`~mailserver.message.utf7`: modified UTF-7 for IMAP mailbox names (RFC 3501 §5.1.3).
- :mod:`~mailserver.message.address`: RFC 5321 mailboxes and paths, IDNA domains, subaddresses.
- :mod:`~mailserver.message.headers`: header block splitting, unfolding, RFC 2047 decoding.
- :mod:`~mailserver.message.envelope`: RFC 5322 address lists and the IMAP ENVELOPE structure.
- :mod:`~mailserver.message.mime`: byte-offset-exact MIME structure (IMAP BODYSTRUCTURE).

Only the standard library, :mod:`mailserver.types` and :mod:`mailserver.errors` are imported here.
"""
