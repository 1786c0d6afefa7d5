"""The structured log events behind the metrics, the mail log and the protocol trace.

Each is an ordinary :mod:`twisted.logger` event with a ``mail_event`` field naming its kind;
observers select on that field and the fields below, never on the text. The protocol servers
emit them through :class:`SessionEvents`; the spool and the filter add the fields to the log
calls they already make. This module is a leaf: it imports nothing else from ``mailserver``, so
every protocol package may use it.

========== ==================================================================================
kind       fields
========== ==================================================================================
connection listener, peer, state (``open``, ``closed`` or ``refused``)
command    only when the listener's trace is on: protocol, listener, session, peer, verb
           (``UNKNOWN`` for a verb the server does not know, so the label set stays
           bounded), line (the redacted command)
reply      protocol, listener, session, peer, verb (the command answered), code (SMTP ``250``,
           IMAP ``OK``/``NO``/``BAD``, POP3 ``+OK``/``-ERR``), elapsed (seconds since the
           command arrived), commands (the verbs of the commands that arrived since the
           previous reply: normally the one answered, none for a second reply to it such as
           SMTP's after 354; the metrics count commands from this); ``text`` when the
           listener's trace is on (all lines of an SMTP reply; IMAP's tagged line and POP3's
           first line, never message data)
auth       protocol, listener, session, result (``success`` or ``failure``)
message    SMTP only: protocol, listener, session, client, queue_id, sender, recipients,
           size, phase (``mail``, ``rcpt`` or ``data``), result (``accepted``, ``deferred``
           or ``rejected``), code, enhanced, reply (the reply's first line), elapsed (end of
           the message content to the reply; 0 for a refused MAIL or RCPT, whose
           queue_id is ``NOQUEUE`` and whose ``command`` is the refused line, redacted)
verdict    the filter's decision on a message: queue_id, action, score, rules
maillog    the one summary line per message and direction (see :mod:`.maillog`; outbound
           ones come from the spool's scheduler)
========== ==================================================================================

Design rules:

1. Cheap on the reactor: one event (one dict) per reply, which also names the commands it
   answers, and a command event of its own only when the listener's trace is on (several
   commands come per message). Command lines are decoded, redacted and formatted only
   when tracing; otherwise the events carry only bounded labels and are emitted at debug
   level.
2. Credentials never reach an event: AUTH/AUTHENTICATE initial responses, every SASL
   response line, POP3 ``PASS`` and the ``APOP`` digest are replaced by ``***`` before an
   event is made; IMAP ``LOGIN`` and ``AUTHENTICATE`` arguments keep their secrets out of
   ``repr`` (``parse_session``), and are redacted here as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Sequence
from typing import Any

from twisted.logger import Logger, LogLevel

from mailserver.randomness import token_hex

__all__ = [
    "AUTH",
    "COMMAND",
    "CONNECTION",
    "MAILLOG",
    "MESSAGE",
    "REPLY",
    "SECRET",
    "VERDICT",
    "SessionEvents",
    "imap_line",
    "redact",
    "redact_sasl",
]

CONNECTION = "connection"
COMMAND = "command"
REPLY = "reply"
AUTH = "auth"
MESSAGE = "message"
VERDICT = "verdict"
MAILLOG = "maillog"

#: What a credential is replaced by in a trace.
SECRET = "***"
#: Longest command or reply text a trace event keeps.
MAX_TRACE = 512

_HIDE_AFTER_TWO = frozenset({"AUTH", "APOP"})


def redact(line: bytes) -> str:
    """A command line of SMTP or POP3 as a trace shows it: decoded, at most :data:`MAX_TRACE`
    characters, with the SASL initial response of ``AUTH``, the password of ``PASS`` and the
    digest of ``APOP`` replaced by :data:`SECRET`."""
    text = line.decode("utf-8", "replace")
    words = text.split(None, 2)  # any white space separates, as a lenient client might
    verb = words[0].upper() if words else ""
    if verb in _HIDE_AFTER_TWO and len(words) > 2:
        text = f"{words[0]} {words[1]} {SECRET}"
    elif verb == "PASS" and len(text) > len("PASS"):  # anything after the verb
        text = f"{words[0]} {SECRET}"
    return text[:MAX_TRACE]


def redact_sasl(line: bytes) -> str:
    """A SASL response line: only the ``*`` that cancels an exchange is shown as it is."""
    return "*" if line.strip() == b"*" else SECRET


def imap_line(tag: str, name: str, args: object) -> str:
    """An IMAP command as a trace shows it: tag, name and the parsed arguments; LOGIN and
    AUTHENTICATE show no secret."""
    if args is None:
        return f"{tag} {name}"
    if name == "LOGIN":
        return f"{tag} LOGIN {getattr(args, 'username', '')} {SECRET}"
    if name == "AUTHENTICATE":
        initial = getattr(args, "initial_response", None)
        shown = f" {SECRET}" if initial is not None else ""
        return f"{tag} AUTHENTICATE {getattr(args, 'mechanism', '')}{shown}"
    return f"{tag} {name} {args!r}"[:MAX_TRACE]


def verb_of(line: bytes, known: Container[str]) -> str:
    """The upper-cased first word of a command line if it is in ``known``, else UNKNOWN."""
    word = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
    return word if word in known else "UNKNOWN"


def _result(code: str) -> str:
    if code.startswith("2"):
        return "accepted"
    return "deferred" if code.startswith("4") else "rejected"


class SessionEvents:
    """The events of one protocol session (one connection).

    ``factory`` is the listener's factory: its ``listener`` (the config key, e.g.
    ``submission.tls_listen``) labels the events and its ``trace`` decides whether command
    and reply texts are logged, at info level; without a trace they are debug events with
    labels only. ``session`` is a short random id that tells concurrent sessions apart.
    """

    def __init__(self, log: Logger, protocol: str, factory: Any) -> None:
        self.log = log
        self.protocol = protocol
        self.listener = str(getattr(factory, "listener", "") or protocol)
        self.trace = bool(getattr(factory, "trace", False))
        self.level = LogLevel.info if self.trace else LogLevel.debug
        self.session = token_hex(4)
        self.peer = ""
        self.verb = ""
        self._clock = getattr(factory, "reactor", None)
        self._started = 0.0
        self._line = b""
        self._message: dict[str, Any] | None = None
        self._commands: list[str] = []  # arrived since the last reply (rule 1)

    def _emit(self, level: LogLevel, format: str, **fields: Any) -> None:
        """What ``Logger.emit`` does, without its check of ``level`` against every level
        (a sorted list built per call): rule 1, these events come several per message. Every
        event names its protocol, listener and session."""
        log = self.log
        fields.update(
            protocol=self.protocol,
            listener=self.listener,
            session=self.session,
            log_logger=log,
            log_level=level,
            log_namespace=log.namespace,
            log_source=None,
            log_format=format,
            log_time=time.time(),
        )
        log.observer(fields)

    def _now(self) -> float:
        clock = self._clock
        return float(clock.seconds()) if clock is not None else time.time()

    # -- commands and replies -------------------------------------------------------------

    def command(self, verb: str, text: Callable[[], str] | None = None) -> None:
        """A command arrived: ``verb`` is a bounded label; ``text()`` (called only when
        tracing) is its redacted form. The next reply event names it in ``commands``; its
        own event is made only when tracing (rule 1)."""
        self.verb = verb
        self._started = self._now()
        self._commands.append(verb)
        if not self.trace:
            return
        line = text() if text is not None else verb
        self._emit(
            self.level,
            "{listener} {session} {peer} > {line}",
            mail_event=COMMAND,
            peer=self.peer,
            verb=verb,
            line=line,
        )

    def line_command(self, line: bytes, known: Container[str]) -> None:
        """A command line of a line protocol (SMTP, POP3); ``known`` are its verbs."""
        self._line = line
        self.command(verb_of(line, known), lambda: redact(line))

    def sasl_line(self, line: bytes) -> None:
        """A SASL response line: traced as ``***`` (``*`` when cancelling); no command."""
        if self.trace:
            self._emit(
                self.level,
                "{listener} {session} {peer} > {line}",
                mail_event=COMMAND,
                peer=self.peer,
                verb="",
                line=redact_sasl(line),
            )

    def reply(
        self, code: str, text: Callable[[], str] | None = None, enhanced: str = ""
    ) -> None:
        """A reply was sent; ``text()`` (called only when tracing, or for a ``message``
        event) is what the client saw. The first reply after :meth:`content`, or a 4xx/5xx
        to SMTP MAIL or RCPT, also makes a ``message`` event."""
        now = self._now()
        elapsed = now - self._started if self._started else 0.0
        shown = text() if self.trace and text is not None else code
        commands = self._commands
        if commands:
            self._commands = []
        self._emit(
            self.level,
            "{listener} {session} {peer} < {text}",
            mail_event=REPLY,
            peer=self.peer,
            verb=self.verb,
            code=code,
            elapsed=elapsed,
            commands=tuple(commands),
            text=shown[:MAX_TRACE],
        )
        if self._message is not None:
            message, self._message = self._message, None
            self._emit_message(message, code, enhanced, now - message.pop("at"), text)
        elif self.protocol == "smtp" and self.verb in ("MAIL", "RCPT") and code[:1] in "45":
            refused = {
                "queue_id": "NOQUEUE",
                "sender": "",
                "recipients": (),
                "size": 0,
                "phase": self.verb.lower(),
                "command": redact(self._line),
            }
            self._emit_message(refused, code, enhanced, 0.0, text)

    def line_reply(self, data: bytes) -> None:
        """A response of a line protocol (POP3): its status word is the code (``+OK``,
        ``-ERR``, ``+`` for a SASL challenge), its first line the text."""
        if not data:
            return
        end = data.find(b"\r\n")
        first = data if end < 0 else data[:end]
        status = first.split(b" ", 1)[0].decode("ascii", "replace")
        code = status if status in ("+OK", "-ERR") else "+"
        self.reply(code, lambda: first.decode("utf-8", "replace"))

    # -- messages (SMTP) ------------------------------------------------------------------

    def content(
        self,
        queue_id: str,
        sender: object,
        recipients: Sequence[object],
        size: int,
        message_id: str | None = None,
        helo: str | None = None,
    ) -> None:
        """The content of a message is complete (end of DATA, BDAT LAST): the next reply is
        its outcome. ``message_id`` and ``helo`` are added to the event when known."""
        self._message = {
            "queue_id": queue_id,
            "sender": str(sender or ""),
            "recipients": tuple(str(r) for r in recipients),
            "size": size,
            "phase": "data",
            "at": self._now(),
        }
        if message_id:
            self._message["message_id"] = message_id
        if helo:
            self._message["helo"] = helo

    def _emit_message(
        self,
        message: dict[str, Any],
        code: str,
        enhanced: str,
        elapsed: float,
        text: Callable[[], str] | None,
    ) -> None:
        reply = text() if text is not None else code
        first = reply.split(" | ", 1)[0][:MAX_TRACE]
        self._emit(
            LogLevel.debug,
            "{queue_id}: {phase} from {client}: {result} ({reply})",
            mail_event=MESSAGE,
            client=self.peer,
            result=_result(code),
            code=code,
            enhanced=enhanced,
            reply=first,
            elapsed=elapsed,
            **message,
        )

    # -- logins ---------------------------------------------------------------------------

    def auth(self, success: bool) -> dict[str, str]:
        """Fields that make a login's log line an ``auth`` event (``**`` them into it)."""
        return {
            "mail_event": AUTH,
            "protocol": self.protocol,
            "listener": self.listener,
            "session": self.session,
            "result": "success" if success else "failure",
        }
