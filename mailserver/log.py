"""twisted.logger set-up honouring the ``[log]`` section: a level filter and a text or JSON
observer. The process entry (``tap.py``) hands the observer to twistd; nothing here is global.
"""

from __future__ import annotations

from typing import IO

from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from mailserver.config import LogConfig


@implementer(ILogObserver)
class LevelFilter:
    """Forwards to ``sink`` the events at ``level`` or above and drops the rest.

    The same decisions as :class:`twisted.logger.FilteringLogObserver` with a
    :class:`twisted.logger.LogLevelFilterPredicate` that has only a default level (an event
    without ``log_level`` or ``log_namespace`` is dropped too), at the cost of one set
    look-up: the predicate walks the event's namespace, segment by segment, for every event,
    and several events come per message.
    """

    def __init__(self, sink: ILogObserver, level: LogLevel) -> None:
        self.sink = sink
        self.levels = frozenset(
            known for known in LogLevel.iterconstants() if known >= level  # type: ignore[operator]
        )

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_level") in self.levels and event.get("log_namespace"):
            self.sink(event)


def make_observer(config: LogConfig, stream: IO[str]) -> ILogObserver:
    """An observer writing events at ``config.level`` or above to ``stream``: one text line
    per event, or with ``format = "json"`` one JSON object per event (record-separated, as
    :func:`twisted.logger.jsonFileLogObserver` writes and :func:`eventsFromJSONLogFile` reads).
    """
    if config.format == "json":
        sink = jsonFileLogObserver(stream)
    else:
        sink = textFileLogObserver(stream)
    return LevelFilter(sink, LogLevel.levelWithName(config.level))
