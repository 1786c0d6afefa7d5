"""Modified UTF-7 for IMAP mailbox names (RFC 3501 §5.1.3, RFC 9051 §5.1.3, RFC 2152).

Printable US-ASCII other than ``&`` stands for itself, ``&`` is written ``&-``, and every run of
other characters is written as ``&`` + modified BASE64 of its UTF-16BE form (``,`` instead of
``/``, no ``=`` padding) + ``-``. :func:`decode` accepts only the canonical form, so
``encode(decode(s)) == s`` for every ``s`` that :func:`decode` accepts.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode", "encode"]

# RFC 3501 §5.1.3: modified BASE64 uses "," in place of "/".
_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")


def _is_direct(char: str) -> bool:
    """True for the characters that represent themselves: printable US-ASCII except "&"."""
    return 0x20 <= ord(char) <= 0x7E and char != "&"


def _encode_run(run: str) -> str:
    """Return the ``&...-`` shift sequence for a run of characters that must be encoded."""
    # RFC 3501 §5.1.3: UTF-16 (big-endian, astral characters as surrogate pairs), BASE64
    # with "," for "/" and the "=" padding omitted.
    raw = run.encode("utf-16-be")
    text = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
    return f"&{text}-"


def encode(name: str) -> str:
    """Encode a mailbox name to modified UTF-7.

    Raises :class:`ValueError` (a :class:`UnicodeEncodeError`) when ``name`` holds a lone
    surrogate, which has no UTF-16 form.
    """
    out: list[str] = []
    run: list[str] = []
    for char in name:
        if _is_direct(char) or char == "&":
            if run:
                out.append(_encode_run("".join(run)))
                run = []
            out.append("&-" if char == "&" else char)  # RFC 3501 §5.1.3: "&" is "&-".
        else:
            run.append(char)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


def _decode_run(b64: str, position: int) -> str:
    """Decode the modified BASE64 between ``&`` and ``-`` that starts at ``position``."""
    bad = next((c for c in b64 if c not in _B64_CHARS), None)
    if bad is not None:
        raise ValueError(f"invalid modified BASE64 character {bad!r} at offset {position}")
    if len(b64) % 4 == 1:
        raise ValueError(f"truncated modified BASE64 sequence at offset {position}")
    padded = b64.replace(",", "/") + "=" * (-len(b64) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid modified BASE64 at offset {position}: {exc}") from None
    if len(raw) % 2:
        raise ValueError(f"modified BASE64 at offset {position} is not whole UTF-16 units")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError(f"unpaired UTF-16 surrogate at offset {position}") from None
    if any(_is_direct(c) or c == "&" for c in text):
        # RFC 3501 §5.1.3: modified BASE64 MUST NOT represent a printable US-ASCII character.
        raise ValueError(f"non-canonical: printable US-ASCII encoded at offset {position}")
    if _encode_run(text) != f"&{b64}-":
        # Non-zero padding bits: several encodings would decode to the same text.
        raise ValueError(f"non-canonical modified BASE64 at offset {position}")
    return text


def decode(encoded: str) -> str:
    """Decode a modified UTF-7 mailbox name.

    Raises :class:`ValueError` with a message naming the offset for characters outside
    printable US-ASCII, an unterminated shift, ``&`` followed by neither ``-`` nor BASE64,
    invalid BASE64 or any non-canonical form (encoded printable ASCII, non-zero padding bits,
    two adjacent shift sequences).
    """
    out: list[str] = []
    i = 0
    previous_shift_end = -1
    while i < len(encoded):
        match = _DIRECT.match(encoded, i)
        if match:
            out.append(match.group())
            i = match.end()
            continue
        char = encoded[i]
        if char != "&":
            raise ValueError(f"character {char!r} at offset {i} is not printable US-ASCII")
        end = encoded.find("-", i + 1)
        if end < 0:
            raise ValueError(f"unterminated '&' shift sequence at offset {i}")
        if end == i + 1:
            out.append("&")
        else:
            if previous_shift_end == i:
                # Canonical form encodes one run of characters as one sequence.
                raise ValueError(f"non-canonical: adjacent shift sequences at offset {i}")
            if encoded[i + 1] not in _B64_CHARS:
                raise ValueError(f"'&' at offset {i} is followed by neither '-' nor BASE64")
            out.append(_decode_run(encoded[i + 1 : end], i))
            previous_shift_end = end + 1
        i = end + 1
    return "".join(out)
