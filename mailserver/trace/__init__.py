"""The message trace log (issue 10, "where is my mail"): :class:`TraceLog` keeps bounded,
indexed records of each message's path, and :class:`TraceObserver` fills it from the
structured log events the protocols, the filter, the store and the spool emit (so none of
them imports it). Wired by ``service.py``; read by the web API through
:class:`mailserver.interfaces.ITraceLog`."""

from mailserver.trace.log import TraceLog
from mailserver.trace.observer import TraceObserver, TraceService

__all__ = ["TraceLog", "TraceObserver", "TraceService"]
