"""Shared helpers for the IMAP wire-level tests."""

from __future__ import annotations

from mailserver.imap.grammar import BadCommand, Command, parse_command


def parse(line: str | bytes, *, utf8: bool = False) -> Command | BadCommand:
    """Parse one command line (without CRLF)."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    return parse_command(data, utf8=utf8)


def args(line: str | bytes, *, utf8: bool = False) -> object:
    """The parsed arguments of a command that must be well-formed."""
    result = parse(line, utf8=utf8)
    assert isinstance(result, Command), result
    return result.args


def bad(line: str | bytes, *, utf8: bool = False) -> BadCommand:
    """The BadCommand for a line that must be refused."""
    result = parse(line, utf8=utf8)
    assert isinstance(result, BadCommand), result
    return result
