"""The TRANSACTION state's commands (RFC 1939 §5, §7): STAT, LIST, UIDL, RETR, TOP, DELE,
NOOP and RSET over the session's :class:`~mailserver.pop3.maildrop.Maildrop`.

Each handler takes the server and the command and returns the response (bytes, or a
Deferred for RETR and TOP, which read the message file in the thread pool and stream it
with :class:`~mailserver.pop3.sender.MessageSender`); none of them changes the store:
that happens only in UPDATE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.errors import NoSuchMessage
from mailserver.pop3.grammar import Command, TopLimiter, err, multiline, ok, parse_number
from mailserver.pop3.sender import MessageSender, read_first

if TYPE_CHECKING:
    from mailserver.pop3.server import POP3Server

__all__ = ["dele", "list_", "noop", "retr", "rset", "stat", "top", "uidl"]

log = Logger(namespace="mailserver.pop3")


def _message(server: POP3Server, command: Command, count: int = 1) -> tuple[int, Any] | bytes:
    """The message a command names (its first argument), or the -ERR response."""
    assert server.maildrop is not None
    if len(command.args) != count:
        return err(f"{command.name} takes {count} argument(s)")
    number = parse_number(command.args[0])
    if number is None or not server.maildrop.exists(number):
        return err("No such message")
    entry = server.maildrop.entry(number)
    if entry is None:
        return err(f"Message {number} already deleted")
    return number, entry


def stat(server: POP3Server, command: Command) -> bytes:
    assert server.maildrop is not None
    count, size = server.maildrop.stat()
    return ok(f"{count} {size}")


def _listing(
    server: POP3Server, command: Command, value: Callable[[Any], object], heading: str
) -> bytes:
    """LIST and UIDL (RFC 1939 §5, §7): with a message number, ``+OK number value`` for
    it; without, ``+OK heading`` and a ``number value`` line per message not deleted."""
    assert server.maildrop is not None
    if command.args:
        found = _message(server, command)
        if isinstance(found, bytes):
            return found
        number, entry = found
        return ok(f"{number} {value(entry)}")
    lines = [f"{n} {value(e)}".encode() for n, e in server.maildrop.live()]
    return multiline(ok(heading), lines)


def list_(server: POP3Server, command: Command) -> bytes:
    assert server.maildrop is not None
    heading = ""  # one message: no heading, and no sum over the maildrop
    if not command.args:
        count, size = server.maildrop.stat()
        heading = f"{count} messages ({size} octets)"
    return _listing(server, command, lambda entry: entry.size, heading)


def uidl(server: POP3Server, command: Command) -> bytes:
    heading = "Unique-id listing follows"
    return _listing(server, command, lambda entry: entry.unique_id, heading)


def dele(server: POP3Server, command: Command) -> bytes:
    assert server.maildrop is not None
    found = _message(server, command)
    if isinstance(found, bytes):
        return found
    number, _entry = found
    server.maildrop.delete(number)
    return ok(f"Message {number} deleted")


def noop(server: POP3Server, command: Command) -> bytes:
    return ok()


def rset(server: POP3Server, command: Command) -> bytes:
    assert server.maildrop is not None
    server.maildrop.reset()
    count, size = server.maildrop.stat()
    return ok(f"Maildrop has {count} messages ({size} octets)")


def retr(server: POP3Server, command: Command) -> Any:
    found = _message(server, command)
    if isinstance(found, bytes):
        return found
    number, entry = found
    return _send(server, number, entry, None, ok(f"{entry.size} octets"))


def top(server: POP3Server, command: Command) -> Any:
    found = _message(server, command, 2)
    if isinstance(found, bytes):
        return found
    lines = parse_number(command.args[1])
    if lines is None:
        return err("TOP needs a non-negative number of lines")
    number, entry = found
    return _send(server, number, entry, TopLimiter(lines), ok("Top of message follows"))


def _send(
    server: POP3Server, number: int, entry: Any, limiter: TopLimiter | None, status: bytes
) -> Any:
    maildrop = server.maildrop
    assert maildrop is not None
    opening = server.in_thread(read_first, lambda: maildrop.open(entry))

    def opened(result: tuple[Any, bytes]) -> Deferred[Any] | None:
        source, first = result
        if server.closing:
            source.close()
            return None
        sender = MessageSender(server.transport, server.write, server.in_thread, source, limiter)
        server.sender = sender
        server.events.line_reply(status)  # the sender writes it, with the first bytes
        return sender.start(status, first).addCallbacks(sent, broken)

    def sent(_: object) -> None:
        server.sender = None
        if limiter is None:
            maildrop.retrieved.add(number)

    def broken(failure: Failure) -> None:
        # The +OK has gone out: the only honest end is to drop the connection.
        server.sender = None
        log.failure("POP3 RETR of {user} failed mid-message", failure, user=server.user)
        server.close()

    def not_opened(failure: Failure) -> bytes:
        if failure.check(NoSuchMessage):
            return err(f"Message {number} was removed by another session")
        return server.failure_response(failure)

    return opening.addCallbacks(opened, not_opened)
