"""The ``Received:`` trace header an SMTP server prepends (RFC 5321 §4.4)."""

from __future__ import annotations

from mailserver.message.headers import rfc5322_date


def protocol_name(*, esmtp: bool, tls: bool, authenticated: bool, utf8: bool) -> str:
    """The ``with`` protocol type: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531
    §3.7.3 (UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA); plain ``SMTP`` after HELO."""
    if utf8:
        base = "UTF8SMTP"
    elif esmtp:
        base = "ESMTP"
    else:
        return "SMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


#: Header text must not carry line breaks or unbalanced comment characters.
_UNSAFE = str.maketrans("", "", "\r\n()\\")


def _clean(text: str) -> str:
    return text.translate(_UNSAFE)[:255]


def received_header(
    *,
    helo: str,
    client_address: str,
    client_name: str | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    timestamp: float,
    tls: str | None = None,
) -> bytes:
    """One folded ``Received:`` header line, CRLF-terminated.

    ``recipient`` is named in a ``for`` clause only when the message has exactly one
    recipient (naming several would leak Bcc recipients to each other). ``tls`` is a short
    description such as ``"TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"``.
    """
    source = f"{_clean(client_name)} [{client_address}]" if client_name else f"[{client_address}]"
    parts = [f"Received: from {_clean(helo) or 'unknown'} ({source})"]
    if tls:
        parts.append(f"\t(using {_clean(tls)})")
    line = f"\tby {_clean(hostname)} (mailserver) with {protocol} id {queue_id}"
    if recipient:
        line += f"\r\n\tfor <{_clean(recipient)}>"
    parts.append(line + ";")
    parts.append("\t" + rfc5322_date(timestamp))
    return ("\r\n".join(parts) + "\r\n").encode("utf-8")
