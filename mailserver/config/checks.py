"""The value checks of config keys, and :func:`_key`, which declares a key with its check.

A check takes the coerced value and returns ``None`` when it is fine, else ``(problem, fix)``;
:func:`mailserver.config.load.from_mapping` raises that as a ConfigError naming the dotted key.
The underscored names are this package's own (the section modules declare their keys with
them); :func:`endpoint_problem`, the listener check, is public.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any

#: A field check: returns ``None`` when the value is fine, else ``(problem, fix)``.
Check = Callable[[Any], "tuple[str, str] | None"]


def _key(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare one config key: its default, its one-line documentation and an optional check."""
    metadata = {"doc": doc, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return field(default=default, metadata=metadata)


def _positive(value: Any) -> tuple[str, str] | None:
    """Accept numbers greater than zero."""
    if value <= 0:
        return f"must be greater than 0, got {value!r}", "use a positive number"
    return None


def _not_negative(value: Any) -> tuple[str, str] | None:
    """Accept zero and positive numbers."""
    if value < 0:
        return f"must not be negative, got {value!r}", "use 0 to turn it off, or a positive number"
    return None


def _not_empty(value: str) -> tuple[str, str] | None:
    """Accept non-blank strings."""
    if not value.strip():
        return "must not be empty", "give a value or remove the key to use the default"
    return None


def _between(low: int, high: int) -> Check:
    """A check accepting integers in ``low..high`` inclusive."""

    def check(value: int) -> tuple[str, str] | None:
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}", f"use {low}..{high}"
        return None

    return check


def _one_of(*choices: str) -> Check:
    """A check accepting exactly one of ``choices``."""

    def check(value: str) -> tuple[str, str] | None:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            return f"unknown value {value!r}", f"use one of {allowed}"
        return None

    return check


def _each_of(*choices: str) -> Check:
    """A check accepting a list whose every item is one of ``choices``."""
    one = _one_of(*choices)

    def check(value: tuple[str, ...]) -> tuple[str, str] | None:
        return next((problem for item in value if (problem := one(item))), None)

    return check


def _addresses(version: int) -> Check:
    """A check accepting a list of IP addresses of one ``version`` (4 or 6)."""

    def check(value: tuple[str, ...]) -> tuple[str, str] | None:
        for index, text in enumerate(value):
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                address = None
            if address is None or address.version != version:
                example = "192.0.2.1" if version == 4 else "2001:db8::1"
                return f"[{index}] {text!r} is not an IPv{version} address", f'e.g. "{example}"'
        return None

    return check


def _endpoints(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept a list of server endpoint strings Twisted can parse (nothing is opened)."""
    for index, description in enumerate(value):
        problem = endpoint_problem(description)
        if problem:
            return (
                f"[{index}] {description!r} is not a valid listener: {problem}",
                'use a Twisted endpoint string such as "tcp:2525:interface=127.0.0.1"',
            )
    return None


def endpoint_problem(description: str) -> str | None:
    """Why ``description`` is not a usable server endpoint string, or ``None`` if it is.

    Parses with :func:`twisted.internet.endpoints.serverFromString` against a MemoryReactor,
    so nothing listens and no file is touched beyond what the endpoint's parser reads.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        endpoint = serverFromString(MemoryReactor(), description)
    except Exception as error:  # parsers raise ValueError, TypeError, KeyError, SSL errors
        return str(error) or type(error).__name__
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        return f"port {port} is out of range 0..65535"
    return None


def _at_least(low: float) -> Check:
    """A check accepting numbers of at least ``low``."""

    def check(value: float) -> tuple[str, str] | None:
        if value < low:
            return f"must be at least {low}, got {value!r}", f"use a number >= {low}"
        return None

    return check


def _authserv_id(value: str) -> tuple[str, str] | None:
    """Accept "" or a domain-like name (RFC 8601 §2.5: the authserv-id names this host)."""
    if value and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?", value):
        return f"not a host name: {value!r}", 'e.g. "mx.example.org", or "" for [server] hostname'
    return None


def _report_local_part(value: str) -> tuple[str, str] | None:
    """Accept "" or a plain local part (no @, no spaces)."""
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", value):
        return f"not a local part: {value!r}", 'e.g. "dmarc-reports" (no @domain), or ""'
    return None


def _zones(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept DNS list zones in postscreen's syntax (parsed by mailserver.filter.dnsbl)."""
    from mailserver.filter.dnsbl import parse_zone

    for index, text in enumerate(value):
        try:
            parse_zone(text)
        except ValueError as error:
            return f"[{index}] {error}", 'e.g. "zen.spamhaus.org=127.0.0.[2..11]*3 reject"'
    return None


def _clamd(value: str) -> tuple[str, str] | None:
    """Accept "" (off) or a clamd address."""
    from mailserver.filter.clamd import parse_address

    if value:
        try:
            parse_address(value)
        except ValueError as error:
            return str(error), 'use "unix:/run/clamav/clamd.ctl" or "tcp:127.0.0.1:3310"'
    return None


def _networks(value: tuple[str, ...]) -> tuple[str, str] | None:
    """Accept a list of IP networks (or single addresses)."""
    for index, text in enumerate(value):
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"[{index}] {text!r} is not an IP network", 'e.g. "192.0.2.0/24" or "::1/128"'
    return None
