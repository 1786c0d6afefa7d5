"""The ``[log]`` level filter decides exactly as Twisted's level predicate with one default
level would, and make_observer writes only the events it lets through."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
)

from mailserver.config import LogConfig
from mailserver.log import LevelFilter, make_observer

LEVELS = list(LogLevel.iterconstants())


def events() -> list[dict[str, Any]]:
    """Events at every level and namespace depth, plus ones lacking a level or namespace."""
    found: list[dict[str, Any]] = []
    for level in LEVELS:
        for namespace in ("mailserver.smtp.server", "x", ""):
            found.append({"log_level": level, "log_namespace": namespace, "n": len(found)})
    found.append({"log_namespace": "mailserver", "n": len(found)})
    found.append({"log_level": LogLevel.error, "n": len(found)})
    return found


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_level_filter_passes_what_twisteds_predicate_passes(level: LogLevel) -> None:
    """For each configured level, the same events pass as through FilteringLogObserver
    with LogLevelFilterPredicate(defaultLogLevel=level)."""
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    reference = FilteringLogObserver(
        theirs.append, [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    mine = LevelFilter(ours.append, level)
    for event in events():
        mine(dict(event))
        reference(dict(event))
    assert [e["n"] for e in ours] == [e["n"] for e in theirs]
    assert ours, "some events pass at every level (critical at least)"


def test_make_observer_writes_events_at_the_level_and_above() -> None:
    """With level = "warn", an info event is not written and a warn event is."""
    stream = io.StringIO()
    observer = make_observer(LogConfig(level="warn"), stream)
    base = {"log_namespace": "mailserver.test", "log_time": 0.0}
    observer({**base, "log_level": LogLevel.info, "log_format": "quiet line"})
    observer({**base, "log_level": LogLevel.warn, "log_format": "loud line"})
    text = stream.getvalue()
    assert "loud line" in text
    assert "quiet line" not in text


def test_text_lines_equal_twisteds_text_observer():
    """The text observer writes exactly what textFileLogObserver writes: the same time
    stamps (events within one second, across seconds and without a time), systems, levels
    and multi-line texts."""
    from twisted.logger import textFileLogObserver

    from mailserver.log import text_observer

    ours, theirs = io.StringIO(), io.StringIO()
    mine, reference = text_observer(ours), textFileLogObserver(theirs)
    start = 1_764_442_800.0  # a whole second
    for offset in (0.0, 0.25, 0.999999, 1.0, 61.5, 3600.0, -0.5):
        for event in (
            {"log_time": start + offset, "log_namespace": "a.b", "log_level": LogLevel.info,
             "log_format": "{x} done", "x": offset},
            {"log_time": start + offset, "log_system": "smtp-worker 1",
             "log_format": "two\nlines"},
            {"log_format": "no time"},
            {"log_time": start + offset},  # no format: no line
        ):
            mine(dict(event))
            reference(dict(event))
    assert ours.getvalue() == theirs.getvalue()
    assert ours.getvalue().count("\n") > 10
