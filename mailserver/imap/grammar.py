"""The IMAP command reader: raw socket bytes in, typed commands and reader events out.

:class:`CommandReader` is fed bytes in arbitrary pieces and returns events; the events never
depend on where the pieces were split. :func:`parse_command` turns one assembled command into a
:class:`Command` whose ``args`` is a frozen value of the command's family (``parse_*``
modules), or a :class:`BadCommand`. Sources: RFC 9051 §2.2 and §9 (formal syntax; RFC 3501
compatible), §4.3 and §7.6 (literals and the continuation request), RFC 7888 (LITERAL+ /
LITERAL-), RFC 3516 §4.1 (literal8), RFC 4466 (command extensions).

Design rules:

1. A command ends at a CRLF that is not inside a literal; a literal ends a line (``{n}``
   CRLF, ``{n+}`` CRLF, ``~{n}`` CRLF) and its ``n`` octets are never scanned for CRLF or
   parsed as commands. A marker inside an unterminated quoted string is not a literal.
2. Strict CRLF (DESIGN decision 2): a bare CR or LF, or a NUL, makes the command bad; the
   command still ends at the next CRLF, so the session resynchronises there.
3. ``{n}`` (synchronizing) gives :class:`ContinuationNeeded`; the server sends ``+`` and keeps
   feeding. The reader never assumes the continuation was sent.
4. Limits: ``max_line`` counts the non-literal octets of one command (all its lines, without
   CRLFs); ``max_literal`` the literal octets of one command together. Memory stays bounded
   by these and by ``spool_threshold``: an APPEND literal larger than it is written to a
   temporary file as it arrives (a :class:`~mailserver.imap.scanner.SpooledLiteral`, handed
   to the store as a file; issue 12), never held in memory. A synchronizing literal
   over the limit gives :class:`LiteralTooBig` at once (no continuation: the client will not
   send it, RFC 7888 §4); a non-synchronizing one is read and discarded to the end of its
   command first, then reported. With ``literal_plus`` False (LITERAL-, and IMAP4rev2 §4.3)
   a non-synchronizing literal over 4096 octets is reported the same way (RFC 7888 §5 has no
   ``{n-}`` form: LITERAL- only limits ``{n+}``).
5. After a command whose next bytes are not commands (AUTHENTICATE: SASL lines, IDLE:
   ``DONE``, STARTTLS: TLS, ENABLE: may switch UTF-8 on) the reader pauses: further input is
   only buffered until the server calls :meth:`CommandReader.read_line`,
   :meth:`~CommandReader.discard_buffer` and :meth:`~CommandReader.resume`.
6. An empty line between commands is ignored.
"""

from __future__ import annotations

import re
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from mailserver.imap import parse_fetch, parse_mailbox, parse_search, parse_session
from mailserver.imap.scanner import MAX_TAG, ParseError, Scanner, SpooledLiteral

__all__ = [
    "BARRIERS",
    "Args",
    "COMMANDS",
    "UID_COMMANDS",
    "UNKNOWN_COMMAND",
    "BadCommand",
    "Command",
    "CommandReader",
    "ContinuationNeeded",
    "Event",
    "LineTooLong",
    "LiteralTooBig",
    "close_spooled",
    "parse_command",
]

DEFAULT_MAX_LINE = 65_536
DEFAULT_MAX_LITERAL = 64 * 1024 * 1024
#: APPEND literals larger than this go to a temporary file as they arrive (design rule 4).
DEFAULT_SPOOL_THRESHOLD = 256 * 1024
#: RFC 7888 §5 / RFC 9051 §4.3: LITERAL- allows non-synchronizing literals up to 4096 octets.
LITERAL_MINUS_MAX = 4096
UNKNOWN_COMMAND = "unknown command"

# A literal marker at the end of a line: literal8 "~", the size, "+" for non-synchronizing.
_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\Z")
#: The bytes of an over-long line kept to look for a literal marker at its end.
_TAIL = 48
#: A size for markers whose digits do not fit 64 bits: larger than any limit.
_HUGE = 2**64

#: The ``args`` of a :class:`Command`: None for commands without arguments.
Args = (
    parse_session.Login
    | parse_session.Authenticate
    | parse_session.Enable
    | parse_session.Id
    | parse_mailbox.Select
    | parse_mailbox.Create
    | parse_mailbox.MailboxArg
    | parse_mailbox.Rename
    | parse_mailbox.List
    | parse_mailbox.Lsub
    | parse_mailbox.Status
    | parse_mailbox.Append
    | parse_mailbox.GetQuota
    | parse_mailbox.SetQuota
    | parse_search.Search
    | parse_fetch.Fetch
    | parse_fetch.Store
    | parse_fetch.Copy
    | parse_fetch.UidExpunge
    | None
)
_Parser = Callable[[Scanner], Args]

_NO_ARGS = frozenset(
    {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "NAMESPACE",
     "IDLE", "EXPUNGE"}
)  # fmt: skip
_PARSERS: dict[str, _Parser] = {
    "LOGIN": parse_session.parse_login,
    "AUTHENTICATE": parse_session.parse_authenticate,
    "ENABLE": parse_session.parse_enable,
    "ID": parse_session.parse_id,
    "SELECT": partial(parse_mailbox.parse_select, readonly=False),
    "EXAMINE": partial(parse_mailbox.parse_select, readonly=True),
    "CREATE": parse_mailbox.parse_create,
    "DELETE": parse_mailbox.parse_mailbox_arg,
    "RENAME": parse_mailbox.parse_rename,
    "SUBSCRIBE": parse_mailbox.parse_mailbox_arg,
    "UNSUBSCRIBE": parse_mailbox.parse_mailbox_arg,
    "LIST": parse_mailbox.parse_list,
    "LSUB": parse_mailbox.parse_lsub,
    "STATUS": parse_mailbox.parse_status,
    "APPEND": parse_mailbox.parse_append,
    "GETQUOTA": parse_mailbox.parse_getquota,
    "GETQUOTAROOT": parse_mailbox.parse_mailbox_arg,
    "SETQUOTA": parse_mailbox.parse_setquota,
    "SEARCH": partial(parse_search.parse_search, uid=False),
    "FETCH": partial(parse_fetch.parse_fetch, uid=False),
    "STORE": partial(parse_fetch.parse_store, uid=False),
    "COPY": partial(parse_fetch.parse_copy, uid=False, move=False),
    "MOVE": partial(parse_fetch.parse_copy, uid=False, move=True),
}
_UID_PARSERS: dict[str, _Parser] = {
    "SEARCH": partial(parse_search.parse_search, uid=True),
    "FETCH": partial(parse_fetch.parse_fetch, uid=True),
    "STORE": partial(parse_fetch.parse_store, uid=True),
    "COPY": partial(parse_fetch.parse_copy, uid=True, move=False),
    "MOVE": partial(parse_fetch.parse_copy, uid=True, move=True),
    "EXPUNGE": parse_fetch.parse_uid_expunge,
}
#: Every command name the parser knows (UID commands as ``"UID FETCH"``).
COMMANDS = frozenset(_NO_ARGS | set(_PARSERS) | {f"UID {name}" for name in _UID_PARSERS})
UID_COMMANDS = frozenset(_UID_PARSERS)
#: After these the reader pauses (design rule 5).
BARRIERS = frozenset({"AUTHENTICATE", "IDLE", "STARTTLS", "ENABLE"})


@dataclass(frozen=True, slots=True)
class Command:
    """A complete, well-formed command.

    ``name`` is upper-cased (``"UID FETCH"`` for UID commands); ``args`` is None for commands
    without arguments, else the family's value (:class:`~mailserver.imap.parse_fetch.Fetch`,
    :class:`~mailserver.imap.parse_mailbox.Select`, ...).
    """

    tag: str
    name: str
    args: Args = None


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """A synchronizing literal of ``size`` octets ends the line: send ``+`` and keep feeding."""

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class LiteralTooBig:
    """A literal over the limit (RFC 7888 §4): answer ``tag NO [TOOBIG]`` (or BAD).

    For a synchronizing literal the client sends nothing more of the command; for a
    non-synchronizing one its octets and the rest of the command have been discarded.
    """

    tag: str
    size: int
    synchronizing: bool
    name: str = ""
    #: Within ``max_literal``, but a ``{n+}`` over 4096 octets without LITERAL+ (RFC 7888
    #: §5): a protocol error rather than a size limit.
    literal_minus: bool = False


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A command that could not be parsed; answer ``tag BAD reason`` (``*`` when there is no
    usable tag). ``code`` is a response code to include; ``BADCHARSET`` is answered with NO
    (RFC 9051 §6.4.4). The session continues with the next command."""

    tag: str
    reason: str
    name: str = ""
    code: str | None = None


Event = Command | ContinuationNeeded | LiteralTooBig | BadCommand


def close_spooled(events: list[Event] | deque[Event]) -> None:
    """Close the spooled literals of ``events`` that will never be handled (the connection
    is gone)."""
    for event in events:
        args = event.args if isinstance(event, Command) else None
        if isinstance(args, parse_mailbox.Append) and isinstance(args.message, SpooledLiteral):
            args.message.close()


class LineTooLong(ValueError):
    """:meth:`CommandReader.read_line` found no CRLF within ``max_line`` octets."""


class _Bad(Exception):
    """Raised by :func:`_head` with the event to report."""

    def __init__(self, event: BadCommand) -> None:
        super().__init__(event.reason)
        self.event = event


def _head(s: Scanner) -> tuple[str, str, _Parser | None]:
    """Read ``tag SP name`` (and the UID sub-command): (tag, name, parser or None)."""
    try:
        tag = s.tag()
    except ParseError as error:
        raise _Bad(BadCommand("*", error.reason)) from None
    name = ""
    try:
        s.space()
        name = s.keyword("command")
        if name == "UID":
            s.space()
            name = "UID " + s.keyword("command")
        parser = _UID_PARSERS.get(name[4:]) if name.startswith("UID ") else _PARSERS.get(name)
        if parser is None and name not in _NO_ARGS:
            raise ParseError(UNKNOWN_COMMAND)
    except ParseError as error:
        raise _Bad(BadCommand(tag, error.reason, name, error.code)) from None
    return tag, name, parser


def parse_command(
    data: bytes,
    *,
    utf8: bool = False,
    spooled: dict[int, SpooledLiteral] | None = None,
) -> Command | BadCommand:
    """Parse one assembled command (without its final CRLF; literals in place, except those
    in ``spooled``, keyed by the offset where their data would start).

    ``utf8`` is set once the client enabled UTF8=ACCEPT or IMAP4rev2: quoted strings may then
    hold UTF-8 and mailbox names are UTF-8 instead of modified UTF-7. A spooled literal that
    the resulting command does not hold (the command is bad, or it was not the message) is
    closed here; the one an APPEND holds belongs to the command's handler.
    """
    event = _parse_command(data, utf8, spooled)
    if spooled:
        args = event.args if isinstance(event, Command) else None
        kept = args.message if isinstance(args, parse_mailbox.Append) else None
        for literal in spooled.values():
            if literal is not kept:
                literal.close()
    return event


def _parse_command(
    data: bytes, utf8: bool, spooled: dict[int, SpooledLiteral] | None
) -> Command | BadCommand:
    s = Scanner(data, utf8=utf8, spooled=spooled)
    try:
        tag, name, parser = _head(s)
    except _Bad as bad:
        return bad.event
    try:
        args = parser(s) if parser is not None else None
        s.end()
    except ParseError as error:
        return BadCommand(tag, error.reason, name, error.code)
    return Command(tag, name, args)


def _ends_inside_quotes(line: bytes) -> bool:
    """True when ``line`` ends inside a quoted string (so a ``{n}`` there is not a literal)."""
    quoted = False
    i = 0
    n = len(line)
    while i < n:
        byte = line[i]
        if quoted and byte == 0x5C:
            i += 2
            continue
        if byte == 0x22:
            quoted = not quoted
        i += 1
    return quoted


@dataclass(frozen=True, slots=True)
class _Marker:
    size: int
    sync: bool


def _marker(line: bytes, *, quote_aware: bool) -> _Marker | None:
    match = _MARKER.search(line)
    if match is None or (quote_aware and _ends_inside_quotes(line[: match.start()])):
        return None
    digits = match.group(2)
    size = int(digits) if len(digits) <= 19 else _HUGE
    return _Marker(size, not match.group(3))


class CommandReader:
    """Incremental command reader for one connection (see the module's design rules).

    ``utf8`` may be switched on by the server after a successful ``ENABLE UTF8=ACCEPT`` or
    ``ENABLE IMAP4rev2``; it applies to the commands parsed after that.
    """

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        literal_plus: bool = True,
        *,
        utf8: bool = False,
        spool_threshold: int = DEFAULT_SPOOL_THRESHOLD,
        spool: Callable[[], BinaryIO] = tempfile.TemporaryFile,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.literal_plus = literal_plus
        self.utf8 = utf8
        #: APPEND literals over this many octets are written to a file from ``spool()``.
        self.spool_threshold = spool_threshold
        self.spool = spool
        self._spooling: BinaryIO | None = None  # the literal being written to disk
        self._spool_size = 0
        self._spool_nul = False
        self._spooled: dict[int, SpooledLiteral] = {}
        self._buffer = bytearray()
        self._paused = False
        self._discard_line = False  # read_line overflowed: drop input up to the next CRLF
        self._reset()

    def _reset(self) -> None:
        """Forget the command being assembled (closing its spooled literals)."""
        spooling, self._spooling = self._spooling, None
        if spooling is not None:
            spooling.close()
        spooled, self._spooled = self._spooled, {}
        for literal in spooled.values():
            literal.close()
        self._command = bytearray()
        self._segment = bytearray()
        self._first = True  # the segment is the command's first line
        self._overflow = False  # the segment is over the limit: only its tail is kept
        self._line_octets = 0
        self._literal_octets = 0
        self._literal_left = 0
        self._tag = "*"
        self._name = ""
        self._skipping = False  # discard the rest of the command, then emit _skip_event
        self._skip_event: Event | None = None

    def close(self) -> None:
        """The connection is gone: drop the command being assembled and its spooled
        literals (their temporary files go with them)."""
        self._reset()

    @property
    def paused(self) -> bool:
        """True after a command in :data:`BARRIERS` until :meth:`resume`."""
        return self._paused

    @property
    def buffered(self) -> int:
        """Octets received and not yet consumed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Take received bytes; return the events they complete (none while paused)."""
        self._buffer += data
        return self._run()

    def resume(self) -> list[Event]:
        """Continue after a barrier command with the input buffered meanwhile."""
        self._paused = False
        if self._discard_line:
            self._discard_line = False
            self._skipping, self._skip_event, self._overflow = True, None, True
        return self._run()

    def discard_buffer(self) -> int:
        """Drop all buffered input (STARTTLS: nothing sent before the handshake counts, RFC
        9051 §6.2.1); returns the number of octets dropped."""
        dropped = len(self._buffer)
        self._buffer.clear()
        return dropped

    def read_line(self) -> bytes | None:
        """While paused: the next CRLF-terminated line without its CRLF, or None for now.

        Raises :class:`LineTooLong` when ``max_line`` octets arrive without a CRLF; the rest of
        that line is then discarded.
        """
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if self._discard_line:
                if end < 0:
                    del buffer[: max(0, len(buffer) - 1)]  # keep a possible CR
                    return None
                del buffer[: end + 2]
                self._discard_line = False
                continue
            if end < 0:
                if len(buffer) > self.max_line + 1:
                    del buffer[: len(buffer) - 1]
                    self._discard_line = True
                    raise LineTooLong(f"no CRLF within {self.max_line} octets")
                return None
            if end > self.max_line:
                del buffer[: end + 2]
                raise LineTooLong(f"no CRLF within {self.max_line} octets")
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            return line

    # -- the state machine ------------------------------------------------------------------

    def _run(self) -> list[Event]:
        events: list[Event] = []
        data = self._buffer
        pos = 0
        while pos < len(data) and not self._paused:
            if self._literal_left:
                take = min(self._literal_left, len(data) - pos)
                if self._spooling is not None and not self._skipping:
                    self._spool(data[pos : pos + take], self._literal_left == take)
                elif not self._skipping:
                    self._command += data[pos : pos + take]
                self._literal_left -= take
                pos += take
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._append(data[pos:])
                pos = len(data)
                break
            self._append(data[pos:newline])
            pos = newline + 1
            if self._segment[-1:] == b"\r":
                del self._segment[-1:]
                self._end_of_line(events)
            else:
                self._append(b"\n")  # a bare LF: part of the line, which is now bad
        del data[:pos]
        return events

    def _spool(self, chunk: bytes | bytearray, last: bool) -> None:
        """Write literal octets to the spool file; ``last``: the literal is complete."""
        spooling = self._spooling
        assert spooling is not None
        try:
            spooling.write(chunk)
        except OSError as error:  # e.g. ENOSPC: the command fails, the session goes on
            self._spooling = None
            spooling.close()
            reason = f"Cannot store the literal: {error.strerror or error}"
            self._skip(BadCommand(self._tag, reason, self._name, "UNAVAILABLE"))
            return
        self._spool_size += len(chunk)
        self._spool_nul = self._spool_nul or b"\x00" in chunk
        if last:
            literal = SpooledLiteral(spooling, self._spool_size, self._spool_nul)
            self._spooled[len(self._command)] = literal
            self._spooling = None

    def _append(self, chunk: bytes | bytearray) -> None:
        if self._overflow:
            self._segment = (self._segment + chunk)[-_TAIL:]
            return
        self._segment += chunk
        # +1: the last octet may be the CR of the CRLF, which does not count.
        if self._line_octets + len(self._segment) > self.max_line + 1:
            self._start_overflow(self._segment)
            self._segment = self._segment[-_TAIL:]

    def _start_overflow(self, line: bytes | bytearray) -> None:
        if self._first:
            self._tag = self._tag_of(line)
        self._overflow = True
        if not self._skipping:
            self._skip(BadCommand(self._tag, "Command line too long", self._name))

    def _tag_of(self, line: bytes | bytearray) -> str:
        head = bytes(line[: min(len(line), self.max_line + 1, MAX_TAG + 1)])
        try:
            return Scanner(head).tag()
        except ParseError:
            return "*"

    def _skip(self, event: Event | None) -> None:
        self._skipping = True
        self._skip_event = event

    def _finish(self, events: list[Event], event: Event | None) -> None:
        if event is not None:
            events.append(event)
        self._reset()

    def _end_of_line(self, events: list[Event]) -> None:
        line = bytes(self._segment)
        self._segment = bytearray()
        if not self._overflow and self._line_octets + len(line) > self.max_line:
            self._start_overflow(line)
            line = line[-_TAIL:]
        if self._first and not line and not self._skipping:
            return  # design rule 6: an empty line between commands
        if self._first and not self._overflow:
            self._tag = self._tag_of(line)
        if not self._skipping:
            for bad, reason in ((b"\r", "Bare CR"), (b"\n", "Bare LF"), (b"\x00", "NUL")):
                if bad in line:
                    self._skip(BadCommand(self._tag, f"{reason} in command line"))
                    break
        marker = _marker(line, quote_aware=not self._overflow)
        if not self._skipping and marker is not None and self._first:
            try:
                self._tag, self._name, parser = _head(Scanner(line))
                if parser is None:
                    self._skip(BadCommand(self._tag, "Unexpected extra arguments", self._name))
            except _Bad as bad:
                self._skip(bad.event)
        self._first = False
        if self._skipping:
            if marker is not None and not marker.sync:
                self._literal_left = marker.size  # read and discard (RFC 7888 §4)
            else:
                self._finish(events, self._skip_event)
            return
        if marker is None:
            command = bytes(self._command + line)
            spooled, self._spooled = self._spooled, {}
            self._reset()
            event = parse_command(command, utf8=self.utf8, spooled=spooled)
            events.append(event)
            if isinstance(event, Command) and event.name in BARRIERS:
                self._paused = True
            return
        over_limit = marker.size > self.max_literal - self._literal_octets
        minus = not marker.sync and not self.literal_plus and marker.size > LITERAL_MINUS_MAX
        if over_limit or minus:
            event = LiteralTooBig(
                self._tag, marker.size, marker.sync, self._name, minus and not over_limit
            )
            if marker.sync:
                self._finish(events, event)
            else:
                self._skip(event)
                self._literal_left = marker.size
            return
        self._command += line + b"\r\n"
        self._line_octets += len(line)
        self._literal_octets += marker.size
        self._literal_left = marker.size
        if self._name == "APPEND" and marker.size > self.spool_threshold:
            try:
                self._spooling = self.spool()
                self._spool_size, self._spool_nul = 0, False
            except OSError as error:
                reason = f"Cannot store the literal: {error.strerror or error}"
                self._skip(BadCommand(self._tag, reason, self._name, "UNAVAILABLE"))
        if marker.sync:
            events.append(ContinuationNeeded(self._tag, marker.size))
