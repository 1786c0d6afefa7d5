"""The mail log: one summary line per message, like Postfix's maillog.

Inbound, :class:`MailLog` (a :mod:`twisted.logger` observer) turns each SMTP ``message`` event
(:mod:`mailserver.observe.events`) into one ``maillog`` event at info level::

    3F2A9C01B7D4: from=<a@example.net> to=<b@example.org> size=1234 client=192.0.2.7
    listener=smtp.listen verdict=accept score=0.0 status=accepted (250 2.0.0 OK: queued as ...)

(the whole line is also in the event's ``maillog_line`` field, which is its format), joined,
by the SMTP queue id (``Envelope.queue_id``), to the filter's ``verdict`` event for
the same message, which comes before it (the body phase runs before the commit). A MAIL or
RCPT refused before there is a message gives a ``NOQUEUE`` line with the refused command.

Outbound, the spool's scheduler logs the ``maillog`` event itself, one per recipient and
attempt (``to=, from=, relay=, delay=, size=, dsn=, status=``), so the two directions share
the kind and the fields ``queue_id``, ``sender``, ``size``, ``result`` and ``direction``
(``in`` or ``out``).

Verdicts waiting for their message are kept in a bounded, insertion-ordered map: a verdict
whose message never comes (the session was lost) is dropped once ``keep`` newer ones wait.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from twisted.logger import ILogObserver, Logger, LogPublisher
from zope.interface import implementer

from mailserver.observe.events import MAILLOG, MESSAGE, VERDICT

__all__ = ["MailLog"]

_FORMAT = (
    "{queue_id}: from=<{sender}> to=<{to}> size={size} client={client} listener={listener} "
    "verdict={verdict} status={result} ({reply})"
)
_REFUSED = "NOQUEUE: {result}: {command} from {client} listener={listener}: {reply}"


@implementer(ILogObserver)
class MailLog:
    """Observes ``message`` and ``verdict`` events and logs the inbound summary lines to
    ``publisher`` (the publisher it observes) under the ``mailserver.maillog`` namespace."""

    def __init__(self, publisher: LogPublisher | ILogObserver, keep: int = 10_000) -> None:
        self.log = Logger(namespace="mailserver.maillog", observer=publisher)
        self.keep = keep
        self._verdicts: OrderedDict[str, Mapping[str, Any]] = OrderedDict()

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("mail_event")
        if kind == VERDICT:
            self._verdict(event)
        elif kind == MESSAGE:
            try:
                self._message(event)
            except (KeyError, TypeError, ValueError):
                pass  # an event without its promised fields makes no line

    def _verdict(self, event: Mapping[str, Any]) -> None:
        queue_id = event.get("queue_id")
        if not queue_id:
            return
        self._verdicts[queue_id] = {
            "action": event.get("action", ""),
            "score": event.get("score", 0.0),
            "rules": event.get("rules", ""),
        }
        while len(self._verdicts) > self.keep:
            self._verdicts.popitem(last=False)

    def _message(self, event: Mapping[str, Any]) -> None:
        queue_id = event["queue_id"]
        verdict = self._verdicts.pop(queue_id, None)
        fields: dict[str, Any] = {
            "mail_event": MAILLOG,
            "direction": "in",
            "queue_id": queue_id,
            "sender": event["sender"],
            "recipients": list(event["recipients"]),
            "to": ",".join(event["recipients"]),
            "size": event["size"],
            "client": event["client"],
            "listener": event["listener"],
            "session": event.get("session", ""),
            "phase": event["phase"],
            "result": event["result"],
            "code": event["code"],
            "enhanced": event["enhanced"],
            "reply": event["reply"],
            "elapsed": event["elapsed"],
        }
        if verdict is not None:
            fields.update(verdict)
            fields["verdict"] = f"{verdict['action']} score={verdict['score']:.1f}"
        else:
            fields["verdict"] = "none"
        if queue_id == "NOQUEUE":
            fields["command"] = event.get("command", "")
            template = _REFUSED
        else:
            template = _FORMAT
        # The text is made here with str.format (C): twisted.logger would format the template
        # for each text observer with its string.Formatter (pure Python), ~20 us a line.
        self.log.info("{maillog_line}", maillog_line=template.format(**fields), **fields)
