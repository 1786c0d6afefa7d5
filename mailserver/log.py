"""twisted.logger set-up honouring the ``[log]`` section: a level filter and a text or JSON
observer. The process entry (``tap.py``) hands the observer to twistd; nothing here is global.
"""

from __future__ import annotations

from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from mailserver.config import LogConfig


def make_observer(config: LogConfig, stream: IO[str]) -> ILogObserver:
    """An observer writing events at ``config.level`` or above to ``stream``: one text line
    per event, or with ``format = "json"`` one JSON object per event (record-separated, as
    :func:`twisted.logger.jsonFileLogObserver` writes and :func:`eventsFromJSONLogFile` reads).
    """
    if config.format == "json":
        sink = jsonFileLogObserver(stream)
    else:
        sink = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(config.level))
    return FilteringLogObserver(sink, [predicate])
