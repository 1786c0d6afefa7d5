"""Authentication results and the ``Authentication-Results`` header field (RFC 8601).

Design rules:

1. One :class:`AuthResult` per check (SPF, each DKIM signature, ARC, DMARC): the method, the
   RFC 8601 §2.7 result word, the properties that identify what was checked, and an optional
   reason. The checkers return them; only this module turns them into header text.
2. The header we add is one field, folded one method per line, CRLF-terminated; values that are
   not RFC 2045 tokens or addresses are quoted (RFC 8601 §2.2 ``pvalue``).
3. A field claiming our authserv-id that arrived from outside is forged or stale: it is removed
   before we add ours (RFC 8601 §5), byte for byte leaving every other field as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "METHODS",
    "RESULTS",
    "AuthResult",
    "authentication_results",
    "parse_authentication_results",
    "strip_authentication_results",
]

#: RFC 8601 §2.7 result words (plus "policy", §2.7.1-2.7.2 for DKIM/DMARC overrides).
RESULTS = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}
)
#: Methods this server reports (IANA "Email Authentication Methods").
METHODS = frozenset({"spf", "dkim", "dmarc", "arc", "iprev"})

HEADER_NAME = b"Authentication-Results"
_FOLD_AT = 76

# RFC 2045 token: any CHAR except SPACE, CTLs and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
# RFC 8601 pvalue: [[local-part] "@"] domain-name (dot-atom local part).
_ADDRESS = re.compile(
    r"(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+(?:\.[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+)*)?@"
    r"[0-9A-Za-z](?:[0-9A-Za-z\-]*[0-9A-Za-z])?(?:\.[0-9A-Za-z](?:[0-9A-Za-z\-]*[0-9A-Za-z])?)*\Z"
)


@dataclass(frozen=True)
class AuthResult:
    """The outcome of one authentication method for one message.

    ``properties`` are ``(ptype.property, value)`` pairs in order, e.g.
    ``("smtp.mailfrom", "example.org")``, ``("header.d", "example.org")``,
    ``("header.s", "sel")``, ``("header.b", "abcdefgh")``, ``("header.from", "example.org")``.
    """

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"not an RFC 8601 result: {self.result!r}")

    def get(self, name: str) -> str | None:
        """The first value of property ``name`` (``"header.d"``), or None."""
        for key, value in self.properties:
            if key == name:
                return value
        return None

    def resinfo(self) -> str:
        """The RFC 8601 ``resinfo`` text for this result, without the leading ``;``."""
        words = [f"{self.method}={self.result}"]
        if self.reason:
            words.append(f"reason={_quote(self.reason)}")
        words.extend(f"{key}={_pvalue(value)}" for key, value in self.properties)
        return " ".join(words)


def _quote(text: str) -> str:
    """RFC 5322 quoted-string (no line breaks: control characters become spaces)."""
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue(value: str) -> str:
    if _TOKEN.match(value) or _ADDRESS.match(value):
        return value
    return _quote(value)


def authentication_results(authserv_id: str, results: Sequence[AuthResult]) -> bytes:
    """One ``Authentication-Results:`` field for ``results`` (``none`` when empty), folded
    one result per line (RFC 8601 §2.2), CRLF-terminated, UTF-8."""
    head = f"{HEADER_NAME.decode()}: {authserv_id};"
    if not results:
        return (head + " none\r\n").encode()
    lines = [head]
    for index, result in enumerate(results):
        text = result.resinfo() + (";" if index < len(results) - 1 else "")
        lines.extend(_fold(text))
    return ("\r\n\t".join(lines) + "\r\n").encode("utf-8")


def _fold(text: str) -> list[str]:
    """Split a long resinfo at spaces outside quoted strings into lines of about 76 chars."""
    pieces: list[str] = []
    current = ""
    quoted = False
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if escaped:
            escaped = False
            continue
        if char == "\\" and quoted:
            escaped = True
            continue
        if char == '"':
            quoted = not quoted
        if char == " " and not quoted:
            word = text[start:index]
            if current and len(current) + 1 + len(word) > _FOLD_AT:
                pieces.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
            start = index + 1
    word = text[start:]
    if current and len(current) + 1 + len(word) > _FOLD_AT:
        pieces.append(current)
        current = word
    else:
        current = f"{current} {word}" if current else word
    pieces.append(current)
    return pieces


def _fields(block: bytes) -> list[bytes]:
    """Split a header block into fields, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _strip_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    escaped = False
    quoted = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if char == '"' and depth == 0:
            quoted = not quoted
        elif char == "(" and not quoted:
            depth += 1
            continue
        elif char == ")" and not quoted and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(char)
    return "".join(out)


def _authserv_id(value: bytes) -> str:
    text = _strip_comments(value.decode("utf-8", "replace"))
    text = " ".join(text.split())
    first = text.split(";", 1)[0].strip()
    # authserv-id [ CFWS authres-version ]
    return first.split(" ", 1)[0].lower()


def strip_authentication_results(header_block: bytes, authserv_id: str) -> bytes:
    """``header_block`` without the ``Authentication-Results`` fields claiming
    ``authserv_id`` (case-insensitive, RFC 8601 §5); everything else is left byte for byte."""
    ours = authserv_id.lower()
    kept: list[bytes] = []
    for field in _fields(header_block):
        name, colon, value = field.partition(b":")
        if colon and name.strip().lower() == HEADER_NAME.lower() and _authserv_id(value) == ours:
            continue
        kept.append(field)
    return b"".join(kept)


def parse_authentication_results(value: bytes | str) -> tuple[str, list[AuthResult]]:
    """Parse a field value (after the colon) into ``(authserv-id, results)``. Lenient: a
    resinfo it cannot read is skipped. For tests and tools, not for trust decisions."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    parts = _split_semicolons(_strip_comments(value))
    authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
    results: list[AuthResult] = []
    for part in parts[1:]:
        words = _words(part)
        if not words or "=" not in words[0]:
            continue
        method, _, result = words[0].partition("=")
        method = method.split("/")[0].strip().lower()
        result = result.strip().lower()
        if result not in RESULTS:
            continue
        reason = ""
        props: list[tuple[str, str]] = []
        for word in words[1:]:
            key, _, val = word.partition("=")
            val = _unquote(val)
            if key.lower() == "reason":
                reason = val
            elif key:
                props.append((key.lower(), val))
        results.append(AuthResult(method, result, tuple(props), reason))
    return authserv, results


def _split_unquoted(text: str, separates: Callable[[str], bool]) -> list[str]:
    """``text`` cut at each character ``separates`` accepts outside a quoted string (a
    backslash escapes the next character); the pieces as they stand, empty ones included."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif separates(char) and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _split_semicolons(text: str) -> list[str]:
    return [part.strip() for part in _split_unquoted(text, lambda char: char == ";")]


def _words(text: str) -> list[str]:
    """Space-separated ``key=value`` words, quoted values kept whole, ``a = b`` rejoined."""
    tokens = [token for token in _split_unquoted(text, str.isspace) if token]
    joined: list[str] = []
    for token in tokens:
        if joined and (joined[-1].endswith("=") or token.startswith("=")):
            joined[-1] += token
        else:
            joined.append(token)
    return joined


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def results_for(results: Iterable[AuthResult], method: str) -> list[AuthResult]:
    """The results of one method, in order."""
    return [r for r in results if r.method == method]
