"""Disk space: the free-space reserve and the one mapping of "disk full" to a mail error.

A full disk must cost no acknowledged message and no half-written one: the peer is told to
try again later (SMTP ``452 4.3.1``, RFC 3463 "mail system full"; IMAP ``NO
[UNAVAILABLE]``, RFC 5530) and the server keeps running, so mail flows again as soon as space
returns. Two mechanisms give that answer:

1. :class:`FreeSpace`, the reserve: new mail is refused while the file system holding the
   data directory has fewer free bytes (``os.statvfs``, the space an unprivileged process
   may use) than ``[store] min_free_mb`` plus the incoming message. The reserve keeps room
   for the index, the spool's retries and the operator; refusing early is cheaper than a
   write failing half-way. The minimum can be changed while the server runs (SIGHUP).
2. :func:`out_of_space`: a write that fails with ``ENOSPC`` or ``EDQUOT`` anyway (another
   process filled the disk between the check and the write) becomes
   :class:`InsufficientStorage`; :func:`mapped` wraps blocking file work with it.

:class:`ReserveTarget` is the delivery target that checks the reserve before its inner
target takes a message body; the store checks it itself for IMAP APPEND.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from mailserver.errors import StoreUnavailable
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.types import Address, Envelope
from mailserver.wrapping import WrappingDelivery

__all__ = [
    "FreeSpace",
    "InsufficientStorage",
    "ReserveTarget",
    "mapped",
    "out_of_space",
]

T = TypeVar("T")

#: errno values that mean "no room to write": the file system or the user's disk quota.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class InsufficientStorage(StoreUnavailable):
    """The disk (or the reserve kept free on it) is full: try again later.

    SMTP answers ``452 4.3.1`` (RFC 1870 §6, RFC 3463 X.3.1 "mail system full"); IMAP
    answers ``NO [UNAVAILABLE]`` like every temporary store error (RFC 5530 §3)."""

    code = 452
    enhanced = "4.3.1"
    text = "Insufficient system storage, try again later"


def out_of_space(error: BaseException) -> bool:
    """True when ``error`` is a write failing for lack of space (ENOSPC, EDQUOT)."""
    return isinstance(error, OSError) and error.errno in FULL


def mapped(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with ENOSPC/EDQUOT turned into :class:`InsufficientStorage` (the OSError
    is kept as the cause and its text goes to the log detail, not to the peer)."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except OSError as error:
            if out_of_space(error):
                raise InsufficientStorage(detail=f"write failed: {error}") from error
            raise

    return call


class FreeSpace:
    """The free-space reserve of the file system holding ``path``.

    ``minimum`` is in bytes (0: no reserve, only a real ENOSPC refuses mail); it may be
    changed at any time. ``statvfs`` is injectable so tests can present any disk. Every
    method here blocks (a ``statvfs`` call): use it from a worker thread."""

    def __init__(
        self,
        path: str,
        minimum: int = 0,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.path = path
        self.minimum = minimum
        self._statvfs = statvfs

    def free(self) -> int:
        """Bytes an unprivileged process may still write on the file system (f_bavail)."""
        result = self._statvfs(self.path)
        return int(result.f_bavail) * int(result.f_frsize or result.f_bsize)

    def check(self, incoming: int = 0) -> None:
        """Raise :class:`InsufficientStorage` unless ``incoming`` more bytes leave at least
        :attr:`minimum` bytes free. With no minimum, nothing is checked."""
        if self.minimum <= 0:
            return
        free = self.free()
        if free - incoming < self.minimum:
            raise InsufficientStorage(
                detail=f"{free} bytes free on the file system of {self.path}, "
                f"{incoming} incoming, reserve {self.minimum} ([store] min_free_mb)"
            )


@implementer(IDeliveryTarget)
class ReserveTarget:
    """A delivery target that refuses a message body with :class:`InsufficientStorage`
    while the reserve is not met, and otherwise hands everything to ``inner``."""

    def __init__(self, inner: IDeliveryTarget, space: FreeSpace, reactor: Any) -> None:
        self.inner = inner
        self.space = space
        self.reactor = reactor

    def start(self, envelope: Envelope) -> ReserveDelivery:
        return ReserveDelivery(self, self.inner.start(envelope))


@implementer(IDelivery)
class ReserveDelivery(WrappingDelivery):
    """One transaction of :class:`ReserveTarget`: the reserve is checked (in the thread
    pool) before the inner delivery reads the body."""

    def __init__(self, owner: ReserveTarget, inner: IDelivery) -> None:
        self.owner = owner
        self.inner = inner
        self.envelope = inner.envelope

    def add_recipient(self, address: Address, params: Mapping[str, str] | None = None) -> Any:
        return self.inner.add_recipient(address, params)

    def body(self, source: BinaryIO) -> Deferred[Any]:
        reactor = self.owner.reactor

        def check() -> None:
            size = source.seek(0, os.SEEK_END)
            source.seek(0)
            self.owner.space.check(size)

        d = deferToThreadPool(reactor, reactor.getThreadPool(), check)
        d.addCallback(lambda _: self.inner.body(source))
        return d

    def commit(self) -> Any:
        return self.inner.commit()

    def abort(self) -> Any:
        return self.inner.abort()
