"""WrappingDelivery: the part every delivery that wraps another delivery shares.

A filter in front of the store asks the delivery it holds to file the message into Junk
(:class:`~mailserver.interfaces.IFolderChoice`) or to keep its spam verdict
(:class:`~mailserver.interfaces.IClassified`). Between the filter and the store sit other
wrappers (the MX policy, message authentication, report recording, rewriting), so each of
them passes these requests on to its ``inner`` delivery; when nothing below provides the
interface (the outbound spool), the request is dropped, which is what ``file_into``
promises anyway (no such folder: INBOX).
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from mailserver.interfaces import IClassified, IFolderChoice
from mailserver.types import SpamVerdict, SpecialUse

__all__ = ["WrappingDelivery"]


@implementer(IFolderChoice, IClassified)
class WrappingDelivery:
    """Mixin for a delivery with an ``inner`` delivery: forwards folder choice and verdict."""

    inner: Any

    def file_into(self, special_use: SpecialUse) -> None:
        if IFolderChoice.providedBy(self.inner):
            self.inner.file_into(special_use)

    def classified(self, verdict: SpamVerdict) -> None:
        if IClassified.providedBy(self.inner):
            self.inner.classified(verdict)
