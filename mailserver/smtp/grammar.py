"""The SMTP command grammar: command lines, HELO/EHLO, MAIL and RCPT with their parameters.

Parsers return values or raise :class:`GrammarError` carrying the exact reply to send, so the
protocol never guesses a code. Sources: RFC 5321 §4.1 (commands, paths), RFC 1870 (SIZE),
RFC 6152 (BODY=8BITMIME), RFC 3030 (BODY=BINARYMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN:
RET, ENVID, NOTIFY, ORCPT and xtext), RFC 4954 §5 (AUTH=). Parameters are only recognised
when their extension was advertised (``extensions``); anything else is ``555 5.5.4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.message.address import normalize_domain, parse_path
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.types import Address

__all__ = [
    "Command",
    "GrammarError",
    "MailParams",
    "RcptParams",
    "parse_command",
    "parse_helo",
    "parse_mail",
    "parse_rcpt",
    "xtext_decode",
    "xtext_encode",
]

#: RFC 3461 §4.4: ENVID is at most 100 characters; §4.2: ORCPT's address at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500

_COMMAND = re.compile(r"([A-Za-z]+)(?:[ \t]+(.*))?")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# A HELO name some real clients send that is not a valid DNS name (e.g. NetBIOS names with
# "_"): accepted as a plain token, as Postfix does unless told to reject it.
_LENIENT_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_UTF8_XTEXT_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class GrammarError(Exception):
    """A syntax or parameter error; :attr:`reply` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(" ".join(reply.lines()))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: the verb upper-cased and the argument with outer blanks removed."""

    verb: str
    argument: str


@dataclass(frozen=True, slots=True)
class MailParams:
    """Validated MAIL FROM parameters (values decoded from xtext)."""

    size: int | None = None
    body: str | None = None  # "7BIT", "8BITMIME" or "BINARYMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None
    auth: str | None = None  # the AUTH= mailbox; "" for AUTH=<>


@dataclass(frozen=True, slots=True)
class RcptParams:
    """Validated RCPT TO parameters: NOTIFY keywords and ORCPT as (addr-type, address)."""

    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None


def _error(reply: Reply, text: str | None = None) -> GrammarError:
    return GrammarError(reply.with_text(text) if text else reply)


def parse_command(line: bytes) -> Command:
    """Split a command line (without CRLF) into verb and argument.

    The line must be UTF-8 (ASCII, or UTF-8 addresses under SMTPUTF8) without control
    characters other than TAB.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(codes.SYNTAX_ERROR, "Invalid UTF-8 in command") from None
    if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in text):
        raise _error(codes.SYNTAX_ERROR, "Control character in command")
    match = _COMMAND.fullmatch(text.rstrip(" \t"))
    if match is None:
        raise _error(codes.SYNTAX_ERROR)
    return Command(match.group(1).upper(), (match.group(2) or "").strip(" \t"))


def parse_helo(argument: str) -> str:
    """The client's name from HELO/EHLO: a domain (lower-cased) or an address literal."""
    if not argument:
        raise _error(codes.BAD_ARGUMENTS, "EHLO/HELO requires a domain name or address literal")
    if len(argument.split()) != 1:
        raise _error(codes.BAD_DOMAIN, "Give one domain name or address literal")
    try:
        return normalize_domain(argument)
    except ValueError as error:
        if not argument.startswith("[") and _LENIENT_HOST.fullmatch(argument):
            return argument.lower()
        raise _error(codes.BAD_DOMAIN, f"Invalid domain name: {error}") from None


def _split_path(argument: str, prefix: str) -> tuple[str, list[str]]:
    """``FROM:<path> params`` -> (``<path>``, [params]); the path may hold quoted ``>``."""
    if argument[: len(prefix)].upper() != prefix:
        raise _error(codes.BAD_ARGUMENTS, f"Syntax: {prefix}<address> [parameters]")
    rest = argument[len(prefix) :].lstrip(" ")
    if not rest.startswith("<"):
        raise _error(codes.BAD_ARGUMENTS, "Address must be enclosed in <>")
    quoted = escaped = False
    for index, char in enumerate(rest):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            path, params = rest[: index + 1], rest[index + 1 :]
            if params and not params.startswith(" "):
                raise _error(codes.BAD_ARGUMENTS, "Space needed between address and parameters")
            return path, params.split()
    raise _error(codes.BAD_ARGUMENTS, "Unterminated address: missing '>'")


def _params(words: list[str]) -> dict[str, str | None]:
    """``KEY[=VALUE]`` words as a dict with upper-cased keys; duplicates are an error."""
    found: dict[str, str | None] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (equals and not value):
            raise _error(codes.BAD_ARGUMENTS, f"Invalid parameter {word!r}")
        key = key.upper()
        if key in found:
            raise _error(codes.BAD_ARGUMENTS, f"Duplicate parameter {key}")
        found[key] = value if equals else None
    return found


def _need(value: str | None, key: str) -> str:
    if value is None:
        raise _error(codes.BAD_ARGUMENTS, f"{key} needs a value")
    return value


def _no_value(value: str | None, key: str) -> None:
    if value is not None:
        raise _error(codes.BAD_ARGUMENTS, f"{key} takes no value")


def _path(path: str, bad: Reply, smtputf8: bool) -> Address | None:
    try:
        address = parse_path(path)
    except ValueError as error:
        raise _error(bad, f"{bad.text[0]}: {error}") from None
    if address is not None and not smtputf8 and not str(address).isascii():
        raise GrammarError(codes.UTF8_REQUIRED)
    return address


def parse_mail(
    argument: str, *, extensions: frozenset[str] = frozenset(), max_size: int = 0
) -> tuple[Address | None, MailParams]:
    """``FROM:<reverse-path> [params]`` -> (sender or None for ``<>``, parameters).

    ``max_size`` (0: none) refuses a declared SIZE above it with 552 5.3.4 (RFC 1870 §6).
    """
    path, words = _split_path(argument, "FROM:")
    raw = _params(words)
    size = body = ret = envid = auth = None
    smtputf8 = False
    for key, value in raw.items():
        if key == "SIZE" and "SIZE" in extensions:
            text = _need(value, key)
            if not text.isdigit() or len(text) > 20:
                raise _error(codes.BAD_ARGUMENTS, "SIZE must be a number of octets")
            size = int(text)
            if max_size and size > max_size:
                raise GrammarError(codes.MESSAGE_TOO_BIG)
        elif key == "BODY" and "8BITMIME" in extensions:
            body = _need(value, key).upper()
            allowed = {"7BIT", "8BITMIME"} | ({"BINARYMIME"} & extensions)
            if body not in allowed:
                choices = ", ".join(sorted(allowed))
                raise _error(codes.BAD_ARGUMENTS, f"BODY must be one of {choices}")
        elif key == "SMTPUTF8" and "SMTPUTF8" in extensions:
            _no_value(value, key)
            smtputf8 = True
        elif key == "RET" and "DSN" in extensions:
            ret = _need(value, key).upper()
            if ret not in ("FULL", "HDRS"):
                raise _error(codes.BAD_ARGUMENTS, "RET must be FULL or HDRS")
        elif key == "ENVID" and "DSN" in extensions:
            envid = _xtext_value(_need(value, key), key)
            if len(envid) > MAX_ENVID:
                raise _error(codes.BAD_ARGUMENTS, f"ENVID longer than {MAX_ENVID} characters")
        elif key == "AUTH" and "AUTH" in extensions:
            text = _need(value, key)
            auth = "" if text == "<>" else _xtext_value(text, key)
        else:
            raise _error(codes.PARAMS_NOT_RECOGNIZED, f"Parameter {key} not recognized")
    sender = _path(path, codes.BAD_SENDER_SYNTAX, smtputf8)
    return sender, MailParams(size, body, smtputf8, ret, envid, auth)


def parse_rcpt(
    argument: str, *, extensions: frozenset[str] = frozenset(), smtputf8: bool = False
) -> tuple[Address, RcptParams]:
    """``TO:<forward-path> [params]`` -> (recipient, parameters).

    ``<Postmaster>`` (any case, no domain; RFC 5321 §4.1.1.3) gives ``Address("postmaster",
    "")``, which the delivery target maps to its postmaster.
    """
    path, words = _split_path(argument, "TO:")
    raw = _params(words)
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for key, value in raw.items():
        if key == "NOTIFY" and "DSN" in extensions:
            notify = _parse_notify(_need(value, key))
        elif key == "ORCPT" and "DSN" in extensions:
            orcpt = _parse_orcpt(_need(value, key))
        else:
            raise _error(codes.PARAMS_NOT_RECOGNIZED, f"Parameter {key} not recognized")
    if path.lower() == "<postmaster>":
        return Address("postmaster", ""), RcptParams(notify, orcpt)
    recipient = _path(path, codes.BAD_RECIPIENT_SYNTAX, smtputf8)
    if recipient is None:
        raise _error(codes.BAD_RECIPIENT_SYNTAX, "The null path <> is not a recipient")
    return recipient, RcptParams(notify, orcpt)


def _parse_notify(value: str) -> tuple[str, ...]:
    """RFC 3461 §4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY."""
    words = tuple(word.upper() for word in value.split(","))
    if words == ("NEVER",):
        return words
    if not words or len(set(words)) != len(words) or not set(words) <= _NOTIFY:
        raise _error(
            codes.BAD_ARGUMENTS, "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"
        )
    return words


def _parse_orcpt(value: str) -> tuple[str, str]:
    """RFC 3461 §4.2: ``addr-type ";" xtext`` (RFC 6533: utf-8-addr-xtext for ``utf-8``)."""
    addr_type, semicolon, text = value.partition(";")
    if not semicolon or not _KEYWORD.fullmatch(addr_type) or not text:
        raise _error(codes.BAD_ARGUMENTS, "ORCPT must be addr-type;address")
    address = _xtext_value(text, "ORCPT")
    if addr_type.lower() == "utf-8":
        address = _UTF8_XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), address)
    if len(address) > MAX_ORCPT:
        raise _error(codes.BAD_ARGUMENTS, "ORCPT address too long")
    return addr_type.lower() if addr_type.lower() in ("rfc822", "utf-8") else addr_type, address


def _xtext_value(text: str, key: str) -> str:
    try:
        return xtext_decode(text)
    except ValueError:
        raise _error(codes.BAD_ARGUMENTS, f"{key} is not valid xtext") from None


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 §4 xtext (``+HH`` escapes); raises ValueError when it is not xtext."""
    if not _XTEXT.fullmatch(text):
        raise ValueError(f"not xtext: {text!r}")
    raw = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw.encode("latin-1").decode("utf-8", "replace")


def xtext_encode(text: str) -> str:
    """Encode ``text`` as xtext: ``+``, ``=``, controls, space and non-ASCII become ``+HH``."""
    out = []
    for byte in text.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)
