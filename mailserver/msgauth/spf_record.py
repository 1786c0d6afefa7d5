"""SPF record syntax (RFC 7208 §4.6, §12) and macros (§7): parsing a record whole, and
expanding a parsed macro-string. Pure functions, no DNS: :mod:`mailserver.msgauth.spf`
evaluates what this module parses.

Design rules:

1. A record is parsed whole before anything is evaluated: any syntax error anywhere is an
   :class:`SPFError` (``permerror``), including in macros and unknown modifiers.
2. Domain-specs stay parsed macro-strings until evaluation, where :func:`expand_macros`
   turns them into names (with the §7.3 truncation of :func:`truncate`).
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IP",
    "Macro",
    "MacroString",
    "Record",
    "SPFError",
    "Term",
    "expand_macros",
    "parse_macro_string",
    "parse_record",
    "truncate",
    "valid_domain",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.S)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9\-_.]*)(.*)\Z", re.S)
_CIDR4 = r"(?:/(0|[1-9][0-9]?))?"
_CIDR6 = r"(?://(0|[1-9][0-9]{0,2}))?"
_DUAL_CIDR = re.compile(_CIDR4 + _CIDR6 + r"\Z")
_MACRO = re.compile(r"%\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.I)
_TOPLABEL = re.compile(
    r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\.?\Z"
)


class SPFError(Exception):
    """A permanent error in a record (``permerror``): syntax, limits, a missing include."""


@dataclass(frozen=True)
class Macro:
    letter: str
    digits: int | None
    reverse: bool
    delimiters: str
    upper: bool


MacroString = tuple[str | Macro, ...]


@dataclass(frozen=True)
class Term:
    """One parsed mechanism (``qualifier`` set) or modifier (``qualifier`` empty)."""

    name: str
    qualifier: str = ""
    target: MacroString | None = None
    network: Any = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True)
class Record:
    mechanisms: tuple[Term, ...]
    redirect: MacroString | None = None
    exp: MacroString | None = None


# -- parsing ---------------------------------------------------------------------------------


def parse_macro_string(text: str, *, exp: bool = False) -> MacroString:
    """§7.1 macro-string (``exp`` allows the c, r, t letters and spaces); SPFError if bad."""
    parts: list[str | Macro] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "%":
            if not (0x21 <= ord(char) <= 0x7E or (exp and char == " ")):
                raise SPFError(f"invalid character {char!r} in {text!r}")
            parts.append(char)
            index += 1
            continue
        nxt = text[index + 1 : index + 2]
        if nxt in ("%", "_", "-"):
            parts.append({"%": "%", "_": " ", "-": "%20"}[nxt])
            index += 2
            continue
        match = _MACRO.match(text, index)
        if not match:
            raise SPFError(f"bad macro in {text!r}")
        letter, digits, reverse, delimiters = match.groups()
        allowed = "slodiphv" + ("crt" if exp else "")
        if letter.lower() not in allowed:
            raise SPFError(f"macro letter {letter!r} not allowed here")
        number = int(digits) if digits else None
        if number == 0:
            raise SPFError("macro digit transformer 0")
        parts.append(Macro(letter.lower(), number, bool(reverse), delimiters, letter.isupper()))
        index = match.end()
    # Join adjacent literal characters.
    joined: list[str | Macro] = []
    for part in parts:
        if isinstance(part, str) and joined and isinstance(joined[-1], str):
            joined[-1] += part
        else:
            joined.append(part)
    return tuple(joined)


def _domain_spec(text: str) -> MacroString:
    """§7.1 domain-spec: a macro-string ending in ``"." toplabel ["."]`` or a macro."""
    spec = parse_macro_string(text)
    if not spec:
        raise SPFError("empty domain-spec")
    last = spec[-1]
    if isinstance(last, str):
        # domain-end = "." toplabel [ "." ] (or a macro-expand, which needs no check)
        stripped = last[:-1] if last.endswith(".") else last
        head, dot, toplabel = stripped.rpartition(".")
        if not dot or not _TOPLABEL.match(toplabel) or (not head and len(spec) == 1):
            raise SPFError(f"domain-spec {text!r} does not end in '.' and a top label")
    return spec


def _parse_term(text: str) -> tuple[str, Term]:
    modifier = _MODIFIER.match(text)
    if modifier:
        name = modifier.group(1).lower()
        value = modifier.group(2)
        if name in ("redirect", "exp"):
            return "modifier", Term(name, target=_domain_spec(value))
        parse_macro_string(value)  # §6: unknown modifiers are ignored but must parse
        return "modifier", Term(name)
    mechanism = _MECHANISM.match(text)
    if not mechanism:
        raise SPFError(f"unknown term {text!r}")
    qualifier, name, rest = mechanism.groups()
    name = name.lower()
    result = QUALIFIERS[qualifier or "+"]
    if name not in MECHANISMS:
        raise SPFError(f"unknown mechanism {name!r}")
    if name == "all":
        if rest:
            raise SPFError(f"bad 'all': {text!r}")
        return "mechanism", Term(name, result)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise SPFError(f"{name} needs a domain")
        return "mechanism", Term(name, result, target=_domain_spec(rest[1:]))
    if name in ("ip4", "ip6"):
        return "mechanism", _ip_term(name, result, rest)
    # a, mx, ptr
    cidr4, cidr6 = 32, 128
    if name != "ptr":
        cidr = _DUAL_CIDR.search(rest)
        assert cidr is not None  # the pattern matches the empty string
        if cidr.group(1) is not None:
            cidr4 = int(cidr.group(1))
        if cidr.group(2) is not None:
            cidr6 = int(cidr.group(2))
        if cidr4 > 32 or cidr6 > 128:
            raise SPFError(f"CIDR length out of range in {text!r}")
        rest = rest[: cidr.start()]
    target = None
    if rest:
        if not rest.startswith(":"):
            raise SPFError(f"bad mechanism {text!r}")
        target = _domain_spec(rest[1:])
    return "mechanism", Term(name, result, target=target, cidr4=cidr4, cidr6=cidr6)


def _ip_term(name: str, result: str, rest: str) -> Term:
    if not rest.startswith(":"):
        raise SPFError(f"{name} needs an address")
    address, slash, length = rest[1:].partition("/")
    maximum = 32 if name == "ip4" else 128
    if slash and not re.fullmatch(r"0|[1-9][0-9]{0,2}", length):
        raise SPFError(f"bad {name} prefix length {length!r}")
    prefix = int(length) if slash else maximum
    if prefix > maximum:
        raise SPFError(f"{name} prefix length {prefix} out of range")
    try:
        host = ipaddress.IPv4Address(address) if name == "ip4" else ipaddress.IPv6Address(address)
    except ValueError:
        raise SPFError(f"bad {name} address {address!r}") from None
    network = ipaddress.ip_network(f"{host}/{prefix}", strict=False)
    return Term(name, result, network=network)


def parse_record(text: str) -> Record:
    """Parse a whole ``v=spf1`` record (§4.6, §12 ABNF); SPFError on any syntax error."""
    words = text.split(" ")
    if words[0].lower() != "v=spf1":
        raise SPFError("not an SPF record")
    mechanisms: list[Term] = []
    modifiers: dict[str, Term] = {}
    for word in words[1:]:
        if not word:
            continue
        kind, term = _parse_term(word)
        if kind == "mechanism":
            mechanisms.append(term)
        elif term.name in ("redirect", "exp"):
            if term.name in modifiers:
                raise SPFError(f"more than one {term.name}= modifier")  # §6
            modifiers[term.name] = term
    redirect = modifiers.get("redirect")
    exp = modifiers.get("exp")
    return Record(
        tuple(mechanisms),
        redirect.target if redirect else None,
        exp.target if exp else None,
    )


# -- macros ----------------------------------------------------------------------------------


def _ip_macro(ip: IP) -> str:
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def expand_macros(
    spec: MacroString,
    *,
    sender: str,
    domain: str,
    ip: IP,
    helo: str,
    validated: str = "unknown",
    receiver: str = "unknown",
    now: float | None = None,
) -> str:
    """§7.3 expansion of a parsed macro-string (``validated`` is the %{p} name, found first)."""
    local, _, sender_domain = sender.rpartition("@")
    values = {
        "s": sender,
        "l": local or "postmaster",
        "o": sender_domain,
        "d": domain,
        "i": _ip_macro(ip),
        "p": validated,
        "v": "in-addr" if ip.version == 4 else "ip6",
        "h": helo,
        "c": str(ip),
        "r": receiver,
        "t": str(int(time.time() if now is None else now)),
    }
    out: list[str] = []
    for part in spec:
        if isinstance(part, str):
            out.append(part)
            continue
        value = values[part.letter]
        pattern = "[" + re.escape(part.delimiters or ".") + "]"
        pieces = re.split(pattern, value)
        if part.reverse:
            pieces.reverse()
        if part.digits is not None:
            pieces = pieces[-part.digits :]
        value = ".".join(pieces)
        if part.upper:
            value = urllib.parse.quote(value, safe="")
        out.append(value)
    return "".join(out)


def truncate(name: str) -> str:
    """§7.3: over 253 characters, drop labels from the left (a final dot is dropped)."""
    if name.endswith("."):
        name = name[:-1]
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name


def valid_domain(name: str) -> bool:
    """§4.3: a multi-label name with no empty (or over-long) label."""
    labels = name.rstrip(".").split(".")
    return (
        len(labels) >= 2
        and all(0 < len(label) <= 63 for label in labels)
        and len(name) <= 253
        and name.isascii()
    )
