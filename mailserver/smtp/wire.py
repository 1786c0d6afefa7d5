"""Replies on the wire: a plain TCP connection's reply goes out at once.

Twisted's ``transport.write`` only buffers: the bytes are sent on the next turn of the
reactor loop, after an ``epoll_ctl`` to watch the socket for writing (and another to stop
watching it once the buffer is empty). An SMTP server answers about seven commands per
message, each to a client that waits for the reply before it sends anything else, so the
server sends each reply itself when nothing is buffered before it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["send_now"]


def send_now(transport: Any, data: bytes) -> bool:
    """Send ``data`` on a plain TCP connection at once, when nothing is waiting before it:
    what the socket does not take is handed to ``transport.write`` (so order is kept), and
    True is returned. False (nothing done: use ``transport.write``) for TLS, for any other
    kind of transport, and while earlier data is still buffered or the connection closes.

    Twisted's ``write`` only buffers and sends on the next turn of the reactor loop, which
    costs two ``epoll_ctl`` calls and a loop turn per reply; an SMTP server sends about
    seven replies per message, each to a client that is waiting for it."""
    if (
        type(transport) is not tcp.Server
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or transport.dataBuffer
        or transport._tempDataBuffer
    ):
        return False
    sent = transport.writeSomeData(data)
    if not isinstance(sent, int):  # the connection is lost: let Twisted find out
        return False
    if sent < len(data):
        transport.write(data[sent:])
    return True
