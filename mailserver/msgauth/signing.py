"""DKIM signing of submitted mail: an :class:`IDeliveryTarget` in front of the router.

Design rules:

1. The signing domain is the domain of the From header field's first address (so DKIM
   aligns with From for DMARC, RFC 7489 §3.1.1); when that domain has no active key, the
   envelope sender's domain; when neither has one, the message passes unsigned.
2. The submission avatar checks the sender and adds Date/Message-ID before this target sees
   the message, so the signature covers the fields as they leave. The DKIM-Signature fields
   are prepended (RFC 6376 §5.6); nothing else in the message changes.
3. Reading the message, reading the keys and the private-key work run in the thread pool; a
   key that cannot be used is logged and the message goes out unsigned rather than bounced
   (signing is an assurance for the receiver, not a condition of delivery).
"""

from __future__ import annotations

import tempfile
from typing import Any, BinaryIO

from twisted.logger import Logger
from zope.interface import implementer

from mailserver.interfaces import IDeliveryTarget
from mailserver.message.envelope import parse_address_list
from mailserver.message.headers import get_header, header_length, parse_headers
from mailserver.msgauth.dkim import DKIMSigner
from mailserver.msgauth.keys import DKIMKeyError, check_domain
from mailserver.rewrite import RewritingDelivery
from mailserver.types import Envelope

__all__ = ["DKIMSigningTarget", "from_domain"]

log = Logger()


def from_domain(message: bytes) -> str | None:
    """The domain of the first address in the From header field, lowercased, or None."""
    headers = parse_headers(message[: header_length(message)])
    raw = get_header(headers, "From")
    if raw is None:
        return None
    for entry in parse_address_list(raw):
        if entry[2] is not None and entry[3]:
            try:
                return check_domain(str(entry[3]))
            except DKIMKeyError:  # e.g. the parser's ".missing-host-name."
                return None
    return None


@implementer(IDeliveryTarget)
class DKIMSigningTarget:
    """Signs each message with the keys of its From (or sender) domain, then hands it on."""

    def __init__(self, inner: IDeliveryTarget, signer: DKIMSigner, reactor: Any) -> None:
        self.inner = inner
        self.signer = signer
        self.reactor = reactor

    def start(self, envelope: Envelope) -> SigningDelivery:
        return SigningDelivery(self, envelope, self.inner.start(envelope))


class SigningDelivery(RewritingDelivery):
    owner: DKIMSigningTarget

    def rewrite(self, source: BinaryIO) -> BinaryIO:
        """Blocking: the message with its DKIM-Signature fields on top, as a new file."""
        source.seek(0)
        message = source.read()
        fields = b""
        try:
            fields = self.sign(message)
        except Exception:
            log.failure("DKIM signing failed; the message goes out unsigned")
        out = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        out.write(fields)
        out.write(message)
        out.seek(0)
        return out  # type: ignore[return-value]

    def sign(self, message: bytes) -> bytes:
        """The signature fields for ``message`` (design rule 1), possibly empty."""
        signer = self.owner.signer
        domains = [from_domain(message)]
        if self.envelope.sender is not None:
            domains.append(self.envelope.sender.domain.lower())
        for domain in dict.fromkeys(d for d in domains if d):
            fields = signer.sign(message, domain)
            if fields:
                return fields
        return b""
