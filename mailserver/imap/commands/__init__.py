"""IMAP command handlers, one module per family.

Each handler takes the :class:`~mailserver.imap.session.Session` and a parsed
:class:`~mailserver.imap.grammar.Command` and returns a
:class:`~mailserver.imap.commands.base.Result` (or a Deferred / coroutine of one); it never
writes to the connection. :mod:`mailserver.imap.server` maps command names to handlers and
states, and sends the responses.

- :mod:`~mailserver.imap.commands.general`: CAPABILITY, NOOP, ID, ENABLE, NAMESPACE, LOGIN
- :mod:`~mailserver.imap.commands.mailbox`: SELECT, EXAMINE, CREATE, DELETE, RENAME,
  (UN)SUBSCRIBE, STATUS, CLOSE, UNSELECT; :mod:`~mailserver.imap.commands.listing`: LIST, LSUB
- :mod:`~mailserver.imap.commands.append`: APPEND
- :mod:`~mailserver.imap.commands.fetch` (+ :mod:`~mailserver.imap.commands.sections`): FETCH
- :mod:`~mailserver.imap.commands.flags`: STORE, EXPUNGE, UID EXPUNGE
- :mod:`~mailserver.imap.commands.copy`: COPY, MOVE
- :mod:`~mailserver.imap.commands.search`: SEARCH
- :mod:`~mailserver.imap.commands.idle`: the updates sent while idling
"""
