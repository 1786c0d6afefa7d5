"""twisted.logger set-up honouring the ``[log]`` section: a level filter and a text or JSON
observer. The process entry (``tap.py``) hands the observer to twistd; nothing here is global.
"""

from __future__ import annotations

from typing import IO

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
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


class SecondClock:
    """Twisted's text log time stamp (:func:`twisted.logger.formatTime`, RFC 3339 to the
    second), computed once per second instead of for every line (a time zone, a datetime
    and a strftime each)."""

    def __init__(self) -> None:
        self.second: int | None = None
        self.text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self.second:
            self.text = formatTime(float(second))
            self.second = second
        return self.text


def text_observer(stream: IO[str]) -> FileLogObserver:
    """What :func:`twisted.logger.textFileLogObserver` writes (the same lines), with the time
    stamp from a :class:`SecondClock`."""
    clock = SecondClock()
    return FileLogObserver(stream, lambda event: formatEventAsClassicLogText(event, clock))


def make_observer(config: LogConfig, stream: IO[str]) -> ILogObserver:
    """An observer writing events at ``config.level`` or above to ``stream``: one text line
    per event, or with ``format = "json"`` one JSON object per event (record-separated, as
    :func:`twisted.logger.jsonFileLogObserver` writes and :func:`eventsFromJSONLogFile` reads).
    """
    if config.format == "json":
        sink = jsonFileLogObserver(stream)
    else:
        sink = text_observer(stream)
    return LevelFilter(sink, LogLevel.levelWithName(config.level))
